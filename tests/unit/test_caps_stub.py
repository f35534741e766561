"""The sliding window and the hand-over's plan on the in-memory twin of the Redis scripts
(coldmail.caps.stub), on a test clock: the cases of tests/integration/test_caps.py without sleeping, and
the store's own rules (the sentinel, claim placeholders, expiry)."""

from __future__ import annotations

import dramatiq
import dramatiq.rate_limits
import pytest

from coldmail.caps.scripts import PLACEHOLDER, SENTINEL, Decision, PlanRequest, SlotRequest
from coldmail.caps.stub import StubScripts
from coldmail.caps.window import SlidingWindowRateLimiter

START_MS = 1_700_000_000_000
INF = float("inf")


class Clock:
    def __init__(self) -> None:
        self.ms = START_MS

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def scripts(clock) -> StubScripts:
    return StubScripts(clock)


def limiter(scripts, member, *, limit: int, window_ms: int, key: str = "test:cap", plan_key=None, rebuild=None):
    return SlidingWindowRateLimiter(scripts, key, limit=limit, window_ms=window_ms, member=str(member),
                                    plan_key=plan_key, rebuild=rebuild)


def complete(scripts, key: str = "test:cap", **members: float) -> None:
    scripts.client.zadd(key, {SENTINEL: INF, **members})


# -- the sliding window ---------------------------------------------------------------------------------

def test_the_limit_holds_and_the_wait_is_when_the_oldest_slot_frees(scripts, clock):
    # Given a window of 1.2 s with room for 3, taken at 0, 0.4 and 0.8 s
    for i in range(3):
        if i:
            clock.advance(400)
        assert limiter(scripts, i, limit=3, window_ms=1200).decide().allowed
    # When a fourth asks: refused, told to wait until the first slot (taken at 0) frees at 1.2 s
    refused = limiter(scripts, "d", limit=3, window_ms=1200).decide()
    assert refused == refused_for(400)
    # And 1 ms before that it is still refused; at 1.2 s it goes, and the next waits for the 0.4 s slot
    clock.advance(refused.wait_ms - 1)
    assert not limiter(scripts, "d", limit=3, window_ms=1200).decide().allowed
    clock.advance(1)
    assert limiter(scripts, "d", limit=3, window_ms=1200).decide().allowed
    assert limiter(scripts, "e", limit=3, window_ms=1200).decide() == refused_for(400)
    assert limiter(scripts, "x", limit=3, window_ms=1200).used() == 3


def refused_for(ms: int) -> Decision:
    return Decision(False, ms)


def test_acquiring_again_never_takes_a_second_slot(scripts):
    a = limiter(scripts, "a", limit=2, window_ms=60_000)
    assert all(a.decide().allowed for _ in range(3))
    assert a.used() == 1
    assert limiter(scripts, "b", limit=2, window_ms=60_000).decide().allowed
    assert not limiter(scripts, "c", limit=2, window_ms=60_000).decide().allowed
    assert a.decide().allowed and a.used() == 2
    a.give_back()
    assert limiter(scripts, "c", limit=2, window_ms=60_000).decide().allowed


def test_a_refused_member_keeps_its_turn_in_the_plan_at_the_time_its_slot_frees(scripts, clock):
    complete(scripts, a=START_MS - 1000)
    scripts.client.zadd("test:plan", {"b": START_MS})
    # When b asks under a limit of 1: refused for 9 s, and planned then
    assert limiter(scripts, "b", limit=1, window_ms=10_000, plan_key="test:plan").decide() == refused_for(9000)
    assert scripts.client.zscore("test:plan", "b") == START_MS + 9000
    assert scripts.client.pttl("test:plan") == 9000 + 20_000
    # When its slot frees, it takes it, and leaves the plan (which goes with its last member)
    clock.advance(9000)
    assert limiter(scripts, "b", limit=1, window_ms=10_000, plan_key="test:plan").decide().allowed
    assert scripts.client.zcard("test:plan") == 0 and scripts.client.pttl("test:plan") == -2


