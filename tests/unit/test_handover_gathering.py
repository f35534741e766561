"""The hand-over's gathering thread: requests' emails go out together after a couple of milliseconds, and
what Redis refuses goes back to the scheduler. A recording actor and a plan that lets everything go stand in
for Dramatiq and the caps."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import redis

from coldmail.caps import Plan
from coldmail.queue.handover import HandOver


class RecordingActor:
    def __init__(self, fail: bool = False) -> None:
        self.broker = None
        self.fail = fail
        self.messages: list[tuple[tuple[int, ...], int | None]] = []
        self.sent = threading.Event()

    def send_with_options(self, *, args, delay=None):
        if self.fail:
            raise redis.ConnectionError("Redis is gone")
        self.messages.append((args, delay))
        self.sent.set()


def everything_goes(rows) -> Plan:
    return Plan(go=[(row["id"], row["delay_ms"]) for row in rows])


def row(email_id: int, delay_ms: int = 0) -> dict:
    return {"id": email_id, "sender_id": "s", "delay_ms": delay_ms}


def test_one_email_per_request_still_travels_in_shared_messages():
    actor = RecordingActor()
    handover = HandOver(actor, caps=SimpleNamespace(plan=everything_goes), batch=10, spread_ms=5)
    # When 20 requests each hand over one email due now, in quick succession
    started = time.monotonic()
    for i in range(1, 21):
        handover.send_planned([row(i)])
    took = time.monotonic() - started
    handover.close()
    # Then each request returned at once
    assert took < 0.05
    # And the 20 went out in a few messages of up to 10, each email once
    sent = [email_id for args, _ in actor.messages for email_id in args]
    assert sorted(sent) == list(range(1, 21))
    assert len(actor.messages) <= 4 and max(len(args) for args, _ in actor.messages) == 10


def test_a_delay_counts_from_the_request_not_from_the_gathering():
    actor = RecordingActor()
    handover = HandOver(actor, caps=SimpleNamespace(plan=everything_goes), batch=10, spread_ms=5, lead_ms=0)
    handover.send_planned([row(1, delay_ms=3000)])
    assert actor.sent.wait(2)
    handover.close()
    [(args, delay)] = actor.messages
    assert args == (1,) and 2900 <= delay <= 3000


def test_what_redis_refuses_goes_back_to_the_scheduler_and_later_requests_do_not_wait_on_it():
    given_back: list[tuple[list[int], list]] = []
    handover = HandOver(RecordingActor(fail=True), caps=SimpleNamespace(plan=everything_goes), batch=10,
                        back_to_scheduler=lambda ids, later: given_back.append((ids, later)))
    handover.send_planned([row(1), row(2)])
    deadline = time.monotonic() + 2
    while not given_back and time.monotonic() < deadline:
        time.sleep(0.005)
    assert given_back == [([1, 2], [])]
    # And for a while after, requests' emails are left to the scheduler without trying Redis again
    handover.actor.fail = False
    handover.send_planned([row(3)])
    handover.close()
    assert given_back == [([1, 2], []), ([3], [])] and handover.actor.messages == []


def test_emails_over_their_senders_cap_are_moved_by_the_scheduler():
    given_back: list[tuple[list[int], list]] = []
    caps = SimpleNamespace(plan=lambda rows: Plan(go=[(1, 0)], later=[(2, 60_000)], wait=[3]))
    actor = RecordingActor()
    handover = HandOver(actor, caps=caps, back_to_scheduler=lambda ids, later: given_back.append((ids, later)))
    handover.send_planned([row(1), row(2), row(3)])
    handover.close()
    assert actor.messages == [((1,), None)]
    assert given_back == [([3], [(2, 60_000)])]


def test_time_spent_planning_counts_against_the_delay():
    # Given planning that takes 300 ms (senders' windows rebuilt from PostgreSQL after Redis lost them)
    def slow_plan(rows):
        time.sleep(0.3)
        return everything_goes(rows)

    actor = RecordingActor()
    handover = HandOver(actor, caps=SimpleNamespace(plan=slow_plan), batch=10, spread_ms=5, lead_ms=0)
    # When an email due in 3 s is handed over
    handover.send_planned([row(1, delay_ms=3000)])
    assert actor.sent.wait(2)
    handover.close()
    # Then its message waits 3 s from when it was planned, not from after the planning
    [(_, delay)] = actor.messages
    assert 2600 <= delay <= 2720, delay
