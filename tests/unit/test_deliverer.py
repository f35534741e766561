"""The Deliverer's decisions for one message, with its parts in memory: the rows, the caps, the recorder and a
MemoryTransport. The same paths against real PostgreSQL, Redis and an SMTP sink are in tests/integration."""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
import redis

import coldmail.delivery.deliverer as deliverer_module
from coldmail.caps import Decision
from coldmail.crypto import PasswordBox
from coldmail.delivery.deliverer import Deliverer
from coldmail.delivery.outcomes import Result
from coldmail.delivery.retry import Release, RetryPolicy
from coldmail.delivery.routing import Router
from coldmail.delivery.signing import Signer
from coldmail.errors import PermanentSendError, TransientSendError
from coldmail.mail.memory import MemoryTransport
from coldmail.mail.transports import Relay
from coldmail.settings import Settings
from coldmail.unsubscribe.links import Links

LINKS_BASE = "https://mail.example.com"


class Rows:
    """The email rows the Deliverer reads and writes in PostgreSQL, kept in memory with what befell each."""

    def __init__(self) -> None:
        self.rows: dict[int, dict] = {}
        self.due_in: dict[int, float] = {}
        self.events: list[tuple] = []

    def add(self, email_id: int, *, sender: str = "s", attempts: int = 0, **extra) -> None:
        now = datetime.now(timezone.utc)
        self.rows[email_id] = {
            "id": email_id, "account": "default", "sender_id": sender, "attempts": attempts, "status": "PENDING", "created_at": now,
            "scheduled_at": now, "recipient": f"u{email_id}@example.com", "subject": f"email {email_id}",
            "body": "hello", "wait_s": 0.0, "claims": 0, "unsubscribe": True, **extra}

    def status(self, email_id: int) -> str:
        return self.rows[email_id]["status"]

    def claim(self, email_ids, *, lease_s, early_s=0.0, worker=None):
        claimed = [i for i in email_ids if i in self.rows and self.rows[i]["status"] == "PENDING"
                   and i not in self.due_in]
        for i in claimed:
            self.rows[i]["status"] = "SENDING"
            self.rows[i]["claims"] += 1
        return [dict(self.rows[i]) for i in claimed]

    def seconds_until_due(self, email_ids):
        return {i: self.due_in[i] for i in email_ids if i in self.due_in}

    def defer_for_cap(self, email_id, *, claim, delay_s):
        self._change(email_id, claim, "PENDING", "rate_limited", delay_s=delay_s)

    def release(self, held, *, reason, delay_s=0.0):
        for email_id, claim in held:
            self._change(email_id, claim, "PENDING", "released", reason=str(reason), delay_s=delay_s)

    def retry_later(self, email_id, *, claim, delay_s, error, code):
        self.rows[email_id]["attempts"] += 1
        self._change(email_id, claim, "PENDING", "attempt_failed", delay_s=delay_s, error=error, code=code)

    def mark_failed(self, email_id, *, claim, error, code):
        self.rows[email_id]["attempts"] += 1
        self._change(email_id, claim, "FAILED", "failed", error=error, code=code)

    def _change(self, email_id, claim, status, kind, **detail):
        assert self.rows[email_id]["status"] == "SENDING", f"email {email_id} was not claimed"
        assert self.rows[email_id]["claims"] == claim, f"email {email_id}: not its claim"
        self.rows[email_id]["status"] = status
        self.events.append((email_id, kind, detail))


class Caps:
    """Sender slots taken and given back, as coldmail.caps keeps them in Redis."""

    def __init__(self) -> None:
        self.full: dict[str, int] = {}  # sender -> wait_ms
        self.taken: set[tuple[str, str]] = set()
        self.global_cap = None
        self.broken = False

    def acquire(self, wanted):
        if self.broken:
            raise redis.ConnectionError("Redis is gone")
        decisions = []
        for account, sender, _, email_id in wanted:
            if sender in self.full:
                decisions.append(Decision(False, self.full[sender]))
            else:
                self.taken.add(self.slots(account, sender, email_id)[0])
                decisions.append(Decision(True))
        return decisions

    def overall(self, email_id):
        return self.global_cap

    def slots(self, account, sender_id, email_id):
        return [(f"cap:{sender_id}", str(email_id)), ("cap:global", str(email_id))]

    def give_back(self, slots):
        self.taken.difference_update(slots)

    def mark_done(self, slots):
        pass


class Recorder:
    """Records each send as it comes, or fails to as told."""

    def __init__(self) -> None:
        self.sent: list = []
        self.error: Exception | None = None

    def add(self, sent):
        self.sent.append(sent)
        if self.error is None:
            sent.recorded.set_result(True)
        else:
            sent.recorded.set_exception(self.error)
        return sent.recorded

    def close(self):
        pass