def test_a_lost_window_is_rebuilt_first_and_a_send_under_way_counts_once(scripts, clock):
    # Given a window lost by the store, whose source of truth has 2 sends and one under way (a placeholder)
    truth = [("1", -2000), ("2", -1000), (PLACEHOLDER + "3", 0)]
    rebuilds = []

    def rebuild():
        rebuilds.append(True)
        return truth

    cap = limiter(scripts, 3, limit=3, window_ms=60_000, rebuild=rebuild)
    # Then a window lost is reported, not counted
    assert cap.used() is None
    # When the send under way asks, its placeholder gives way to it: one slot, and nothing else fits
    assert cap.decide().allowed and rebuilds == [True]
    assert limiter(scripts, 4, limit=3, window_ms=60_000, rebuild=rebuild).decide() == refused_for(58_000)
    assert cap.used() == 3 and rebuilds == [True]


def test_a_window_without_rebuild_starts_afresh_when_lost(scripts):
    # The global cap: a second's sends are over before a rebuild could matter
    assert limiter(scripts, 1, limit=1, window_ms=1000).decide().allowed
    assert scripts.client.zscore("test:cap", SENTINEL) == INF


def test_a_finished_send_counts_from_its_end_and_a_placeholder_becomes_its_member(scripts, clock):
    complete(scripts, a=START_MS, **{PLACEHOLDER + "b": START_MS})
    clock.advance(700)
    scripts.done([("test:cap", "a"), ("test:cap", "b"), ("test:cap", "c")])
    assert scripts.client.zscore("test:cap", "a") == START_MS + 700
    assert scripts.client.zscore("test:cap", "b") == START_MS + 700
    # a member that had no slot takes none
    assert scripts.client.zscore("test:cap", "c") is None
    assert scripts.client.zscore("test:cap", PLACEHOLDER + "b") is None


def test_a_slot_given_back_frees_its_placeholder_too(scripts):
    complete(scripts, a=START_MS, **{PLACEHOLDER + "b": START_MS})
    scripts.give_back([("test:cap", "a"), ("test:cap", "b")])
    assert scripts.client.zcard("test:cap") == 1


def test_an_idle_window_expires_and_is_then_lost(scripts, clock):
    assert limiter(scripts, "a", limit=5, window_ms=1000).decide().allowed
    assert scripts.client.pttl("test:cap") == 2000
    clock.advance(2000)
    assert scripts.used(["test:cap"], window_ms=1000) == [0]
    clock.advance(1)
    assert scripts.used(["test:cap"], window_ms=1000) == [None]


def test_many_slots_are_decided_in_order_in_one_call(scripts, clock):
    calls = []
    acquire_many = scripts.acquire_many
    scripts.acquire_many = lambda *a, **kw: calls.append(a) or acquire_many(*a, **kw)
    complete(scripts, "cap:a")
    complete(scripts, "cap:b")
    cap = [limiter(scripts, i, limit=2, window_ms=10_000, key=f"cap:{k}", plan_key=f"plan:{k}", rebuild=list)
           for i, k in enumerate("aaab")]
    decisions = SlidingWindowRateLimiter.decide_many(cap)
    assert [d.allowed for d in decisions] == [True, True, False, True]
    assert decisions[2].wait_ms == 10_000
    assert len(calls) == 1
    assert scripts.client.zscore("plan:a", "2") == START_MS + 10_000


def test_limiters_decided_together_share_their_window():
    scripts = StubScripts()
    with pytest.raises(ValueError):
        SlidingWindowRateLimiter.decide_many([limiter(scripts, 1, limit=1, window_ms=1000, plan_key="p"),
                                              limiter(scripts, 2, limit=1, window_ms=2000, plan_key="p")])


# -- the plan of the hand-over --------------------------------------------------------------------------

def plan(scripts, *requests: PlanRequest) -> list:
    return scripts.plan(list(requests), margin_ms=500, tolerance_ms=1000)


