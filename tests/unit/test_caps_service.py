"""Caps on the in-memory twin of its Redis scripts (coldmail.caps.stub), on a test clock: the worker's check
for a message's emails in one script call, the hand-over's plan, and what a lost window costs."""

from __future__ import annotations

import pytest

from coldmail.caps import Caps, Decision, Plan
from coldmail.caps.scripts import PLACEHOLDER, SENTINEL
from coldmail.caps.stub import StubScripts
from coldmail.settings import Settings

START_MS = 1_700_000_000_000
#: the account of every sender here, but where two accounts are the point
ACCOUNT = "acme"


class Clock:
    def __init__(self) -> None:
        self.ms = START_MS

    def __call__(self) -> int:
        return self.ms


class Counting(StubScripts):
    """The stub, counting its script calls by name."""

    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.calls: list[str] = []

    def acquire_many(self, *args, **kwargs):
        self.calls.append("acquire_many")
        return super().acquire_many(*args, **kwargs)

    def rebuild(self, *args, **kwargs):
        self.calls.append("rebuild")
        return super().rebuild(*args, **kwargs)

    def plan(self, *args, **kwargs):
        self.calls.append("plan")
        return super().plan(*args, **kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def caps(clock) -> Caps:
    settings = Settings.from_env({"RATE_LIMIT_WINDOW_SECONDS": "10", "HANDOVER_HORIZON_SECONDS": "10"}, dotenv=None)
    caps = Caps(settings, scripts=Counting(clock))
    #: PostgreSQL's answer for a lost window: nothing sent in it
    caps._lost = lambda account, sender: []
    return caps


def complete(caps: Caps, *senders: str) -> None:
    for sender in senders:
        caps.scripts.client.zadd(Caps.key(ACCOUNT, sender), {SENTINEL: float("inf")})


def test_the_emails_of_a_message_take_their_slots_in_one_script_call(caps):
    complete(caps, "a", "b")
    decisions = caps.acquire([(ACCOUNT, "a", 2, 1), (ACCOUNT, "b", 1, 2), (ACCOUNT, "a", 2, 3), (ACCOUNT, "a", 2, 4),
                              (ACCOUNT, "b", 1, 5)])
    assert decisions == [Decision(True), Decision(True), Decision(True), Decision(False, 10_000),
                         Decision(False, 10_000)]
    assert caps.scripts.calls == ["acquire_many"]
    assert caps.usage(ACCOUNT, "a") == 2 and caps.usage(ACCOUNT, "b") == 1


def test_a_lost_window_is_rebuilt_once_per_sender_then_asked_again_in_one_call(caps, clock):
    complete(caps, "kept")
    under_way = []
    caps._lost = lambda account, sender: under_way.append(sender) or [("7", -1000), (PLACEHOLDER + "8", 0)]
    decisions = caps.acquire([(ACCOUNT, "lost", 3, 8), (ACCOUNT, "kept", 3, 1), (ACCOUNT, "lost", 3, 9),
                              (ACCOUNT, "lost", 3, 10)])
    # the send under way (8) took its own placeholder's slot: 7, 8 and 9 fill the window, 10 waits for 7's
    assert decisions == [Decision(True), Decision(True), Decision(True), Decision(False, 9000)]
    assert under_way == ["lost"]
    assert caps.scripts.calls == ["acquire_many", "rebuild", "acquire_many"]


def test_the_plan_splits_go_later_and_wait_and_queues_the_backlog_in_due_order(caps):
    complete(caps, "s", "t")
    rows = [{"id": i, "account": ACCOUNT, "sender_id": "s", "hourly_limit": 2, "delay_ms": 0}
            for i in range(1, 6)]
    rows.append({"id": 9, "account": ACCOUNT, "sender_id": "t", "hourly_limit": 5, "delay_ms": 6000})
    plan = caps.plan(rows)
    # two go now; the others are moved a window (and the margin) on, two by two; t's email, beyond half a
    # window, waits
    assert plan == Plan(go=[(1, 0), (2, 0)], later=[(3, 10_500), (4, 10_500), (5, 21_000)], wait=[9])
    assert caps.scripts.calls == ["plan"]
    # And, moved to their slots and planned again, they keep their places, and wait until they come near
    moved = [dict(row, delay_ms=at) for row, (_, at) in zip(rows[2:5], plan.later)]
    assert caps.plan(moved) == Plan(wait=[3, 4, 5])
    assert [caps.scripts.client.zscore(Caps.plan_key(ACCOUNT, "s"), str(i)) - START_MS for i in (3, 4, 5)] == [
        10_500, 10_500, 21_000]


def test_a_plan_on_a_lost_window_rebuilds_it_first(caps):
    plan = caps.plan([{"id": 1, "account": ACCOUNT, "sender_id": "lost", "hourly_limit": 1, "delay_ms": 0}])
    assert plan == Plan(go=[(1, 0)])
    assert caps.scripts.calls == ["plan", "rebuild", "plan"]


def test_an_unplanned_email_frees_its_place_for_the_senders_next(caps):
    complete(caps, "s")
    rows = [{"id": i, "account": ACCOUNT, "sender_id": "s", "hourly_limit": 1, "delay_ms": 0} for i in (1, 2)]
    assert caps.plan(rows).later == [(2, 10_500)]
    caps.unplan(ACCOUNT, "s", 1, 2)
    assert caps.plan([{"id": 3, "account": ACCOUNT, "sender_id": "s", "hourly_limit": 1,
                       "delay_ms": 0}]).go == [(3, 0)]


def test_two_accounts_senders_of_one_id_have_their_own_windows_and_plans(caps):
    # Given sender "s" in account "a" and in account "b", each with a limit of 1
    for account in ("a", "b"):
        caps.scripts.client.zadd(Caps.key(account, "s"), {SENTINEL: float("inf")})
    # When a's "s" takes its one slot, then each asks for another
    decisions = caps.acquire([("a", "s", 1, 1), ("a", "s", 1, 2), ("b", "s", 1, 3)])
    # Then a's second waits for the window, and b's "s" is not held back by a's send
    assert decisions == [Decision(True), Decision(False, 10_000), Decision(True)]
    assert caps.usage("a", "s") == 1 and caps.usage("b", "s") == 1
    # And the hand-over plans them apart too, with a limit of 2: a's "s" has a send and a refused email
    # keeping its turn, so its next waits; b's "s" has one send, so one more goes
    plan = caps.plan([{"id": 4, "account": "a", "sender_id": "s", "hourly_limit": 2, "delay_ms": 0},
                      {"id": 5, "account": "b", "sender_id": "s", "hourly_limit": 2, "delay_ms": 0},
                      {"id": 6, "account": "b", "sender_id": "s", "hourly_limit": 2, "delay_ms": 0}])
    assert plan.go == [(5, 0)] and [email_id for email_id, _ in plan.later] == [4, 6]
    assert Caps.key("a", "s") != Caps.key("b", "s") and Caps.plan_key("a", "s") != Caps.plan_key("b", "s")


def test_caps_need_a_store():
    with pytest.raises(ValueError):
        Caps(Settings.from_env({}, dotenv=None))