@pytest.fixture
def rows(monkeypatch) -> Rows:
    rows = Rows()
    monkeypatch.setattr(deliverer_module, "sending", rows)
    monkeypatch.setattr(deliverer_module, "database", SimpleNamespace(connection_context=contextlib.nullcontext))
    return rows


@pytest.fixture
def relay() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture
def parts(rows, relay):
    settings = Settings.from_env({"SMTP_URL": "smtp://relay.example.com", "LEASE_SECONDS": "1",
                                  "SMTP_TIMEOUT_SECONDS": "0.5", "RETRY_BACKOFF_SECONDS": "10", "MAX_ATTEMPTS": "3"},
                                 dotenv=None)
    caps, recorder = Caps(), Recorder()
    router = Router(smtp=relay, outbox=MemoryTransport(), default_relay=Relay.from_url(settings.smtp_url),
                    passwords=PasswordBox(()))
    deliverer = Deliverer(settings, caps=caps, router=router, signer=Signer(PasswordBox(())), recorder=recorder,
                          retry=RetryPolicy.from_settings(settings), links=Links(LINKS_BASE, lambda: [b"k" * 32]))
    return SimpleNamespace(deliverer=deliverer, caps=caps, recorder=recorder, outbox=router.outbox)


def deliver(parts, ids: list[int]) -> list[tuple[int, Result]]:
    outcomes: list = []
    parts.deliverer.deliver_many(ids, outcomes)
    parts.outcomes = dict(outcomes)
    return [(i, o.result) for i, o in outcomes]


def released(rows: Rows) -> list[tuple[int, str, float]]:
    return [(i, d["reason"], d["delay_s"]) for i, kind, d in rows.events if kind == "released"]


def test_a_message_sends_each_email_in_order_and_counts_them_once_recorded(parts, rows, relay):
    # Given three emails due now
    for i in (1, 2, 3):
        rows.add(i)
    # When one message carries them
    results = deliver(parts, [1, 2, 3])
    # Then each went through the relay in order, was recorded, and counts as SENT with its timings
    assert relay.subjects() == ["email 1", "email 2", "email 3"]
    assert [d.relay.host for d in relay.delivered] == ["relay.example.com"] * 3
    assert results == [(1, Result.SENT), (2, Result.SENT), (3, Result.SENT)]
    assert [s.row["id"] for s in parts.recorder.sent] == [1, 2, 3]
    assert parts.outcomes[1].send_s is not None and parts.outcomes[1].late_s is not None
    # And their sender slots stay taken
    assert parts.caps.taken == {("cap:s", "1"), ("cap:s", "2"), ("cap:s", "3")}


def test_ids_not_claimed_are_skipped_or_held_for_their_time(parts, rows, relay):
    # Given an email moved 30 s later, one already sent, and one due now
    rows.add(1)
    rows.due_in[1] = 30.0
    rows.add(2)
    rows.rows[2]["status"] = "SENT"
    rows.add(3)
    # When one message carries them
    results = deliver(parts, [1, 2, 3])
    # Then the moved one is to be held again, the sent one is left alone, and the due one goes
    assert results == [(1, Result.NOT_YET), (2, Result.SKIPPED), (3, Result.SENT)]
    assert parts.outcomes[1].due_in_s == 30.0
    assert relay.subjects() == ["email 3"]


def test_a_transient_failure_retries_that_email_and_gives_the_rest_back_for_the_same_pause(parts, rows, relay):
    # Given three emails, and a relay that answers the first with 451
    for i in (1, 2, 3):
        rows.add(i)
    relay.fail_next(TransientSendError("451 try later", code=451))
    # When one message carries them
    results = deliver(parts, [1, 2, 3])
    # Then the first waits for its retry, its attempt counted, after the first backoff with jitter
    assert results == [(1, Result.RETRY), (2, Result.RELEASED), (3, Result.RELEASED)]
    retry_in_s = parts.outcomes[1].due_in_s
    assert 8 <= retry_in_s <= 12
    assert (rows.status(1), rows.rows[1]["attempts"]) == ("PENDING", 1)
    assert [e for e in rows.events if e[1] == "attempt_failed"] == [
        (1, "attempt_failed", {"delay_s": retry_in_s, "error": "451 try later", "code": 451})]
    # And the others go back unsent, no attempt spent, to go after the same pause, with no cap slot kept
    assert released(rows) == [(2, Release.RELAY_FAILED, retry_in_s), (3, Release.RELAY_FAILED, retry_in_s)]
    assert rows.rows[2]["attempts"] == rows.rows[3]["attempts"] == 0
    assert parts.caps.taken == set() and relay.delivered == []