def test_the_plan_queues_a_backlog_behind_the_window_in_due_order(scripts, clock):
    complete(scripts)
    request = PlanRequest("test:cap", "test:plan", 2, 10_000, [(str(i), 0) for i in range(7)])
    [planned] = plan(scripts, request)
    step = 10_500
    assert planned == [(i // 2) * step for i in range(7)]
    # Planning again keeps each its place, while a newcomer queues behind them all
    again = PlanRequest("test:cap", "test:plan", 2, 10_000,
                        [(str(i), at) for i, at in enumerate(planned)] + [("new", 0)])
    assert plan(scripts, again) == [planned + [3 * step]]
    # When the first two went 700 ms late, the next two keep their turn, moved on by as much
    scripts.client.zrem("test:plan", "0", "1")
    scripts.client.zadd("test:cap", {"0": START_MS + 700, "1": START_MS + 700})
    late = PlanRequest("test:cap", "test:plan", 2, 10_000, [("2", planned[2]), ("3", planned[3])])
    assert plan(scripts, late) == [[700 + step, 700 + step]]
    # And a lost window is reported, not planned on
    scripts.client.delete("test:cap")
    assert plan(scripts, request) == [None]


def test_with_room_for_all_the_plan_gives_each_its_due_time_and_stops_at_the_limit(scripts):
    complete(scripts, a=START_MS - 1000, b=START_MS - 500)
    scripts.client.zadd("test:plan", {"p": START_MS + 50})
    assert plan(scripts, PlanRequest("test:cap", "test:plan", 5, 10_000, [("c", 100), ("d", 200)])) == [[100, 200]]
    assert scripts.client.zcard("test:plan") == 3
    assert scripts.client.pttl("test:plan") == 200 + 20_000
    assert plan(scripts, PlanRequest("test:cap", "test:plan", 5, 10_000, [("e", 0)])) == [[-1000 + 10_000 + 500]]


def test_a_planned_email_moved_past_the_tolerance_is_planned_afresh(scripts):
    complete(scripts)
    [first] = plan(scripts, PlanRequest("test:cap", "test:plan", 1, 10_000, [("a", 0), ("b", 0)]))
    assert first == [0, 10_500]
    # b, moved to 5 s from now, is planned again from that time, behind a
    assert plan(scripts, PlanRequest("test:cap", "test:plan", 1, 10_000, [("b", 5000)])) == [[10_500]]
    # and unplanned, its place is free for c
    scripts.unplan("test:plan", ["b"])
    assert plan(scripts, PlanRequest("test:cap", "test:plan", 1, 10_000, [("c", 0)])) == [[10_500]]


def test_old_slots_and_plans_leave_the_window(scripts, clock):
    complete(scripts, a=START_MS)
    scripts.client.zadd("test:plan", {"p": START_MS})
    clock.advance(10_000)
    assert plan(scripts, PlanRequest("test:cap", "test:plan", 1, 10_000, [("c", 0)])) == [[0]]
    assert scripts.client.zscore("test:cap", "a") is None and scripts.client.zscore("test:plan", "p") is None


def test_a_slot_without_a_plan_takes_its_place_in_the_window_only():
    scripts = StubScripts()
    [decision] = scripts.acquire_many([SlotRequest("k", None, 1, "m")], window_ms=1000, need_sentinel=False)
    assert decision.allowed and scripts.client.zcard("k") == 2


def test_the_window_works_as_a_dramatiq_rate_limiter(scripts):
    first = limiter(scripts, "a", limit=1, window_ms=10_000)
    assert isinstance(first, dramatiq.rate_limits.RateLimiter)
    with first.acquire(raise_on_failure=False) as acquired:
        assert acquired
    # the slot is spent by the send, not given back when the block ends
    with limiter(scripts, "b", limit=1, window_ms=10_000).acquire(raise_on_failure=False) as acquired:
        assert not acquired
    with pytest.raises(dramatiq.RateLimitExceeded):
        with limiter(scripts, "b", limit=1, window_ms=10_000).acquire():
            pass
