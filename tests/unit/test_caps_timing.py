"""When may an email go (coldmail.caps.timing): its time, never before now, and the hand-over's go / later /
wait split of the slots its sender's cap gives."""

import pytest

from coldmail.caps.timing import TOLERANCE_MS, Plan, Placement, due_ms, look_ahead_ms, place, split


def test_an_email_is_due_at_its_time_and_never_before_now():
    assert due_ms(2500) == 2500
    assert due_ms(0) == 0
    assert due_ms(-40_000) == 0


def test_the_look_ahead_is_the_horizon_but_no_more_than_half_a_window():
    assert look_ahead_ms(horizon_s=10, window_ms=3_600_000) == 10_000
    assert look_ahead_ms(horizon_s=10, window_ms=4_000) == 2_000


@pytest.mark.parametrize("due,slot,expected", [
    # the cap gives it its own time, or a slot within the tolerance of it: it goes, with that delay
    (0, 0, (Placement.GO, 0)),
    (300, 300, (Placement.GO, 300)),
    (0, TOLERANCE_MS, (Placement.GO, TOLERANCE_MS)),
    # a slot planned a little in the past goes now
    (0, -20, (Placement.GO, 0)),
    # an email overdue counts from now
    (-5_000, 800, (Placement.GO, 800)),
    # a slot further than the tolerance after its time: over the cap, moved to that slot
    (0, TOLERANCE_MS + 1, (Placement.LATER, TOLERANCE_MS + 1)),
    (-5_000, 60_000, (Placement.LATER, 60_000)),
    # its own time, but beyond the look-ahead: left to be looked at again
    (4_000, 4_000, (Placement.WAIT, 4_000)),
])
def test_place_splits_go_later_and_wait(due, slot, expected):
    assert place(due, slot, ahead_ms=3_000) == expected


def test_split_gives_the_plan_with_the_ones_to_go_soonest_first():
    plan = split([(1, 0, 200), (2, 0, 50_000), (3, 0, 0), (4, 9_000, 9_000), (5, 100, 100), (6, 0, 0)],
                 ahead_ms=5_000)
    assert plan == Plan(go=[(3, 0), (6, 0), (5, 100), (1, 200)], later=[(2, 50_000)], wait=[4])