def test_the_last_attempt_fails_for_good_and_the_next_email_still_goes(parts, rows, relay):
    # Given an email on its third and last attempt, and one more behind it
    rows.add(1, attempts=2)
    rows.add(2)
    relay.fail_next(TransientSendError("421 closing", code=421))
    # When one message carries them
    results = deliver(parts, [1, 2])
    # Then the first is FAILED with how many attempts it took, and the second is sent
    assert results == [(1, Result.FAILED), (2, Result.SENT)]
    assert [e for e in rows.events if e[1] == "failed"] == [
        (1, "failed", {"error": "421 closing (after 3 attempts)", "code": 421})]
    assert relay.subjects() == ["email 2"]


def test_a_permanent_failure_fails_at_once_and_frees_its_slots(parts, rows, relay):
    # Given an email the relay refuses for good, and one more
    rows.add(1)
    rows.add(2)
    relay.fail_next(PermanentSendError("550 no such user", code=550))
    # When one message carries them
    results = deliver(parts, [1, 2])
    # Then the first is FAILED on its first attempt, its slot given back; the second goes
    assert results == [(1, Result.FAILED), (2, Result.SENT)]
    assert (rows.status(1), rows.rows[1]["attempts"]) == ("FAILED", 1)
    assert parts.caps.taken == {("cap:s", "2")}


def test_a_sender_whose_relay_url_is_unusable_fails_without_a_send(parts, rows, relay):
    # Given an email whose sender has a relay URL that is not SMTP
    rows.add(1, smtp_url="http://relay.example.com")
    # When it is delivered
    results = deliver(parts, [1])
    # Then it fails for good with the reason, and nothing is sent
    assert results == [(1, Result.FAILED)]
    [(_, _, detail)] = [e for e in rows.events if e[1] == "failed"]
    assert "not an SMTP URL" in detail["error"] and relay.delivered == []


def test_a_sender_at_its_cap_is_moved_without_an_attempt_and_the_others_go(parts, rows, relay):
    # Given a sender whose window frees in 1.5 s, and an email of another sender
    rows.add(1, sender="full")
    rows.add(2, sender="free")
    parts.caps.full["full"] = 1500
    # When one message carries them
    results = deliver(parts, [1, 2])
    # Then the first is moved to when its slot frees, no attempt spent; the other is sent
    assert results == [(1, Result.RATE_LIMITED), (2, Result.SENT)]
    assert [e for e in rows.events if e[0] == 1] == [(1, "rate_limited", {"delay_s": 1.5})]
    assert rows.rows[1]["attempts"] == 0
    assert relay.subjects() == ["email 2"]


def test_a_stopping_worker_gives_every_claim_back_at_once(parts, rows, relay):
    # Given two emails, one of a sender at its cap, and a worker that began to stop
    rows.add(1)
    rows.add(2, sender="full")
    parts.caps.full["full"] = 1000
    parts.deliverer.stopping.set()
    # When a message carrying them is run
    results = deliver(parts, [1, 2])
    # Then both go back unsent, to go again at once, and the slot taken for the first is free again
    assert results == [(1, Result.RELEASED), (2, Result.RELEASED)]
    assert released(rows) == [(1, Release.STOPPING, 0.0), (2, Release.STOPPING, 0.0)]
    assert parts.caps.taken == set() and relay.delivered == []


def test_redis_failing_under_the_cap_check_gives_the_claims_back_after_a_pause(parts, rows, relay):
    # Given two emails, and Redis gone
    rows.add(1)
    rows.add(2)
    parts.caps.broken = True
    # When a message carrying them is run, it raises (the message counts as an error)
    with pytest.raises(redis.ConnectionError):
        deliver(parts, [1, 2])
    # Then the claims go back without an attempt, after the first backoff, so a lasting fault does not spin
    assert released(rows) == [(1, Release.ERROR, 10.0), (2, Release.ERROR, 10.0)]
    assert {rows.status(1), rows.status(2)} == {"PENDING"}


def test_no_slot_under_the_global_cap_by_half_a_lease_gives_the_claims_back(parts, rows, relay):
    # Given two emails, and a global cap that never has room
    rows.add(1)
    rows.add(2)
    parts.caps.global_cap = SimpleNamespace(decide=lambda: Decision(False, 100))
    started = time.monotonic()
    # When a message carrying them is run
    results = deliver(parts, [1, 2])
    # Then the first waited until half its lease (0.5 s) and went back; so did the second, without waiting
    assert 0.45 < time.monotonic() - started < 1.5
    assert results == [(1, Result.RELEASED), (2, Result.RELEASED)]
    assert released(rows) == [(1, Release.NO_GLOBAL_SLOT, 0.0), (2, Release.HALF_LEASE, 0.0)]
    assert parts.caps.taken == set() and relay.delivered == []


