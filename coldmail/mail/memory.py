"""A transport that keeps messages in memory: the Transport twin for unit tests, which can be told to fail."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from email import message_from_bytes

from ..errors import SendError
from .message import Outgoing
from .transports import Relay


@dataclass(frozen=True)
class Delivered:
    email_id: int
    message: Outgoing
    relay: Relay | None


class MemoryTransport:
    """Keeps what it is given in `delivered`, in order; `fail_next` makes the next sends raise instead."""

    def __init__(self, *, reply: str = "250 OK") -> None:
        self.reply = reply
        self.delivered: list[Delivered] = []
        self.closed = 0
        self._failures: deque[SendError] = deque()
        self._lock = threading.Lock()

    def fail_next(self, *errors: SendError) -> None:
        """The next sends raise these (a TransientSendError or PermanentSendError each), one per send."""
        with self._lock:
            self._failures.extend(errors)

    def send(self, message: Outgoing, *, relay: Relay | None, email_id: int) -> str:
        with self._lock:
            if self._failures:
                raise self._failures.popleft()
            self.delivered.append(Delivered(email_id, message, relay))
        return self.reply

    def close(self) -> None:
        self.closed += 1

    def subjects(self) -> list[str]:
        """The Subject of each message delivered, in order."""
        return [str(message_from_bytes(d.message.data)["Subject"]) for d in self.delivered]
