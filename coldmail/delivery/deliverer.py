"""Claim → cap → send → record: what the send actor does with the email ids of one message.

A message carries the ids of emails due together (see coldmail.queue.handover).
They are claimed in one statement, sent one after the other on the thread's
connection, each at its own time and under its sender's cap, and recorded by
the process's Recorder, many sends per statement (coldmail.delivery.recorder):
a few round trips per message rather than ten per email. Every step re-checks
the rows in PostgreSQL, so a duplicate queue message, a cancelled email or one
moved to a later time is a no-op here, and every update names the claim
(coldmail.db.emails.sending), so a claim taken back changes nothing.

A message may carry emails of several senders and relays: when a relay fails,
only the emails of that relay are given back, and when a sender has
SENDER_CONCURRENCY sends in flight (coldmail.delivery.inflight), only that
sender's; the others go on, each at its time. What a failure leads to is
decided by coldmail.delivery.retry; which transport an email takes, by
coldmail.delivery.routing; its DKIM signature, by coldmail.delivery.signing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

import redis

from ..caps import Caps, Decision
from ..caps import pacing as rules
from ..caps.pacing import Pacing
from ..caps.scripts import DAILY_LIMIT, HOURLY_LIMIT
from ..db import database
from ..db.emails import sending, threads
from ..errors import SecretUnreadable
from ..logs import email_fields
from ..mail.message import Outgoing, build_message, message_id_for, on_the_wire
from ..settings import Settings
from ..unsubscribe.links import Links
from .bounces import record_hard_bounce
from .inflight import InFlight
from .outcomes import Outcome, Result
from .recorder import Recorder, Sent
from .retry import ATTEMPT_FAILURES, GiveBack, Hold, Release, RetryPolicy, Verdict
from .routing import Router
from .signing import Signer

log = logging.getLogger(__name__)

Row = dict[str, Any]
#: the least a thread waits for its sends to be recorded, however near its lease's end it is
RECORD_WAIT_MIN_S = 1.0
Outcomes = list[tuple[int, Outcome]]


class Deliverer:
    """Sends the emails of one message at a time per calling thread; shared by all the worker's threads.
    Built by coldmail.delivery.wiring.build_deliverer."""

    def __init__(self, settings: Settings, *, caps: Caps, router: Router, signer: Signer, recorder: Recorder,
                 retry: RetryPolicy, links: Links, worker: str | None = None,
                 inflight: InFlight | None = None) -> None:
        self.settings = settings
        #: each message's unsubscribe link
        self.links = links
        self.caps = caps
        self.router = router
        self.signer = signer
        self.recorder = recorder
        self.retry = retry
        #: this worker process's id, on each of its claims (coldmail.delivery.liveness)
        self.worker = worker
        #: sends of one sender in flight at once; None: no bound
        self.inflight = inflight
        #: set when the worker begins to stop: a send that has not started gives its claim back
        self.stopping = threading.Event()
        #: a message this early is claimed and waited out (twice the hand-over's lead, for slow polls, and
        #: the spread of due times one message may carry)
        self.early_s = (2 * settings.handover_lead_ms + settings.send_batch_spread_ms) / 1000

    def deliver_many(self, email_ids: list[int], outcomes: Outcomes) -> None:
        """Send what is ours among `email_ids`, appending (id, outcome) to `outcomes` as each is known
        (so that what was done before an exception is still counted)."""
        with database.connection_context():
            self.links.ready()  # the first time, before anything is claimed: it may read the database
            rows = sending.claim(email_ids, lease_s=self.settings.lease_s, early_s=self.early_s, worker=self.worker)
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

    def close(self) -> None:
        """The worker stopped: record what is waiting."""
        self.recorder.close()

    def close_thread(self) -> None:
        """Close the calling thread's connections."""
        self.router.close_thread()

    # -- one message -----------------------------------------------------------------------------

    def _send_claimed(self, rows: list[Row], outcomes: Outcomes) -> None:
        """Take the rows' cap slots (one script call), then send them in order, each at its time, handing
        each accepted send to the recorder; give back what is left when the worker stops, the relay fails
        or something raises. Returns once every send of the message is recorded; raises if one was not, by the
        end of its lease at most (see _wait_recorded)."""
        claimed_at = time.monotonic()
        rows = self._inside_windows(rows, outcomes)
        rest = deque(zip(rows, self._take_sender_slots(rows)))
        sent: list[Sent] = []
        why = self.retry.give_back(Release.ERROR)  # if something raises
        try:
            why = self._send_in_order(rest, claimed_at, sent, outcomes)
        finally:
            if rest:
                self._return_claims(rest, why)
                outcomes.extend((row["id"], Outcome(Result.RELEASED)) for row, _ in rest)
            for s in sent:
                self._wait_recorded(s, until=claimed_at + self.settings.lease_s)
                outcomes.append((s.row["id"], Outcome(Result.SENT, send_s=s.send_s, late_s=s.late_s)))

    @staticmethod
    def _wait_recorded(sent: Sent, *, until: float) -> None:
        """Wait for the recorder to write `sent`, until the claim's lease ends at most: past that the sweep
        takes the email back whatever the recorder does, and the thread has other messages to send. Raises
        what recording raised, or TimeoutError; either way the email stays SENDING (unless the recorder
        catches up) until the sweep takes it back after its lease, and then goes again, with the same
        Message-ID."""
        try:
            sent.recorded.result(timeout=max(RECORD_WAIT_MIN_S, until - time.monotonic()))
        except TimeoutError:
            raise TimeoutError(f"email {sent.row['id']}: sent, but not recorded before its lease ended: unless the "
                               "recorder catches up, it goes again once the sweep takes it back") from None

    def _inside_windows(self, rows: list[Row], outcomes: Outcomes) -> list[Row]:
        """The rows whose time is inside their sending window; the others are moved to its opening, unsent
        (before any slot is taken)."""
        kept = []
        now = datetime.now(timezone.utc)
        for row in rows:
            pacing = row["pacing"] = Pacing.from_row(row)
            if pacing.window is not None:
                at = now + timedelta(seconds=row["wait_s"])
                opens = rules.earliest(at, pacing, row.get("recipient_time_zone"))
                if opens > at:
                    outcomes.append((row["id"], self._move(row, opens, "window")))
                    continue
            kept.append(row)
        return kept

    def _take_sender_slots(self, rows: list[Row]) -> list[Decision]:
        if not rows:
            return []
        try:
            return self.caps.acquire([
                (row["account"], row["sender_id"], self._limit(row), row["id"])
                + ((row["pacing"], int(row["wait_s"] * 1000)) if row["pacing"].paced else ()) for row in rows])
        except Exception:
            # Redis failed (or a bug) before any SMTP: give the claims back now rather than hold them for
            # a lease
            self._return_claims([(row, None) for row in rows], self.retry.give_back(Release.ERROR))
            raise

    def _send_in_order(self, rest: deque[tuple[Row, Decision]], claimed_at: float, sent: list[Sent],
                       outcomes: Outcomes) -> GiveBack | None:
        """Send the emails of `rest`, taking each out as its turn comes; why the others must go back, if
        they must. Accepted sends go to `sent` (and the recorder), the other outcomes to `outcomes`. When a
        relay fails, or a sender has every send slot taken, the emails behind it that go through that relay,
        or are that sender's, go back at once; the others go on."""
        # past this, the claims are held too near their lease's end to start a send
        deadline = claimed_at + self.settings.lease_s / 2
        while rest:
            row, decision = rest[0]
            why = self._wait_for_turn(row, claimed_at, deadline)
            if why is not None:
                return why
            rest.popleft()
            result = self._send_one(row, decision, deadline)
            if isinstance(result, Sent):
                sent.append(result)
            elif isinstance(result, GiveBack):  # its sender's sends in flight are at their limit
                self._give_back_alike(row, decision, rest, result, outcomes,
                                      lambda other: other["sender_id"] == row["sender_id"])
            else:
                outcomes.append((row["id"], result))
                if result.result is Result.RETRY:
                    why = self.retry.give_back(Release.RELAY_FAILED, relay_retry_in_s=result.due_in_s)
                    self._give_back_alike(None, None, rest, why, outcomes,
                                          lambda other: _relay_of(other) == _relay_of(row))
        return None

    def _give_back_alike(self, row: Row | None, decision: Decision | None, rest: deque[tuple[Row, Decision]],
                         why: GiveBack, outcomes: Outcomes, alike: Callable[[Row], bool]) -> None:
        """Give back `row` (when given) and the emails of `rest` that are `alike` it, in one statement; the
        others stay in `rest`, in their order."""
        held = [] if row is None else [(row, decision)]
        keep = []
        for other in rest:
            (held if alike(other[0]) else keep).append(other)
        if not held:
            return
        rest.clear()
        rest.extend(keep)
        self._return_claims(held, why)
        outcomes.extend((r["id"], Outcome(Result.RELEASED)) for r, _ in held)

    def _wait_for_turn(self, row: Row, claimed_at: float, deadline: float) -> GiveBack | None:
        """Wait until the email is due; or why it cannot be sent now (nor the rest of its message).
        Messages are released a little early on purpose (the hand-over's lead): the last milliseconds
        are waited out here, where the wait is exact, rather than in two queue polls."""
        if time.monotonic() > deadline:
            return self.retry.give_back(Release.HALF_LEASE)
        if self.stopping.wait(max(0.0, claimed_at + row["wait_s"] - time.monotonic())):
            return self.retry.give_back(Release.STOPPING)
        return None

    # -- one email -------------------------------------------------------------------------------

    def _send_one(self, row: Row, decision: Decision, deadline: float) -> Sent | Outcome | GiveBack:
        """The email's send, handed to the recorder (before its sender slot is freed: the recording is what
        the send waits for), or what came of it instead; a GiveBack (the email not yet given back) when its
        sender's sends in flight are at their limit."""
        bounded = self.inflight is not None and decision.allowed
        if bounded and not self.inflight.wait_for_slot(row["account"], row["sender_id"], row["id"],
                                                       stopping=self.stopping):
            return self.retry.give_back(Release.SENDER_BUSY)
        try:
            held = self._through_caps(row, decision, deadline)
            if held is not None:
                return held
            result = self._attempt(row)
            if isinstance(result, Sent):
                self.recorder.add(result)
            return result
        finally:
            if bounded:
                self.inflight.give_back(row["account"], row["sender_id"], row["id"])

    def _through_caps(self, row: Row, decision: Decision, deadline: float) -> Outcome | None:
        """None once the email may go under its sender's cap and the global one; else what came of it."""
        if not decision.allowed:
            return self._defer_for_cap(row, decision)
        pacing: Pacing = row["pacing"]
        now = datetime.now(timezone.utc)
        if pacing.window is not None and not rules.inside(now, pacing.window,
                                                          rules.reading_zone(pacing, row.get("recipient_time_zone"))):
            # its turn came too late (the thread was busy): the window closed meanwhile
            self._give_back_slots([row], sender_only=True)
            return self._move(row, rules.earliest(now, pacing, row.get("recipient_time_zone")), "window")
        try:
            cleared = self._wait_for_global_cap(row["id"], deadline)
        except Exception:
            self._return_claims([(row, decision)], self.retry.give_back(Release.ERROR))
            raise
        if cleared:
            return None
        reason = Release.STOPPING if self.stopping.is_set() else Release.NO_GLOBAL_SLOT
        self._return_claims([(row, decision)], self.retry.give_back(reason))
        return Outcome(Result.RELEASED)

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

    def _defer_for_cap(self, row: Row, decision: Decision) -> Outcome:
        if decision.reason != HOURLY_LIMIT:
            pacing: Pacing = row["pacing"]
            now = datetime.now(timezone.utc)
            zone = row.get("recipient_time_zone")
            if decision.reason == DAILY_LIMIT:
                at = rules.after_day_limit(now, pacing, zone)
            else:
                at = rules.earliest(now + timedelta(milliseconds=decision.wait_ms), pacing, zone)
            return self._move(row, at, decision.reason)
        with database.connection_context():
            sending.defer_for_cap(row["id"], claim=row["claims"], delay_s=decision.wait_ms / 1000)
        log.info("email %r: sender %r at its cap; moved by %.3fs", row["id"], row["sender_id"],
                 decision.wait_ms / 1000, extra=email_fields(row))
        return Outcome(Result.RATE_LIMITED)

    def _move(self, row: Row, at: datetime, reason: str) -> Outcome:
        """Put the claimed email back PENDING for `at`, unsent and no attempt spent, because of its sender's
        pacing (`reason`: window, daily_limit, gap)."""
        with database.connection_context():
            sending.move(row["id"], claim=row["claims"], at=at, reason=reason)
        log.info("email %r: moved to %s (%s; sender %r)", row["id"], at.isoformat(), reason, row["sender_id"],
                 extra=email_fields(row))
        return Outcome(Result.MOVED, reason=reason)

    def _attempt(self, row: Row) -> Sent | Outcome:
        """Build, route and send the message: the step that spends an attempt. A failure the retry rules
        know is decided by them; anything else raises, and the email stays SENDING for its lease."""
        try:
            message = self._build(row)
        except Exception as e:
            log.exception("email %r: its message could not be built", row["id"], extra=email_fields(row))
            return self._attempt_failed(row, self.retry.unbuildable(e))
        try:
            message = self.signer.sign(message, row)
            transport, relay = self.router.route(row)
            started = time.monotonic()
            reply = transport.send(message, relay=relay, email_id=row["id"])
        except SecretUnreadable as e:
            return self._hold(row, Hold.SECRET_UNREADABLE, str(e))
        except ATTEMPT_FAILURES as e:
            return self._attempt_failed(row, self.retry.after_failure(e, attempt=row["attempts"] + 1))
        return Sent(row, message, reply, slots=self._slots(row), send_s=time.monotonic() - started,
                    late_s=time.time() - row["scheduled_at"].timestamp())

    def _build(self, row: Row) -> Outgoing:
        return build_message(
            email_id=row["id"], created_at=row["created_at"],
            from_address=row.get("from_address") or self.settings.default_from,
            recipient=row["recipient"], subject=row["subject"], body=row["body"],
            unsubscribe_url=self.links.url(row["account"], row["id"]) if row["unsubscribe"] else None,
            thread=self._thread(row) if row.get("in_reply_to") else None)

    def _thread(self, row: Row) -> list[str]:
        """The Message-IDs of the emails a follow-up continues, oldest first: as each was sent, or, for one not
        sent yet, the stable one it will be sent with (one query, for follow-ups only)."""
        with database.connection_context():
            chain = threads.ancestors(row["account"], row["id"])
        return [a["message_id"] or message_id_for(a["id"], a["created_at"],
                                                   on_the_wire(a["from_address"] or self.settings.default_from))
                for a in reversed(chain)]

    def _attempt_failed(self, row: Row, verdict: Verdict) -> Outcome:
        """The attempt was made and failed: its cap slots are free again; the email fails or waits."""
        self._give_back_slots([row])
        if verdict.hard_bounce:
            record_hard_bounce(row, verdict)
            return Outcome(Result.FAILED)
        if verdict.retry_in_s is None:
            with database.connection_context():
                sending.mark_failed(row["id"], claim=row["claims"], error=verdict.error, code=verdict.code)
            log.error("email %r: failed for good (sender %r): %s", row["id"], row["sender_id"], verdict.error,
                      extra=email_fields(row))
            return Outcome(Result.FAILED)
        with database.connection_context():
            sending.retry_later(row["id"], claim=row["claims"], delay_s=verdict.retry_in_s, error=verdict.error,
                                code=verdict.code)
        log.warning("email %r: attempt %d failed (%s); retry in %.1fs (sender %r)", row["id"], row["attempts"] + 1,
                    verdict.error, verdict.retry_in_s, row["sender_id"], extra=email_fields(row))
        return Outcome(Result.RETRY, due_in_s=verdict.retry_in_s)

    def _hold(self, row: Row, reason: Hold, error: str) -> Outcome:
        """Something the send needs is missing, through no fault of the email (no configured key opens its
        sender's stored secret): it waits PENDING with no attempt spent, never FAILED, and goes once that is
        fixed (coldmail.delivery.retry). Its cap slots are free again. `error` names no secret."""
        self._give_back_slots([row])
        first_s, longest_s = self.retry.hold_delays()
        with database.connection_context():
            held = sending.hold(row["id"], claim=row["claims"], reason=reason.value, error=error, base_s=first_s,
                                max_s=longest_s)
        if held:
            log.error("email %r: held, not sent (sender %r): %s", row["id"], row["sender_id"], error,
                      extra=email_fields(row))
        return Outcome(Result.HELD, reason=reason.value)

    # -- giving back -----------------------------------------------------------------------------

    def _return_claims(self, held: Iterable[tuple[Row, Decision | None]], why: GiveBack) -> None:
        """Give claims back unsent, with the sender slots they took (the global cap's is taken only when the
        send begins): the one way a claim ends without an attempt."""
        held = list(held)
        self._give_back_slots([row for row, decision in held if decision is not None and decision.allowed],
                              sender_only=True)
        with database.connection_context():
            sending.release([(row["id"], row["claims"]) for row, _ in held], reason=why.reason, delay_s=why.delay_s)
        for row, _ in held:
            log.info("email %r: claim given back unsent (%s)", row["id"], why.reason)

    def _give_back_slots(self, rows: list[Row], *, sender_only: bool = False) -> None:
        """Free the cap slots of sends that did not happen (the global cap's too, once it was taken). A Redis
        error is logged, not raised: the outcome is known already."""
        slots = [slot for row in rows for slot in self._slots(row)[:1 if sender_only else None]]
        if not slots:
            return
        try:
            self.caps.give_back(slots)
        except redis.RedisError as e:
            log.warning("send cap not updated (Redis: %s)", e)

    def _slots(self, row: Row) -> list[tuple[str, str]]:
        return self.caps.slots(row["account"], row["sender_id"], row["id"])

    def _limit(self, row: Row) -> int:
        return row.get("hourly_limit") or self.settings.rate_limit_per_hour


def _relay_of(row: Row) -> str | None:
    """Which relay an email goes through: its sender's URL, or None for SMTP_URL's (or the outbox)."""
    return row.get("smtp_url") or None
