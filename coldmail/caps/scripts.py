"""The sliding windows' store: what it does (`Scripts`), and its Redis implementation, one Lua script per step.

Per capped key, a sorted set holds the email ids that took a slot, scored by
when (ms, the store's clock) they took it, and by when they finished once sent: a
slot counts from the send's start and again from its end, so the cap holds by
arrival at the relay, not only by start. A sentinel member scored +inf says "this
set is complete": a set without it was lost (Redis restarted empty, or it expired
while idle), and the caller rebuilds it from PostgreSQL before anyone goes on.

A second sorted set per key holds the plan of the hand-over: the emails given to
Dramatiq but not yet sending, at their due time, and those held back, at the
time their slot frees. Planning never lets anything through (only acquire does);
it spaces the emails out so that acquire rarely has to say no.

Each step is one atomic script call (or one pipelined round trip for many keys).
The scripts live in lua/ (see there for each one's KEYS and ARGV); coldmail.caps.stub
is the same store in memory, for unit tests.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, Protocol, Sequence

import redis

SENTINEL = "~complete"
#: a rebuilt set marks the sends under way (SENDING rows) with this prefix: their own acquire may still
#: be to come, and must count them once (passed to the scripts; PostgreSQL's rebuild spells it too)
PLACEHOLDER = "claim:"


#: why a slot was refused: the window's cap, the sender's day limit, its gap between sends
HOURLY_LIMIT, DAILY_LIMIT, GAP = "hourly_limit", "daily_limit", "gap"
_REFUSED = {0: HOURLY_LIMIT, 2: DAILY_LIMIT, 3: GAP}
#: a planned slot its sender's day limit leaves no room for today (coldmail.caps.Scripts.plan)
DAY_FULL = None


class GapSlot(int):
    """A planned slot (ms from now) that its sender's gap between sends set, not its cap."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    wait_ms: int = 0
    #: when refused: HOURLY_LIMIT (wait_ms: until a slot frees), DAILY_LIMIT or GAP (wait_ms: until it ends)
    reason: str = HOURLY_LIMIT


@dataclass(frozen=True)
class SlotRequest:
    """A slot for `member` on `key` (whose hand-over plan is `plan_key`), at most `limit` per window.

    A paced sender's request (`day` set: its local day's number) also names its pace (`pace_key`): at most
    `day_limit` (-1: none) sends that day, and none before its last send's `after_ms` has passed; this send's
    own `after_ms` is its wait until it starts, its gap and its jitter."""

    key: str
    plan_key: str | None
    limit: int
    member: str
    pace_key: str | None = None
    day: int | None = None
    day_limit: int = -1
    after_ms: int = 0


@dataclass(frozen=True)
class PlanRequest:
    """One key's candidates for the hand-over, in due order: (member, ms until due)."""

    key: str
    plan_key: str
    limit: int
    window_ms: int
    candidates: Sequence[tuple[str, int]]
    #: a paced sender's: its pace, the gap between its sends, its local day's number (None: not paced), that
    #: day's limit (-1: none) and the ms until it ends
    pace_key: str | None = None
    gap_ms: int = 0
    day: int | None = None
    day_limit: int = -1
    day_left_ms: int = 0


class Scripts(Protocol):
    """The store's steps. Each is atomic per key; a None in an answer means that key's set was lost."""

    def acquire_many(self, requests: Sequence[SlotRequest], *, window_ms: int,
                     need_sentinel: bool = True) -> list[Decision | None]:
        """Take a slot for each request, in order, in one call. A slot for a member that has one moves to
        now (it never takes two); a refused member with a plan is moved there to when its slot frees,
        so it keeps its turn. Without `need_sentinel`, a set lost is started afresh instead."""

    def done(self, slots: Sequence[tuple[str, str]]) -> None:
        """(key, member) slots whose sends finished: each counts from now."""

    def give_back(self, slots: Sequence[tuple[str, str]]) -> None:
        """(key, member) slots whose sends did not happen: free them."""

    def rebuild(self, key: str, entries: Iterable[tuple[str, int]], *, window_ms: int) -> int:
        """Put back a lost set from (member, ms relative to now) pairs and mark it complete; return how many
        members it holds."""

    def rebuild_pace(self, pace_key: str, *, day: int, count: int, next_ms: int) -> bool:
        """Put back a lost pace (its day's number, sends that day, ms from now until the next send may start)
        unless it is there; whether it was written."""

    def used(self, keys: Sequence[str], *, window_ms: int) -> list[int | None]:
        """Slots taken per key in the current window."""

    def plan(self, requests: Sequence[PlanRequest], *, margin_ms: int,
             tolerance_ms: int) -> list[list[int | None] | None]:
        """Each request's candidates' planned times (ms from now), in one round trip.

        A candidate goes at its due time if the window allows it then (or at a
        time it was planned before, within `tolerance_ms` of that: it keeps its
        place, moved on if the sends before it went late), else `margin_ms` after
        the time a slot frees behind everything already taken or planned. Later
        candidates queue behind earlier ones. A paced sender's go no earlier than
        its next send may, each fresh one a gap after the latest planned; one its
        day limit leaves no room for today is DAY_FULL (and not planned).
        """

    def unplan(self, plan_key: str, members: Sequence[str]) -> None:
        """Free the members' places in a plan."""

    def unplan_all(self, plan_key: str) -> None:
        """Free every place in a plan."""


