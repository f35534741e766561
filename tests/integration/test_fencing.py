"""Fencing: once a claim is taken back (its lease ran out, or its worker is known dead) and the email claimed
again, nothing the first claim's worker still does changes the row. And the sweep's question to Redis,
which lease holders are dead. Real PostgreSQL and Redis.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from coldmail.db import database
from coldmail.db.emails import recovery, sending
from coldmail.delivery.liveness import BEATS_KEY, Heartbeat, Liveness
from coldmail.scheduler import Jobs
from tests.support.db import event_kinds, sql


def due_email() -> int:
    [(email_id,)] = sql("INSERT INTO emails (recipient, subject, body, sender_id, scheduled_at, next_attempt_at) "
                        "VALUES ('u@example.com', 'fenced', 'hi', 's', now(), now()) RETURNING id")
    return email_id


def claim(email_id: int, worker: str) -> dict:
    with database.connection_context():
        [row] = sending.claim([email_id], lease_s=60, worker=worker)
    return row


def sweep(*, dead: list[str] = ()) -> list[tuple[int, str]]:
    with database.connection_context():
        return recovery.expire_leases(max_attempts=8, dead_workers=list(dead))


def row_of(email_id: int) -> tuple:
    [row] = sql("SELECT status, attempts, claims, worker_id, message_id, last_error FROM emails WHERE id = %s",
                email_id)
    return row


@pytest.fixture
def retaken(database_url):
    """An email claimed by worker A, taken back by the sweep (A is dead), and claimed again by worker B."""
    email_id = due_email()
    first = claim(email_id, "A")
    assert sweep(dead=["A"]) == [(email_id, "PENDING")]
    second = claim(email_id, "B")
    assert (first["claims"], second["claims"]) == (1, 2)
    return email_id, first, second


def test_the_first_claims_late_updates_match_nothing_once_the_email_is_claimed_again(retaken):
    email_id, first, second = retaken
    # When the first claim's worker, still alive after all, records every outcome it could
    with database.connection_context():
        late = [
            sending.mark_sent([(email_id, first["claims"], "<late@x>", "250 OK")]) == {email_id},
            sending.mark_failed(email_id, claim=first["claims"], error="550 late", code=550),
            sending.retry_later(email_id, claim=first["claims"], delay_s=30, error="451 late", code=451),
            sending.defer_for_cap(email_id, claim=first["claims"], delay_s=30),
            sending.release([(email_id, first["claims"])], reason="late") == 1,
        ]
    # Then none matched, and the row is still the second claim's, as it made it
    assert late == [False] * 5
    assert row_of(email_id) == ("SENDING", 1, 2, "B", None, None)
    # And the second claim's send is recorded
    with database.connection_context():
        assert sending.mark_sent([(email_id, second["claims"], "<b@x>", "250 OK")]) == {email_id}
    assert row_of(email_id) == ("SENT", 2, 2, "B", "<b@x>", None)
    # And after it, the first claim's mark_sent with the same Message-ID is not taken for a lost answer
    with database.connection_context():
        assert sending.mark_sent([(email_id, first["claims"], "<b@x>", "250 OK")]) == set()
    assert event_kinds(email_id) == ["claimed", "lease_expired", "claimed", "sent"]


@pytest.mark.parametrize("outcome", ["mark_failed", "retry_later", "release"])
def test_the_second_claims_outcomes_are_recorded(retaken, outcome):
    email_id, first, second = retaken
    with database.connection_context():
        if outcome == "mark_failed":
            assert sending.mark_failed(email_id, claim=second["claims"], error="550 no", code=550)
            expected = "FAILED"
        elif outcome == "retry_later":
            assert sending.retry_later(email_id, claim=second["claims"], delay_s=30, error="451", code=451)
            expected = "PENDING"
        else:
            assert sending.release([(email_id, second["claims"])], reason="stopping") == 1
            expected = "PENDING"
    assert row_of(email_id)[0] == expected


def test_a_claim_given_back_and_claimed_again_is_fenced_though_no_attempt_was_spent(database_url):
    # Given a claim given back unsent (no attempt counted), and the email claimed again
    email_id = due_email()
    first = claim(email_id, "A")
    with database.connection_context():
        assert sending.release([(email_id, first["claims"])], reason="worker stopping") == 1
    claim(email_id, "B")
    # When the first claim's worker records a failure late
    with database.connection_context():
        assert not sending.mark_failed(email_id, claim=first["claims"], error="550 late", code=550)
    # Then the row is the second claim's: the attempts count alone could not have told them apart
    assert row_of(email_id)[:4] == ("SENDING", 0, 2, "B")


def test_a_late_update_racing_the_sweep_and_a_new_claim_never_makes_two_winners(database_url):
    # Given, round after round, an email claimed by A; then at once A records a failure while the sweep
    # takes A's claim back, B claims the email and records its send
    outcomes = set()
    rounds = 0
    start = threading.Barrier(2)

    def a_side(email_id: int, claim_no: int) -> bool:
        start.wait()
        with database.connection_context():
            return sending.mark_failed(email_id, claim=claim_no, error="550 from A", code=550)

    def b_side(email_id: int) -> bool:
        start.wait()
        sweep(dead=["A"])
        with database.connection_context():
            rows = sending.claim([email_id], lease_s=60, worker="B")
            return bool(rows) and sending.mark_sent([(email_id, rows[0]["claims"], "<b@x>", "250")]) == {email_id}

    with ThreadPoolExecutor(2) as pool:
        while rounds < 200 and (len(outcomes) < 2 or rounds < 20):
            rounds += 1
            email_id = due_email()
            first = claim(email_id, "A")
            a = pool.submit(a_side, email_id, first["claims"])
            b = pool.submit(b_side, email_id)
            a_won, b_won = a.result(timeout=10), b.result(timeout=10)
            status = row_of(email_id)[0]
            # Then exactly one side's outcome is recorded, and the row says that one
            assert a_won != b_won, (rounds, a_won, b_won)
            assert status == ("FAILED" if a_won else "SENT")
            outcomes.add("A" if a_won else "B")
    # And both orders happened: the race was run, not one side always first
    print(f"\nfencing race: {rounds} rounds, winners seen: {sorted(outcomes)}")
    assert outcomes == {"A", "B"}


def test_the_sweep_ends_only_the_dead_workers_leases_and_counts_the_attempt(database_url):
    # Given emails claimed by a dead worker and by a live one, both with long leases
    dead_one, live_one = due_email(), due_email()
    claim(dead_one, "dead")
    claim(live_one, "live")
    with database.connection_context():
        assert {"dead", "live"} <= set(recovery.lease_holders())
    # When the sweep is told which is dead
    assert sweep(dead=["dead"]) == [(dead_one, "PENDING")]
    # Then the dead worker's email is PENDING again, its lost attempt counted; the live one's is untouched
    assert row_of(dead_one)[:2] == ("PENDING", 1)
    assert row_of(live_one)[:4] == ("SENDING", 0, 1, "live")
    assert event_kinds(dead_one)[-1] == "lease_expired"


def test_liveness_says_dead_only_for_a_beat_that_is_there_and_old(redis_client):
    # Given two workers that beat, one of which then stops, and a third that never beat
    redis_client.delete(BEATS_KEY)
    stopped = Heartbeat(redis_client, "stopped", every_s=0.05)
    beating = Heartbeat(redis_client, "beating", every_s=0.05)
    stopped.start()
    beating.start()
    try:
        stopped.stop()
        liveness = Liveness(redis_client, dead_worker_s=0.4, forget_after_s=60)
        assert liveness.dead(["stopped", "beating", "never"]) == []
        # When more than DEAD_WORKER_SECONDS pass
        time.sleep(0.6)
        # Then only the one whose beat is old is dead; a missing beat (Redis lost it) says nothing
        assert liveness.dead(["stopped", "beating", "never"]) == ["stopped"]
        # And beats older than forget_after_s are dropped
        assert Liveness(redis_client, dead_worker_s=0.4, forget_after_s=0.3).dead(["stopped"]) == []
        assert redis_client.zscore(BEATS_KEY, "stopped") is None
    finally:
        beating.stop()


class FakeLiveness:
    """The sweep's question to Redis, answered as told: `dead`, or a Redis error while `down`."""

    def __init__(self, dead: list[str]) -> None:
        self.answer = dead
        self.down = False

    def dead(self, workers):
        if self.down:
            raise redis.ConnectionError("Redis is gone")
        return [w for w in workers if w in self.answer]


def test_the_sweep_judges_no_worker_until_redis_was_reachable_for_dead_worker_seconds(make_settings):
    # Given a lease held by a worker whose beat is old, and a sweep that has just started
    email_id = due_email()
    claim(email_id, "silent")
    liveness = FakeLiveness(["silent"])
    jobs = Jobs(make_settings(DEAD_WORKER_SECONDS="0.5"), handover=None, recovery=None, liveness=liveness)
    # Then its first look names no one: a live worker may not have had the time to beat yet
    assert jobs._dead_workers() == []
    # And after DEAD_WORKER_SECONDS of Redis answering, the silent worker is dead
    time.sleep(0.6)
    assert jobs._dead_workers() == ["silent"]
    # And when Redis fails, no one is judged until it has answered for DEAD_WORKER_SECONDS again
    liveness.down = True
    assert jobs._dead_workers() == []
    liveness.down = False
    assert jobs._dead_workers() == []
    time.sleep(0.6)
    assert jobs._dead_workers() == ["silent"]
