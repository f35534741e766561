"""Every rule of retrying a send: which failure is retried, when, and what it costs in attempts.

A transport says what kind of failure it met (TransientSendError: it may work
later; PermanentSendError: it never will); the rules here decide what becomes
of the email:

- Attempts are counted in the email's row, once per attempt that reached the
  transport. At `max_attempts` a transient failure is FAILED too.
- A transient failure goes again after `backoff_s`; a permanent one, a bad
  relay configuration or a message that cannot be built fail at once.
- A lease that runs out, or whose worker is known dead (the worker died
  mid-send), costs the attempt, under the same `max_attempts`
  (coldmail.scheduler's sweep): a row that kills its worker every time must end.
- Claims given back before any SMTP (`Release`) cost no attempt: among them
  the emails of a relay that just failed (the others of the message go on)
  and those of a sender with SENDER_CONCURRENCY sends in flight already.
- Being over a sender's cap is a reschedule (coldmail.caps), not a retry.
- An email whose sender's stored secret no configured key opens is held
  (`Hold`): PENDING, no attempt spent, never FAILED. It is tried again after
  the first backoff, doubled at each hold up to `backoff_max_s`, and at once
  when the API process starts and finds the secret readable (the operator put
  the key back and restarted).
- Dramatiq never retries (`DRAMATIQ_MAX_RETRIES`).
- A hard bounce (`is_hard_bounce`: RCPT TO refused because the mailbox or
  domain does not exist) fails the email and suppresses its address (reason
  `bounced`); it counts toward its sender's bounce rate, which may pause the
  sender (coldmail.delivery.bounces). A policy refusal (5.7.x), any other 5xx
  and every 4xx suppress nothing.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from enum import StrEnum

from ..errors import ConfigError, PermanentSendError, TransientSendError
from ..settings import Settings

#: Dramatiq's own retries, on the broker's Retries middleware and the send actor: none. A failed send is
#: rescheduled in PostgreSQL, where attempts are counted; Dramatiq must never run the same send again
#: behind the row's back (and its RateLimitExceeded and Retry would spend retries too).
DRAMATIQ_MAX_RETRIES = 0

#: how soon an email given back because its sender had every send slot taken goes again
SENDER_BUSY_S = 1.0

#: the failures of an attempt decided by `RetryPolicy.after_failure`; anything else raised is a bug, and
#: the email stays SENDING until its lease runs out
ATTEMPT_FAILURES = (TransientSendError, PermanentSendError, ConfigError)


def backoff_s(attempt: int, *, base_s: float, max_s: float) -> float:
    """Exponential backoff with ±20 % jitter, so retries of a flapping relay do not arrive in step."""
    delay = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    return delay * random.uniform(0.8, 1.2)


class Release(StrEnum):
    """Why claimed emails are given back unsent (the text goes in their `released` event)."""

    STOPPING = "worker stopping"
    HALF_LEASE = "the message's earlier sends took half a lease"
    NO_GLOBAL_SLOT = "no slot under the global cap in time"
    RELAY_FAILED = "the relay failed for the email before"
    SENDER_BUSY = "the sender's sends in flight are at SENDER_CONCURRENCY"
    #: Redis failed under the cap check, or a bug, before any SMTP
    ERROR = "error before sending"


class Hold(StrEnum):
    """Why a claimed email is held (its `held` event and the coldmail_emails_held metric say it)."""

    #: no key of COLDMAIL_SECRET_KEY opens its sender's stored secret
    SECRET_UNREADABLE = "secret_unreadable"


#: the shortest hold, so that a RETRY_BACKOFF_SECONDS of 0 does not make held emails spin
HOLD_MIN_S = 1.0


@dataclass(frozen=True)
class GiveBack:
    """Claims to give back unsent: no SMTP conversation began, so no attempt is spent."""

    reason: Release
    #: when they may go again
    delay_s: float = 0.0


#: an enhanced status code (RFC 3463) opening a reply's text: class, subject, detail
_ENHANCED = re.compile(r"^\d{3}[ -]([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")
#: without an enhanced code: "mailbox unavailable", "user not local", "mailbox name not allowed" (RFC 5321)
_NO_SUCH_MAILBOX = frozenset({550, 551, 553})


def is_hard_bounce(error: Exception) -> bool:
    """Whether `error` says the recipient does not exist, so that no send to it will ever succeed: a 5xx
    reply to RCPT TO with an enhanced status 5.1.x (bad mailbox, domain, syntax, moved), or without one 550,
    551 or 553. 5.7.x (policy: spam, blocked sender, relaying denied) is about the sender, not the address;
    4xx is temporary; a refusal of MAIL FROM or DATA is not about the recipient."""
    if not isinstance(error, PermanentSendError) or not error.at_rcpt or error.code is None:
        return False
    if not 500 <= error.code < 600:
        return False
    enhanced = _ENHANCED.match(str(error))
    if enhanced is not None:
        return enhanced.group(1) == "5" and enhanced.group(2) == "1"
    return error.code in _NO_SUCH_MAILBOX


@dataclass(frozen=True)
class Verdict:
    """What a failed attempt comes to: FAILED when `retry_in_s` is None, else another attempt then.
    `hard_bounce`: FAILED, and the address is suppressed."""

    error: str
    code: int | None = None
    retry_in_s: float | None = None
    hard_bounce: bool = False


@dataclass(frozen=True)
class RetryPolicy:
    #: attempts before an email is FAILED, whether they failed at the relay or lost their lease
    max_attempts: int
    #: the first retry's delay; it doubles each time up to `backoff_max_s`
    backoff_base_s: float
    backoff_max_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(max_attempts=settings.max_attempts, backoff_base_s=settings.retry_backoff_s,
                   backoff_max_s=settings.retry_backoff_max_s)

    def after_failure(self, error: Exception, *, attempt: int) -> Verdict:
        """`error` (one of ATTEMPT_FAILURES) ended attempt number `attempt` (1 for the first)."""
        if isinstance(error, TransientSendError):
            if attempt >= self.max_attempts:
                return Verdict(f"{error} (after {attempt} attempts)", error.code)
            return Verdict(str(error), error.code,
                           retry_in_s=backoff_s(attempt, base_s=self.backoff_base_s, max_s=self.backoff_max_s))
        if isinstance(error, PermanentSendError):
            return Verdict(str(error), error.code, hard_bounce=is_hard_bounce(error))
        return Verdict(str(error))  # ConfigError: the sender's relay URL

    @staticmethod
    def unbuildable(error: Exception) -> Verdict:
        """The row's message could not be built: it would fail the same way on every attempt, so it fails
        now rather than after a lease each time."""
        return Verdict(f"the message could not be built: {type(error).__name__}: {error}")

    def hold_delays(self) -> tuple[float, float]:
        """(first, longest) delay of a held email: it doubles at each hold of the same email, bounded so that
        one is tried again at most `backoff_max_s` after the key is back, even with no restart."""
        first = max(HOLD_MIN_S, self.backoff_base_s)
        return first, max(first, self.backoff_max_s)

    def give_back(self, reason: Release, *, relay_retry_in_s: float = 0.0) -> GiveBack:
        """When claims given back for `reason` may go again: at once when the worker stops or time ran short;
        when the failed email retries if the relay failed (the rest would most likely wait out the same
        timeout, one by one); shortly when the sender's sends in flight are at their limit; after the first
        backoff on an error, so a lasting fault does not spin."""
        if reason is Release.RELAY_FAILED:
            return GiveBack(reason, relay_retry_in_s)
        if reason is Release.SENDER_BUSY:
            return GiveBack(reason, SENDER_BUSY_S)
        if reason is Release.ERROR:
            return GiveBack(reason, self.backoff_base_s)
        return GiveBack(reason)
