"""Claim → cap → send → record: what the send actor does with the email ids of one message.

A message carries the ids of emails due together (see coldmail.queue.handover).
They are claimed in one statement, sent one after the other on the thread's SMTP
connection, each at its own time and under its sender's cap, and recorded by the
process's Recorder, many sends per statement (coldmail.recorder): a few round
trips per message rather than ten per email. Every step re-checks the rows in PostgreSQL, so a duplicate queue
message, a cancelled email or one moved to a later time is a no-op here.
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
from .queue.rate_limits import Decision
from .crypto import PasswordBox
from .db import database
from .db.emails import sending
from .errors import ConfigError, PermanentSendError, TransientSendError
from .logs import email_fields
from .mail.message import build_message
from .mail.transports import OutboxTransport, Relay, SmtpTransport
from .recorder import Recorder, Sent
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
    #: for NOT_YET: seconds until the email is due (the message came early; hold it again);
    #: for RETRY: seconds until the next attempt
    due_in_s: float = 0.0
    #: for SENT, read by the metrics middleware: the SMTP transaction, and sent minus scheduledAt
    send_s: float | None = None
    late_s: float | None = None


def backoff_s(attempt: int, *, base_s: float, max_s: float) -> float:
    """Exponential backoff with ±20 % jitter, so retries of a flapping relay do not arrive in step."""
    delay = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    return delay * random.uniform(0.8, 1.2)


class Deliverer:
    """Sends the emails of one message at a time per calling thread; shared by all the worker's threads."""

    def __init__(self, settings: Settings, *, redis_client) -> None:
        self.settings = settings
        self.caps = Caps(settings, redis_client)
        self.passwords = PasswordBox(settings.secret_key)
        self.smtp = SmtpTransport(timeout_s=settings.smtp_timeout_s, idle_s=settings.smtp_idle_s)
        self.outbox = OutboxTransport(settings.outbox_dir)
        self.default_relay = Relay.from_url(settings.smtp_url) if settings.smtp_url else None
        self.recorder = Recorder(self.caps.mark_done)
        #: set when the worker begins to stop: a send that has not started gives its claim back
        self.stopping = threading.Event()
        #: a message this early is claimed and waited out (twice the hand-over's lead, for slow polls, and
        #: the spread of due times one message may carry)
        self.early_s = (2 * settings.handover_lead_ms + settings.send_batch_spread_ms) / 1000

    def deliver_many(self, email_ids: list[int], outcomes: list[tuple[int, Outcome]]) -> None:
        """Send what is ours among `email_ids`, appending (id, outcome) to `outcomes` as each is known
        (so that what was done before an exception is still counted)."""
        with database.connection_context():
            rows = sending.claim(email_ids, lease_s=self.settings.lease_s, early_s=self.early_s)
            claimed = {row["id"] for row in rows}
            unclaimed = [i for i in email_ids if i not in claimed]
            due_in = sending.seconds_until_due(unclaimed) if unclaimed else {}
        for email_id in unclaimed:
            if due_in.get(email_id, 0) > 0:
                outcomes.append((email_id, Outcome(Result.NOT_YET, due_in[email_id])))
            else:
                log.debug("email %r: not ours to send (already sent, cancelled or claimed)", email_id)
                outcomes.append((email_id, Outcome(Result.SKIPPED)))
        if rows:
            self._send_claimed(rows, outcomes)

    def _send_claimed(self, rows: list[dict[str, Any]], outcomes: list[tuple[int, Outcome]]) -> None:
        """Take the rows' cap slots (one script call), then send them in order, each at its time, handing
        each accepted send to the recorder; give back what is left when the worker stops, the relay fails
        or something raises. Returns once every send of the message is recorded."""
        claimed_at = time.monotonic()
        #: past this, the claims are held too near their lease's end to start a send
        deadline = claimed_at + self.settings.lease_s / 2
        try:
            decisions = self.caps.acquire([(row["sender_id"], self._limit(row), row["id"]) for row in rows])
        except Exception:
            # Redis failed (or a bug) before any SMTP: give the claims back now rather than hold them for
            # a lease, and without spending an attempt; the pause keeps a lasting fault from spinning.
            self._release([row["id"] for row in rows], reason="error before sending",
                          delay_s=self.settings.retry_backoff_s)
            raise
        sent: list[Sent] = []
        rest = list(zip(rows, decisions))
        reason, delay_s = "error before sending", self.settings.retry_backoff_s
        try:
            while rest:
                row, decision = rest[0]
                if time.monotonic() > deadline:
                    reason, delay_s = "the message's earlier sends took half a lease", 0.0
                    break
                # Released a little early on purpose (HANDOVER lead): wait out the last milliseconds here,
                # where the wait is exact, rather than in two queue polls.
                if self.stopping.wait(max(0.0, claimed_at + row["wait_s"] - time.monotonic())):
                    reason, delay_s = "worker stopping", 0.0
                    break
                rest.pop(0)
                result = self._send_one(row, decision, deadline)
                if isinstance(result, Sent):
                    sent.append(result)
                    self.recorder.add(result)
                    continue
                outcomes.append((row["id"], result))
                if result.result is Result.RETRY:
                    # the relay failed: the rest would most likely wait out the same timeout, one by one
                    reason, delay_s = "the relay failed for the email before", result.due_in_s
                    break
        finally:
            if rest:
                self._give_back([row for row, decision in rest if decision.allowed], sender_only=True)
                self._release([row["id"] for row, _ in rest], reason=reason, delay_s=delay_s)
                outcomes.extend((row["id"], Outcome(Result.RELEASED)) for row, _ in rest)
            for s in sent:
                s.recorded.result()
                outcomes.append((s.row["id"], Outcome(Result.SENT, send_s=s.send_s, late_s=s.late_s)))

    def _send_one(self, row: dict[str, Any], decision: Decision, deadline: float) -> Sent | Outcome:
        email_id = row["id"]
        if not decision.allowed:
            with database.connection_context():
                sending.defer_for_cap(email_id, delay_s=decision.wait_ms / 1000)
            log.info("email %r: sender %r at its cap; moved by %.3fs", email_id, row["sender_id"],
                     decision.wait_ms / 1000, extra=email_fields(row))
            return Outcome(Result.RATE_LIMITED)
        try:
            if not self._wait_for_global_cap(email_id, deadline):
                reason = "worker stopping" if self.stopping.is_set() else "no slot under the global cap in time"
                self._give_back([row], sender_only=True)
                self._release([email_id], reason=reason)
                return Outcome(Result.RELEASED)
        except Exception:
            self._give_back([row], sender_only=True)
            self._release([email_id], reason="error before sending", delay_s=self.settings.retry_backoff_s)
            raise

        attempt = row["attempts"] + 1
        try:
            message = build_message(
                email_id=email_id, created_at=row["created_at"], from_address=self._from(row),
                recipient=row["recipient"], subject=row["subject"], body=row["body"])
        except Exception as e:
            # the same row would fail the same way on every attempt: fail it now, not after a lease each time
            log.exception("email %r: its message could not be built", email_id, extra=email_fields(row))
            self._give_back([row])
            return self._fail(row, f"the message could not be built: {type(e).__name__}: {e}", None)
        try:
            transport, relay = self._route(row)
            started = time.monotonic()
            reply = transport.send(message, relay=relay, email_id=email_id)
        except PermanentSendError as e:
            self._give_back([row])
            return self._fail(row, str(e), e.code)
        except ConfigError as e:
            self._give_back([row])
            return self._fail(row, str(e), None)
        except TransientSendError as e:
            self._give_back([row])
            if attempt >= self.settings.max_attempts:
                return self._fail(row, f"{e} (after {attempt} attempts)", e.code)
            delay = backoff_s(attempt, base_s=self.settings.retry_backoff_s, max_s=self.settings.retry_backoff_max_s)
            with database.connection_context():
                sending.retry_later(email_id, delay_s=delay, error=str(e), code=e.code)
            log.warning("email %r: attempt %d failed (%s); retry in %.1fs (sender %r)", email_id, attempt, e,
                        delay, row["sender_id"], extra=email_fields(row))
            return Outcome(Result.RETRY, due_in_s=delay)
        return Sent(row, message, reply, slots=self._slots(row), send_s=time.monotonic() - started,
                    late_s=time.time() - row["scheduled_at"].timestamp())

    def _slots(self, row: dict[str, Any]) -> list[tuple[str, str]]:
        return self.caps.slots(row["sender_id"], row["id"])

    def _give_back(self, rows: list[dict[str, Any]], *, sender_only: bool = False) -> None:
        """Free the cap slots of sends that did not happen (the global cap's too, once it was taken)."""
        slots = [slot for row in rows for slot in self._slots(row)[:1 if sender_only else None]]
        self._quietly(lambda: self.caps.give_back(slots))

    def _fail(self, row: dict[str, Any], error: str, code: int | None) -> Outcome:
        with database.connection_context():
            sending.mark_failed(row["id"], error=error, code=code)
        log.error("email %r: failed for good (sender %r): %s", row["id"], row["sender_id"], error,
                  extra=email_fields(row))
        return Outcome(Result.FAILED)

    def _release(self, email_ids: list[int], *, reason: str, delay_s: float = 0.0) -> None:
        with database.connection_context():
            sending.release(email_ids, reason=reason, delay_s=delay_s)
        for email_id in email_ids:
            log.info("email %r: claim given back unsent (%s)", email_id, reason)

    @staticmethod
    def _quietly(touch) -> None:
        """A cap bookkeeping call after the outcome is known: a Redis error is logged, not raised."""
        try:
            touch()
        except redis.RedisError as e:
            log.warning("send cap not updated (Redis: %s)", e)

    def _wait_for_global_cap(self, email_id: int, deadline: float) -> bool:
        """Wait for a slot under GLOBAL_RATE_LIMIT_PER_SECOND; False if the worker began to stop meanwhile,
        or if none came by `deadline` (half a lease after the claim: it would run out while it waits)."""
        overall = self.caps.overall(email_id)
        if overall is None:
            return True
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

    def close(self) -> None:
        """The worker stopped: record what is waiting."""
        self.recorder.close()

    def close_thread(self) -> None:
        """Close the calling thread's SMTP connections."""
        self.smtp.close()