def test_a_send_not_recorded_raises_after_the_message_is_done(parts, rows, relay):
    # Given two emails, and a recorder that cannot write
    rows.add(1)
    rows.add(2)
    parts.recorder.error = RuntimeError("PostgreSQL is gone")
    # When a message carrying them is run
    outcomes: list = []
    with pytest.raises(RuntimeError, match="PostgreSQL is gone"):
        parts.deliverer.deliver_many([1, 2], outcomes)
    # Then both were sent (they stay SENDING, for their lease), and neither counts as SENT
    assert relay.subjects() == ["email 1", "email 2"]
    assert outcomes == []
    assert {rows.status(1), rows.status(2)} == {"SENDING"}


def test_without_a_relay_emails_go_to_the_outbox_and_closing_a_thread_closes_both(parts, rows, relay):
    # Given a deliverer with no SMTP_URL, and an email of a sender with no relay of its own
    parts.deliverer.router = Router(smtp=relay, outbox=parts.outbox, default_relay=None,
                                    passwords=PasswordBox(()))
    rows.add(1)
    # When it is delivered and the thread stops
    assert deliver(parts, [1]) == [(1, Result.SENT)]
    parts.deliverer.close_thread()
    # Then it went to the outbox, and both transports were closed
    assert parts.outbox.subjects() == ["email 1"] and relay.delivered == []
    assert (relay.closed, parts.outbox.closed) == (1, 1)


class InFlight:
    """Send slots per sender, as coldmail.delivery.inflight keeps them in Redis; `busy` senders have none."""

    def __init__(self, busy: set[str]) -> None:
        self.busy = busy
        self.held: set[tuple[str, int]] = set()

    def wait_for_slot(self, account, sender_id, email_id, *, stopping):
        if sender_id in self.busy:
            return False
        self.held.add((sender_id, email_id))
        return True

    def give_back(self, account, sender_id, email_id):
        self.held.discard((sender_id, email_id))


def test_a_sender_with_every_send_slot_taken_goes_back_unspent_and_the_others_go(parts, rows, relay):
    # Given a message with two emails of a sender whose sends in flight are at their limit, one of another
    rows.add(1, sender="busy")
    rows.add(2, sender="free")
    rows.add(3, sender="busy")
    parts.deliverer.inflight = inflight = InFlight({"busy"})
    # When it is delivered
    results = deliver(parts, [1, 2, 3])
    # Then the busy sender's two go back together, unspent, to go again shortly; the other is sent
    assert sorted(results) == [(1, Result.RELEASED), (2, Result.SENT), (3, Result.RELEASED)]
    assert released(rows) == [(1, Release.SENDER_BUSY, 1.0), (3, Release.SENDER_BUSY, 1.0)]
    assert rows.rows[1]["attempts"] == rows.rows[3]["attempts"] == 0
    assert relay.subjects() == ["email 2"]
    # And no cap slot nor send slot is kept but the sent one's
    assert parts.caps.taken == {("cap:free", "2")} and inflight.held == set()


def test_a_failed_relay_holds_back_only_its_own_emails(parts, rows, relay):
    # Given a message whose first email's sender has a relay of its own that fails, then one email through
    # the default relay and one more through the failing relay
    rows.add(1, sender="own", smtp_url="smtp://own.example.com")
    rows.add(2)
    rows.add(3, sender="own", smtp_url="smtp://own.example.com")
    relay.fail_next(TransientSendError("451 try later", code=451))
    # When it is delivered
    results = deliver(parts, [1, 2, 3])
    # Then the failing relay's other email goes back with it, and the default relay's is sent
    assert sorted(results) == [(1, Result.RETRY), (2, Result.SENT), (3, Result.RELEASED)]
    assert [r[:2] for r in released(rows)] == [(3, Release.RELAY_FAILED)]
    assert relay.subjects() == ["email 2"]


def test_each_message_carries_its_own_signed_unsubscribe_link_unless_the_email_offers_none(parts, rows, relay):
    from email import message_from_bytes

    # Given an email with the default flag and a transactional one
    rows.add(1, body="bye: {{unsubscribe_url}}")
    rows.add(2, unsubscribe=False, body="bye: {{unsubscribe_url}}")
    # When both are sent
    deliver(parts, [1, 2])
    first, second = (message_from_bytes(d.message.data) for d in relay.delivered)
    # Then the first carries RFC 8058's headers, its link names email 1 of its account, and is its body's link
    link = first["List-Unsubscribe"].strip().strip("<>")  # (folded before the link: compat32 keeps the fold)
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert link.startswith(LINKS_BASE + "/u/")
    assert parts.deliverer.links.email_of(link.rpartition("/")[2]) == ("default", 1)
    assert first.get_payload(decode=True).decode() == f"bye: {link}"
    # And the transactional one carries neither header, and its body is as written
    assert second["List-Unsubscribe"] is None and second["List-Unsubscribe-Post"] is None
    assert second.get_payload(decode=True).decode() == "bye: {{unsubscribe_url}}"