#: each script's source: the included pieces, then its own file
SCRIPTS = {
    "acquire": ("_now", "_acquire", "acquire"),
    "acquire_many": ("_now", "_acquire", "acquire_many"),
    "done": ("_now", "done"),
    "rebuild": ("_now", "rebuild"),
    "used": ("_now", "used"),
    "plan": ("_now", "plan"),
    "rebuild_pace": ("_now", "rebuild_pace"),
}


@functools.cache
def source(name: str) -> str:
    """The Lua text of script `name` (see SCRIPTS), read from the package's lua/ directory."""
    folder = resources.files(__package__) / "lua"
    return "\n".join(folder.joinpath(f"{piece}.lua").read_text(encoding="utf-8") for piece in SCRIPTS[name])


class RedisScripts:
    """The scripts registered on one Redis client: build once per client, share between limiters."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        #: the registered scripts by name, each called with KEYS and ARGV as its file says
        self.lua = {name: client.register_script(source(name)) for name in SCRIPTS}

    def acquire_many(self, requests: Sequence[SlotRequest], *, window_ms: int,
                     need_sentinel: bool = True) -> list[Decision | None]:
        if len(requests) == 1 and requests[0].day is None:
            [r] = requests
            flat = self.lua["acquire"](keys=[r.key] if r.plan_key is None else [r.key, r.plan_key],
                                       args=[r.limit, window_ms, r.member, _flag(need_sentinel), SENTINEL,
                                             PLACEHOLDER])
        else:
            keys: list[str] = []
            args: list = [window_ms, _flag(need_sentinel), SENTINEL, PLACEHOLDER]
            for r in requests:
                if r.plan_key is None:
                    raise ValueError(f"{r.key}: a slot taken with others needs its plan's key")
                keys.extend((r.key, r.plan_key, r.pace_key or r.key))
                args.extend((r.limit, r.member, "-" if r.day is None else r.day, r.day_limit, int(r.after_ms)))
            flat = self.lua["acquire_many"](keys=keys, args=args)
        return [decision(int(allowed), int(wait)) for allowed, wait in zip(flat[::2], flat[1::2])]

    def done(self, slots: Sequence[tuple[str, str]]) -> None:
        if slots:
            self.lua["done"](keys=[key for key, _ in slots], args=[PLACEHOLDER, *(member for _, member in slots)])

    def give_back(self, slots: Sequence[tuple[str, str]]) -> None:
        if slots:
            pipe = self.client.pipeline(transaction=False)
            for key, member in slots:
                pipe.zrem(key, member, PLACEHOLDER + member)
            pipe.execute()

    def rebuild(self, key: str, entries: Iterable[tuple[str, int]], *, window_ms: int) -> int:
        args: list = [window_ms, SENTINEL]
        for member, at_ms in entries:
            args.extend((int(at_ms), str(member)))
        return int(self.lua["rebuild"](keys=[key], args=args))

    def rebuild_pace(self, pace_key: str, *, day: int, count: int, next_ms: int) -> bool:
        return int(self.lua["rebuild_pace"](keys=[pace_key], args=[day, count, int(next_ms)])) == 1

    def used(self, keys: Sequence[str], *, window_ms: int) -> list[int | None]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            self.lua["used"](keys=[key], args=[window_ms, SENTINEL], client=pipe)
        return [None if int(n) < 0 else int(n) for n in pipe.execute()]

    def plan(self, requests: Sequence[PlanRequest], *, margin_ms: int,
             tolerance_ms: int) -> list[list[int | None] | None]:
        pipe = self.client.pipeline(transaction=False)
        for r in requests:
            args: list = [r.limit, r.window_ms, margin_ms, tolerance_ms, SENTINEL, r.gap_ms,
                          "-" if r.day is None else r.day, r.day_limit, int(r.day_left_ms)]
            for member, due_ms in r.candidates:
                args.extend((str(member), int(due_ms)))
            self.lua["plan"](keys=[r.key, r.plan_key, r.pace_key or r.plan_key], args=args, client=pipe)
        return [None if reply == -1 else [_slot(x) for x in reply] for reply in pipe.execute()]

    def unplan(self, plan_key: str, members: Sequence[str]) -> None:
        if members:
            self.client.zrem(plan_key, *members)

    def unplan_all(self, plan_key: str) -> None:
        self.client.delete(plan_key)


def decision(code: int, wait_ms: int) -> Decision | None:
    """An acquire script's (code, wait) as a Decision; None for -1, a lost set."""
    if code == -1:
        return None
    return Decision(code == 1, wait_ms, _REFUSED.get(code, HOURLY_LIMIT))


def _slot(x: int | bytes) -> int | None:
    """A plan script's answer for one member: ms, GapSlot ms, or DAY_FULL."""
    if isinstance(x, bytes):
        return DAY_FULL if x == b"day" else GapSlot(int(x[1:]))
    return int(x)


def _flag(on: bool) -> str:
    return "1" if on else "0"
