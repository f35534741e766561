"""The states of an email and the moves between them; no I/O."""

from enum import Enum


class EmailStatus(str, Enum):
    PENDING = "PENDING"
    SENDING = "SENDING"
    SENT = "SENT"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value


class EventKind(str, Enum):
    """What an audit row records."""

    CREATED = "created"
    QUEUED = "queued"
    CLAIMED = "claimed"
    RATE_LIMITED = "rate_limited"
    ATTEMPT_FAILED = "attempt_failed"
    SENT = "sent"
    FAILED = "failed"
    LEASE_EXPIRED = "lease_expired"
    CANCELLED = "cancelled"
    RESCHEDULED = "rescheduled"

    def __str__(self) -> str:
        return self.value


#: Allowed transitions. Every UPDATE in coldmail.db.emails is a compare-and-set on these.
TRANSITIONS: dict[EmailStatus, frozenset[EmailStatus]] = {
    EmailStatus.PENDING: frozenset({EmailStatus.SENDING, EmailStatus.CANCELLED}),
    EmailStatus.SENDING: frozenset({EmailStatus.SENT, EmailStatus.PENDING, EmailStatus.FAILED}),
    EmailStatus.SENT: frozenset(),
    EmailStatus.FAILED: frozenset(),
    EmailStatus.CANCELLED: frozenset(),
}


def can_move(old: EmailStatus, new: EmailStatus) -> bool:
    return new in TRANSITIONS[old]
