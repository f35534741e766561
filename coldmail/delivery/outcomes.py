"""What each email of a message came to: the send actor re-queues NOT_YET, the metrics middleware counts them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Result(str, Enum):
    SENT = "sent"
    FAILED = "failed"
    RETRY = "retry"
    RATE_LIMITED = "rate_limited"
    #: claimed, then moved later without an attempt by its sender's pacing (its `reason`: window, daily_limit,
    #: gap); RATE_LIMITED is the hourly cap's
    MOVED = "moved"
    SKIPPED = "skipped"
    NOT_YET = "not_yet"
    #: claimed, then given back unsent (the worker is stopping, or Redis failed before the send)
    RELEASED = "released"
    #: claimed, then held back PENDING without an attempt: something it needs is missing (its `reason`)
    HELD = "held"


@dataclass(frozen=True)
class Outcome:
    result: Result
    #: for NOT_YET: seconds until the email is due (the message came early; hold it again);
    #: for RETRY: seconds until the next attempt
    due_in_s: float = 0.0
    #: for SENT, read by the metrics middleware: the SMTP transaction, and sent minus scheduledAt
    send_s: float | None = None
    late_s: float | None = None
    #: for HELD: why (coldmail.delivery.retry.Hold), the coldmail_emails_held metric's label; for MOVED: why
    reason: str | None = None
