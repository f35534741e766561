"""The states of an email; every move between them is a compare-and-set in coldmail.db.emails."""

from enum import Enum


class EmailStatus(str, Enum):
    PENDING = "PENDING"
    SENDING = "SENDING"
    SENT = "SENT"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    #: never sent: the address is on the account's suppression list (coldmail.db.suppressions)
    SUPPRESSED = "SUPPRESSED"
    #: sent, then reported undeliverable by the recipient's server
    BOUNCED = "BOUNCED"

    def __str__(self) -> str:
        return self.value
