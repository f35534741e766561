"""Which transport and relay an email goes through: its sender's own relay, else SMTP_URL's, else the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..crypto import PasswordBox
from ..mail.transports import Relay, Transport


@dataclass(frozen=True)
class Router:
    smtp: Transport
    outbox: Transport
    #: SMTP_URL's relay (trusted), for senders without one of their own; None: those go to the outbox
    default_relay: Relay | None
    #: opens a sender's stored SMTP password
    passwords: PasswordBox

    def route(self, row: Mapping[str, Any]) -> tuple[Transport, Relay | None]:
        """The transport and relay for an email row (with its sender's smtp_url and sealed password).
        Raises ConfigError when the sender's relay URL is unusable, SecretUnreadable when no configured key
        opens its stored password (the email is held, not failed)."""
        if row.get("smtp_url"):
            sealed = row.get("smtp_password_enc")
            password = self.passwords.open(sealed) if sealed else None
            return self.smtp, Relay.from_url(row["smtp_url"], password=password)  # not trusted: guarded
        if self.default_relay is not None:
            return self.smtp, self.default_relay
        return self.outbox, None

    def close_thread(self) -> None:
        """Close the calling thread's connections."""
        self.smtp.close()
        self.outbox.close()
