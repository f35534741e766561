"""When may an email go: pure rules, no I/O, in milliseconds from now.

At its time (scheduledAt, or a retry's next_attempt_at), never before now, and no
earlier than the slot its sender's cap, day limit and gap give it, inside its
sending window (coldmail.caps.pacing has the calendar rules); the hand-over then
sends it, moves it to its slot, or leaves it to be looked at again (`place`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Iterable

#: a planned slot starts this long after the slot before it frees, so that sends finishing a little
#: after their planned time (worker pick-up, the SMTP conversation) do not meet a full window
MARGIN_MS = 500
#: an email whose slot comes within this of its time is handed over with that delay; later, it is moved
TOLERANCE_MS = 1000


def due_ms(delay_ms: int) -> int:
    """An email's time, before any cap: ms from now until its scheduledAt (or retry), now if that passed."""
    return max(0, int(delay_ms))


def look_ahead_ms(*, horizon_s: float, window_ms: int) -> float:
    """How far ahead a slot is handed over: the hand-over's horizon, and no more than half a window, so
    that by then the sends a window before it are over, and the worker's check has seen when they really
    finished."""
    return min(horizon_s * 1000, window_ms / 2)


class Placement(str, Enum):
    #: handed over now, with its slot's delay
    GO = "go"
    #: over its sender's cap: moved to its slot
    LATER = "later"
    #: left as it is: its slot is beyond the look-ahead, and is checked again when it comes nearer
    WAIT = "wait"


def place(due: int, slot_ms: int, *, ahead_ms: float) -> tuple[Placement, int]:
    """What the hand-over does with an email due in `due` ms whose cap gives it the slot in `slot_ms`, and
    the delay it goes with (GO) or the time it is moved to (LATER)."""
    if slot_ms - due_ms(due) > TOLERANCE_MS:
        return Placement.LATER, slot_ms
    if slot_ms > ahead_ms:
        return Placement.WAIT, slot_ms
    return Placement.GO, max(0, slot_ms)


@dataclass(frozen=True)
class Plan:
    #: (email id, delay ms) to give Dramatiq now, soonest first
    go: list[tuple[int, int]] = field(default_factory=list)
    #: (email id, delay ms) over their sender's cap: moved to when their slot frees
    later: list[tuple[int, int]] = field(default_factory=list)
    #: email ids left as they are: their slot is more than half a window away, and is checked again
    #: against the sends before it when it comes nearer
    wait: list[int] = field(default_factory=list)
    #: why a `later` email was moved, when not its sender's hourly cap: `window`, `daily_limit` or `gap`
    reasons: dict[int, str] = field(default_factory=dict)
    #: the instant a `later` email moves to, when known exactly (a window's opening): its delay is rounded
    at: dict[int, datetime] = field(default_factory=dict)

    def reason(self, email_id: int) -> str:
        return self.reasons.get(email_id, "hourly_limit")


#: a slot: (email id, ms until due, slot ms) and, when what gave the slot was not the hourly cap, why
Slot = tuple


def split(slots: Iterable[Slot], *, ahead_ms: float) -> Plan:
    """The plan for (email id, ms until due, slot ms[, reason[, instant]]) slots: each `place`d, the ones to go
    soonest first; a reason (and the exact instant of the slot), when given, are the move's if it is moved."""
    plan = Plan()
    for email_id, due, slot_ms, *why in slots:
        placement, ms = place(due, slot_ms, ahead_ms=ahead_ms)
        if placement is Placement.GO:
            plan.go.append((email_id, ms))
        elif placement is Placement.LATER:
            plan.later.append((email_id, ms))
            if why and why[0] != "hourly_limit":
                plan.reasons[email_id] = why[0]
            if len(why) > 1 and why[1] is not None:
                plan.at[email_id] = why[1]
        else:
            plan.wait.append(email_id)
    plan.go.sort(key=lambda item: (item[1], item[0]))
    return plan
