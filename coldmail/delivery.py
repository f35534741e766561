"""Claim → cap → send → record: what the send actor does with one email id, as plain functions.

Every step re-checks the row in PostgreSQL, so a duplicate queue message, a
cancelled email or one moved to a later time is a no-op here.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import redis

from .caps import Caps
from .crypto import PasswordBox
from .db import database
from .db import emails as email_rows
from .errors import ConfigError, PermanentSendError, TransientSendError
from .logs import email_fields
from .mail.message import build_message
from .mail.transports import OutboxTransport, Relay, SmtpTransport
from .settings import Settings

log = logging.getLogger(__name__)


class Result(str, Enum):
    SENT = "sent"
    FAILED = "failed"
    RETRY = "retry"
    RATE_LIMITED = "rate_limited"
    SKIPPED = "skipped"
    NOT_YET = "not_yet"
    #: claimed, then given back unsent (the worker is stopping, or Redis failed before the send)
    RELEASED = "released"


@dataclass(frozen=True)
class Outcome:
    result: Result
    #: for NOT_YET: seconds until the email is due (the message came early; hold it again)
    due_in_s: float = 0.0
    #: for SENT, read by the metrics middleware: the SMTP transaction, and sent minus scheduledAt
    send_s: float | None = None
    late_s: float | None = None


def backoff_s(attempt: int, *, base_s: float, max_s: float) -> float:
    """Exponential backoff with ±20 % jitter, so retries of a flapping relay do not arrive in step."""
    delay = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    return delay * random.uniform(0.8, 1.2)


class Deliverer:
    """Sends one email at a time per calling thread; shared by all the worker's threads."""

    def __init__(self, settings: Settings, *, redis_client) -> None:
        self.settings = settings
        self.caps = Caps(settings, redis_client)
        self.passwords = PasswordBox(settings.secret_key)
        self.smtp = SmtpTransport(timeout_s=settings.smtp_timeout_s, idle_s=settings.smtp_idle_s)
        self.outbox = OutboxTransport(settings.outbox_dir)
        self.default_relay = Relay.from_url(settings.smtp_url) if settings.smtp_url else None
        #: set when the worker begins to stop: a send that has not started gives its claim back
        self.stopping = threading.Event()
        #: a message this early is claimed and waited out (twice the hand-over's lead, for slow polls)
        self.early_s = 2 * settings.handover_lead_ms / 1000

    def deliver(self, email_id: int) -> Outcome:
        with database.connection_context():
            row = email_rows.claim(email_id, lease_s=self.settings.lease_s, early_s=self.early_s)
            if row is None:
                due_in = email_rows.seconds_until_due(email_id)
        if row is None:
            if due_in is not None and due_in > 0:
                return Outcome(Result.NOT_YET, due_in)
            log.debug("email %r: not ours to send (already sent, cancelled or claimed)", email_id)
            return Outcome(Result.SKIPPED)
        # Released a little early on purpose (HANDOVER lead): wait out the last milliseconds here, where
        # the wait is exact, rather than in two queue polls.
        if row["wait_s"] > 0 and self.stopping.wait(row["wait_s"]):
            return self._release(email_id, reason="worker stopping")

        try:
            cap = self.caps.for_sender(row["sender_id"], self._limit(row), email_id)
            decision = cap.decide()
            if not decision.allowed:
                with database.connection_context():
                    email_rows.defer_for_cap(email_id, delay_s=decision.wait_ms / 1000)
                log.info("email %r: sender %r at its cap; moved by %.3fs", email_id, row["sender_id"],
                         decision.wait_ms / 1000, extra=email_fields(row))
                return Outcome(Result.RATE_LIMITED)
            if not self._wait_for_global_cap(email_id):
                self._quietly(cap.give_back)
                reason = "worker stopping" if self.stopping.is_set() else "no slot under the global cap in time"
                return self._release(email_id, reason=reason)
        except Exception:
            # Redis failed (or a bug) before any SMTP: give the claim back now rather than hold it for
            # a lease, and without spending an attempt; the pause keeps a lasting fault from spinning.
            self._release(email_id, reason="error before sending", delay_s=self.settings.retry_backoff_s)
            raise

        attempt = row["attempts"] + 1
        try:
            transport, relay = self._route(row)
            message = build_message(
                email_id=email_id, created_at=row["created_at"], from_address=self._from(row),
                recipient=row["recipient"], subject=row["subject"], body=row["body"])
            started = time.monotonic()
            reply = transport.send(message, relay=relay, email_id=email_id)
        except PermanentSendError as e:
            self._quietly(cap.give_back)
            return self._fail(row, str(e), e.code)
        except ConfigError as e:
            self._quietly(cap.give_back)
            return self._fail(row, str(e), None)
        except TransientSendError as e:
            self._quietly(cap.give_back)
            if attempt >= self.settings.max_attempts:
                return self._fail(row, f"{e} (after {attempt} attempts)", e.code)
            delay = backoff_s(attempt, base_s=self.settings.retry_backoff_s, max_s=self.settings.retry_backoff_max_s)
            with database.connection_context():
                email_rows.retry_later(email_id, delay_s=delay, error=str(e), code=e.code)
            log.warning("email %r: attempt %d failed (%s); retry in %.1fs (sender %r)", email_id, attempt, e,
                        delay, row["sender_id"], extra=email_fields(row))
            return Outcome(Result.RETRY)
        send_s = time.monotonic() - started
        late_s = time.time() - row["scheduled_at"].timestamp()
        # Recorded before Redis is touched again: a Redis error now must not leave a sent email SENDING,
        # to be sent a second time when its lease runs out.
        with database.connection_context():
            recorded = email_rows.mark_sent(email_id, message_id=message.message_id, reply=reply)
        self._quietly(cap.mark_done)
        overall = self.caps.overall(email_id)
        if overall is not None:
            self._quietly(overall.mark_done)
        if not recorded:
            log.warning("email %r: sent, but its claim had expired and was taken back", email_id,
                        extra=email_fields(row))
        log.info("email %r: sent to relay in %.0fms, %.3fs after its time (sender %r): %s", email_id,
                 send_s * 1000, late_s, row["sender_id"], reply, extra=email_fields(row))
        return Outcome(Result.SENT, send_s=send_s, late_s=late_s)

    def _fail(self, row: dict[str, Any], error: str, code: int | None) -> Outcome:
        with database.connection_context():
            email_rows.mark_failed(row["id"], error=error, code=code)
        log.error("email %r: failed for good (sender %r): %s", row["id"], row["sender_id"], error,
                  extra=email_fields(row))
        return Outcome(Result.FAILED)

    def _release(self, email_id: int, *, reason: str, delay_s: float = 0.0) -> Outcome:
        with database.connection_context():
            email_rows.release(email_id, reason=reason, delay_s=delay_s)
        log.info("email %r: claim given back unsent (%s)", email_id, reason)
        return Outcome(Result.RELEASED)

    @staticmethod
    def _quietly(touch) -> None:
        """A cap bookkeeping call after the outcome is known: a Redis error is logged, not raised."""
        try:
            touch()
        except redis.RedisError as e:
            log.warning("send cap not updated (Redis: %s)", e)

    def _wait_for_global_cap(self, email_id: int) -> bool:
        """Wait for a slot under GLOBAL_RATE_LIMIT_PER_SECOND; False if the worker began to stop meanwhile,
        or if none came in half a lease (the claim would run out while it waits)."""
        overall = self.caps.overall(email_id)
        if overall is None:
            return True
        deadline = time.monotonic() + self.settings.lease_s / 2
        while True:
            decision = overall.decide()
            if decision.allowed:
                return True
            pause_s = min(decision.wait_ms / 1000, 1.0, deadline - time.monotonic())
            if pause_s <= 0 or self.stopping.wait(pause_s):
                return False

    def _limit(self, row: dict[str, Any]) -> int:
        return row.get("hourly_limit") or self.settings.rate_limit_per_hour

    def _from(self, row: dict[str, Any]) -> str:
        return row.get("from_address") or self.settings.default_from

    def _route(self, row: dict[str, Any]) -> tuple[Any, Relay | None]:
        if row.get("smtp_url"):
            sealed = row.get("smtp_password_enc")
            password = self.passwords.open(sealed) if sealed else None
            return self.smtp, Relay.from_url(row["smtp_url"], password=password)
        if self.default_relay is not None:
            return self.smtp, self.default_relay
        return self.outbox, None

    def close_thread(self) -> None:
        """Close the calling thread's SMTP connections."""
        self.smtp.close()
