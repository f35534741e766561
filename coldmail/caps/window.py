"""The sliding window as a Dramatiq rate limiter: at most `limit` sends in any `window_ms`, per key, across
every process sharing the store; one script call per acquire, and one for all the emails of a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from dramatiq.rate_limits import RateLimiter

from .scripts import Decision, Scripts, SlotRequest

#: the wait given when a window is lost again right after its rebuild: ask again in a second
LOST_AGAIN_WAIT_MS = 1000


@dataclass(frozen=True)
class Pace:
    """A paced sender's part of a slot: its pace's key, its local day's number and that day's limit (None:
    none), the ms its next send must wait after this one (this one's wait, the gap, the jitter), and how to
    rebuild the pace from the source of truth: () -> (sends that day, ms from now until the next may start)."""

    key: str
    day: int
    day_limit: int | None
    after_ms: int
    rebuild: Callable[[], tuple[int, int]]


class SlidingWindowRateLimiter(RateLimiter):
    """One member's slot in the window of `key`, on `scripts` (the limiter's backend: Redis, or the stub).

    `member` is what takes the slot (an email id): acquiring again moves its one
    slot to now, so a repeated acquire never takes two. `rebuild` returns the
    window's (member, ms relative to now) pairs from the source of truth, and is
    called when the set was lost; pass None where a loss is harmless (a one-second
    global cap). `plan_key` is the key's hand-over plan: acquire takes the member out of it, or,
    refusing, moves it there to when its slot frees, so that it keeps its turn.
    """

    def __init__(self, scripts: Scripts, key: str, *, limit: int, window_ms: int, member: str,
                 plan_key: str | None = None, rebuild: Callable[[], Iterable[tuple[str, int]]] | None = None,
                 pace: Pace | None = None) -> None:
        super().__init__(scripts, key)
        self.scripts = scripts
        self.limit = limit
        self.window_ms = window_ms
        self.member = member
        self.plan_key = plan_key
        self.rebuild = rebuild
        #: a paced sender's day limit and gap, checked in the same call (None: not paced)
        self.pace = pace

    @property
    def request(self) -> SlotRequest:
        pace = self.pace
        if pace is None:
            return SlotRequest(self.key, self.plan_key, self.limit, self.member)
        return SlotRequest(self.key, self.plan_key, self.limit, self.member, pace_key=pace.key, day=pace.day,
                           day_limit=-1 if pace.day_limit is None else pace.day_limit, after_ms=pace.after_ms)

    def decide(self) -> Decision:
        """Take a slot for `member` if the window has one; otherwise say in how many ms one frees."""
        return self.decide_many([self])[0]

    @staticmethod
    def decide_many(limiters: Sequence[SlidingWindowRateLimiter]) -> list[Decision]:
        """`decide` for each limiter, in order, in one script call (the worker's check for the emails of a
        message); a window the store lost is rebuilt, and its limiters asked again, in one more call.

        The limiters share their scripts, window and whether they rebuild; with more
        than one, each needs a `plan_key`.
        """
        if not limiters:
            return []
        first = limiters[0]
        scripts, window_ms, rebuilds = first.scripts, first.window_ms, first.rebuild is not None
        if any(l.scripts is not scripts or l.window_ms != window_ms or (l.rebuild is not None) != rebuilds
               for l in limiters):
            raise ValueError("limiters decided together share their scripts, window and rebuild")
        requests = [limiter.request for limiter in limiters]
        decisions = scripts.acquire_many(requests, window_ms=window_ms, need_sentinel=rebuilds)
        lost = [i for i, d in enumerate(decisions) if d is None]
        if lost:
            for limiter in {limiters[i].key: limiters[i] for i in lost}.values():
                limiter.restore()
            again = scripts.acquire_many([requests[i] for i in lost], window_ms=window_ms, need_sentinel=rebuilds)
            for i, decision in zip(lost, again):
                decisions[i] = decision if decision is not None else Decision(False, LOST_AGAIN_WAIT_MS)
        return decisions  # type: ignore[return-value]

    def restore(self) -> int:
        """Put back the window's members (and a paced sender's pace) from the source of truth; return how many
        are in the window."""
        count = self.scripts.rebuild(self.key, self.rebuild() if self.rebuild else (), window_ms=self.window_ms)
        if self.pace is not None:
            day_count, next_ms = self.pace.rebuild()
            self.scripts.rebuild_pace(self.pace.key, day=self.pace.day, count=day_count, next_ms=next_ms)
        return count

    def mark_done(self) -> None:
        """The send finished: its slot counts from now, so arrivals, not only starts, keep the spacing."""
        self.scripts.done([(self.key, self.member)])

    def give_back(self) -> None:
        """The send did not happen: free the slot."""
        self.scripts.give_back([(self.key, self.member)])

    def used(self) -> int | None:
        """Slots taken in the current window, or None if the set was lost."""
        return self.scripts.used([self.key], window_ms=self.window_ms)[0]

    def _acquire(self) -> bool:
        return self.decide().allowed

    def _release(self) -> None:
        """A slot is spent by a send, not given back when the block ends."""
