"""The sliding windows' store in memory: coldmail.caps.scripts' Lua scripts, step for step, in Python.

For unit tests (as dramatiq's stub backends are): `Caps(settings, scripts=StubScripts())`
caps without Redis, and a test clock makes a window pass without sleeping. The
integration tests run the same cases on both stores, so the twin keeps the
scripts' semantics, down to Redis's own: a sorted set ordered by (score, member)
that disappears, with its expiry, when its last member goes; keys that expire;
numbers written into a range by Lua's string concatenation (14 significant
digits).
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from .scripts import DAY_FULL, PLACEHOLDER, GapSlot, SENTINEL, Decision, PlanRequest, SlotRequest, decision

#: a pace's time to live (ms), as the scripts set it
PACE_TTL_MS = 172_800_000

INF = float("inf")


def redis_clock() -> int:
    """This host's clock as the scripts read Redis's TIME: whole milliseconds."""
    return time.time_ns() // 1_000_000


def _g14(x: float) -> float:
    """`x` as Lua writes it into a string ('(' .. x): 14 significant digits."""
    return float("%.14g" % x)


class SortedSets:
    """The few Redis sorted-set and expiry commands the scripts use, in memory.

    The redis-py names and signatures (zadd, zrem, zscore, zcard, zrange, delete,
    flushdb, pexpire, pttl) let a test set a window up on either store alike. Inside a
    script every command sees the same `now` (see `frozen`), as in Redis.
    """

    def __init__(self, clock: Callable[[], int] = redis_clock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self._sets: dict[str, dict[str, float]] = {}
        self._expires: dict[str, int] = {}
        self._frozen: int | None = None

    @contextlib.contextmanager
    def frozen(self) -> Iterator[int]:
        """One script: atomic, on one reading of the clock."""
        with self.lock:
            self._frozen = now = self.clock()
            try:
                yield now
            finally:
                self._frozen = None

    def now(self) -> int:
        return self.clock() if self._frozen is None else self._frozen

    # -- redis-py's commands ----------------------------------------------------------------------------

    def zadd(self, name: str, mapping: Mapping[str, float], nx: bool = False, xx: bool = False) -> int:
        with self.lock:
            zset = self._live(name)
            if zset is None:
                if xx:
                    return 0
                zset = self._sets[name] = {}
            added = 0
            for member, score in mapping.items():
                exists = member in zset
                if (nx and exists) or (xx and not exists):
                    continue
                zset[member] = float(score)
                added += not exists
            return added

    def zrem(self, name: str, *members: str) -> int:
        with self.lock:
            zset = self._live(name)
            if zset is None:
                return 0
            removed = sum(zset.pop(member, None) is not None for member in members)
            self._drop_if_empty(name)
            return removed

    def zscore(self, name: str, member: str) -> float | None:
        with self.lock:
            return (self._live(name) or {}).get(member)

    def zcard(self, name: str) -> int:
        with self.lock:
            return len(self._live(name) or {})

    def zrange(self, name: str, start: int, end: int, withscores: bool = False) -> list:
        """ZRANGE name start end [WITHSCORES], ascending by (score, member); `end` -1 is the last."""
        with self.lock:
            ordered = sorted((self._live(name) or {}).items(), key=lambda item: (item[1], item[0]))
            chosen = ordered[start:None if end == -1 else end + 1]
            return chosen if withscores else [member for member, _ in chosen]

    def delete(self, *names: str) -> int:
        with self.lock:
            found = 0
            for name in names:
                found += self._sets.pop(name, None) is not None
                self._expires.pop(name, None)
            return found

    def flushdb(self) -> None:
        with self.lock:
            self._sets.clear()
            self._expires.clear()

    def pexpire(self, name: str, ms: float) -> bool:
        with self.lock:
            if self._live(name) is None:
                return False
            if ms <= 0:
                self.delete(name)
            else:
                self._expires[name] = self.now() + int(ms)
            return True

    def pttl(self, name: str) -> int:
        with self.lock:
            if self._live(name) is None:
                return -2
            deadline = self._expires.get(name)
            return -1 if deadline is None else deadline - self.now()

    # -- the rest, as the scripts call them ------------------------------------------------------------

    def zcount(self, name: str, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> int:
        return sum(1 for _ in self._in_range(name, lo, hi, lo_open, hi_open))

    def zremrangebyscore_upto(self, name: str, hi: float) -> None:
        """ZREMRANGEBYSCORE name -inf hi."""
        zset = self._live(name)
        if zset is not None:
            for member in [m for m, s in zset.items() if s <= hi]:
                del zset[member]
            self._drop_if_empty(name)

    def zrevrange(self, name: str, start: int, stop: int) -> list[tuple[str, float]]:
        """ZREVRANGE name start stop WITHSCORES, for start, stop >= 0."""
        ordered = sorted((self._live(name) or {}).items(), key=lambda item: (item[1], item[0]), reverse=True)
        return ordered[start:stop + 1]

    def zrangebyscore_open(self, name: str, lo: float, hi: float, count: int) -> list[tuple[str, float]]:
        """ZRANGEBYSCORE name (lo hi WITHSCORES LIMIT 0 count."""
        return sorted(self._in_range(name, lo, hi, True, False), key=lambda item: (item[1], item[0]))[:count]

    def _in_range(self, name: str, lo: float, hi: float, lo_open: bool, hi_open: bool) -> Iterable[tuple[str, float]]:
        for member, score in (self._live(name) or {}).items():
            if (score > lo if lo_open else score >= lo) and (score < hi if hi_open else score <= hi):
                yield member, score

    def _live(self, name: str) -> dict[str, float] | None:
        deadline = self._expires.get(name)
        if deadline is not None and self.now() > deadline:
            self.delete(name)
        return self._sets.get(name)

    def _drop_if_empty(self, name: str) -> None:
        if not self._sets.get(name, True):
            self.delete(name)


class StubScripts:
    """The Scripts of coldmail.caps.scripts, in memory; `clock` gives the store's time in ms."""

    def __init__(self, clock: Callable[[], int] = redis_clock) -> None:
        #: the sorted sets, with redis-py's names, for tests to look at or set up (as a Redis client)
        self.client = SortedSets(clock)

    def acquire_many(self, requests: Sequence[SlotRequest], *, window_ms: int,
                     need_sentinel: bool = True) -> list[Decision | None]:
        out: list[Decision | None] = []
        with self.client.frozen() as now:
            for r in requests:
                allowed, wait = self._acquire(now, r, window_ms, need_sentinel)
                out.append(decision(allowed, int(wait)))
        return out

    def _acquire(self, now: int, r: SlotRequest, window: int, need_sentinel: bool) -> tuple[int, float]:
        sets, key, plan, limit, member, pace = self.client, r.key, r.plan_key, r.limit, r.member, r.pace_key
        if sets.zscore(key, SENTINEL) is None:
            if need_sentinel:
                return -1, 0
            sets.zadd(key, {SENTINEL: INF})
        count, free, day = 0.0, 0.0, r.day
        if day is not None:
            stored_day = sets.zscore(pace, "day")
            if stored_day is None:
                if need_sentinel:
                    return -1, 0
                stored_day = day
            count = sets.zscore(pace, "count") or 0
            free = sets.zscore(pace, "next") or 0
            if day > stored_day:
                count = 0
            elif day < stored_day:
                day = int(stored_day)
        sets.zremrangebyscore_upto(key, now - window)
        sets.zrem(key, member, PLACEHOLDER + member)
        used = sets.zcard(key) - 1
        if used < limit:
            if day is not None and r.day_limit >= 0 and count >= r.day_limit:
                if plan:
                    sets.zrem(plan, member)
                return 2, 0
            if day is not None and free > now:
                if plan:
                    sets.zadd(plan, {member: free})
                return 3, free - now
            sets.zadd(key, {member: now})
            sets.pexpire(key, window * 2)
            if day is not None:
                sets.zadd(pace, {"day": day, "count": count + 1, "next": now + int(r.after_ms)})
                sets.pexpire(pace, PACE_TTL_MS)
            if plan:
                sets.zrem(plan, member)
            return 1, 0
        [(_, kth)] = sets.zrevrange(key, limit, limit)
        wait = max(1, kth + window - now)
        if plan:
            # refused: it keeps its turn in the plan, at the time its slot frees
            sets.zadd(plan, {member: now + wait})
            if sets.pttl(plan) < wait + window * 2:
                sets.pexpire(plan, wait + window * 2)
        return 0, wait

    def done(self, slots: Sequence[tuple[str, str]]) -> None:
        sets = self.client
        with sets.frozen() as now:
            for key, member in slots:
                if sets.zrem(key, PLACEHOLDER + member) == 1:
                    sets.zadd(key, {member: now})
                else:
                    sets.zadd(key, {member: now}, xx=True)

    def give_back(self, slots: Sequence[tuple[str, str]]) -> None:
        for key, member in slots:
            self.client.zrem(key, member, PLACEHOLDER + member)

    def rebuild(self, key: str, entries: Iterable[tuple[str, int]], *, window_ms: int) -> int:
        sets = self.client
        with sets.frozen() as now:
            for member, at_ms in entries:
                sets.zadd(key, {str(member): now + int(at_ms)}, nx=True)
            sets.zadd(key, {SENTINEL: INF})
            sets.pexpire(key, window_ms * 2)
            return sets.zcard(key) - 1

    def rebuild_pace(self, pace_key: str, *, day: int, count: int, next_ms: int) -> bool:
        sets = self.client
        with sets.frozen() as now:
            if sets.zscore(pace_key, "day") is not None:
                return False
            sets.zadd(pace_key, {"day": day, "count": count, "next": now + int(next_ms)})
            sets.pexpire(pace_key, PACE_TTL_MS)
            return True

    def used(self, keys: Sequence[str], *, window_ms: int) -> list[int | None]:
        counts: list[int | None] = []
        for key in keys:
            with self.client.frozen() as now:
                if self.client.zscore(key, SENTINEL) is None:
                    counts.append(None)
                else:
                    counts.append(self.client.zcount(key, now - window_ms, INF, lo_open=True, hi_open=True))
        return counts

    def plan(self, requests: Sequence[PlanRequest], *, margin_ms: int,
             tolerance_ms: int) -> list[list[int | None] | None]:
        replies: list[list[int | None] | None] = []
        for r in requests:
            with self.client.frozen() as now:
                replies.append(self._plan(now, r, margin_ms, tolerance_ms))
        return replies

    def _plan(self, now: int, r: PlanRequest, margin: int, tolerance: int) -> list[int | None] | None:
        sets, key, plan, limit, window = self.client, r.key, r.plan_key, r.limit, r.window_ms
        gap, day_end = r.gap_ms, now + r.day_left_ms
        if sets.zscore(key, SENTINEL) is None:
            return None
        free, today = 0.0, 0
        if r.day is not None:
            stored_day = sets.zscore(r.pace_key, "day")
            if stored_day is None:
                return None
            free = sets.zscore(r.pace_key, "next") or 0
            if stored_day >= r.day:
                today = int(sets.zscore(r.pace_key, "count") or 0)
        sets.zremrangebyscore_upto(key, now - window)
        sets.zremrangebyscore_upto(plan, now - window)

        def kth(lo: float, hi: float, k: int, member: str) -> float:
            """The k-th earliest slot in (lo, hi], taken or planned, other than `member`'s own."""
            xs = sorted(score for zset in (key, plan) for m, score in sets.zrangebyscore_open(zset, lo, hi, k + 1)
                        if m != member)
            return xs[k - 1]

        out: list[float | None] = []
        by_gap: set[int] = set()
        fresh: dict[int, int] = {}
        for member, due_ms in r.candidates:
            member, due = str(member), now + max(0, int(due_ms))
            at = sets.zscore(plan, member)
            if at is not None and abs(at - due) <= tolerance:
                # planned before: it keeps its place, unless the window it was planned in is full
                lo = _g14(at - window)
                others = (sets.zcount(key, lo, at, lo_open=True) + sets.zcount(plan, lo, at, lo_open=True) - 1)
                if others >= limit:
                    at = kth(lo, at, others - limit + 1, member) + window + margin
                if free > at:
                    by_gap.add(len(out))
                at = max(at, free)
                sets.zadd(plan, {member: at})
                out.append(at - now)
            else:
                sets.zrem(plan, member)
                out.append(None)
                fresh[len(out) - 1] = due
        if r.day_limit >= 0:
            today += sets.zcount(plan, -INF, _g14(day_end), hi_open=True)
        prev = -INF
        if gap > 0:
            top = sets.zrevrange(plan, 0, 0)
            if top:
                prev = top[0][1]
        times: list[float] = []
        if sets.zcard(key) - 1 + sets.zcard(plan) + len(fresh) <= limit:
            # room for all: each goes at its due time
            top = sets.zrevrange(plan, 0, 0)
            last = max(now, top[0][1] if top else now)
        else:
            # the `limit` latest slot times, taken or planned, ascending
            times = sorted(score for _, score in sets.zrevrange(key, 1, limit) + sets.zrevrange(plan, 0, limit - 1))
            times = times[-limit:] if len(times) > limit else times
            last = times[-1] if times else now
        for i, (member, _) in enumerate(r.candidates):
            if i in fresh:
                at = fresh[i]
                if len(times) >= limit:
                    at = max(at, times[len(times) - limit] + window + margin)
                if max(free, prev + gap) > at:
                    by_gap.add(i)
                at = max(at, free, prev + gap)
                if r.day_limit >= 0 and at < day_end and today >= r.day_limit:
                    out[i] = DAY_FULL
                    continue
                if at < day_end:
                    today += 1
                prev = at
                bisect.insort(times, at)
                sets.zadd(plan, {str(member): at})
                out[i] = at - now
                last = max(last, at)
        sets.pexpire(plan, max(1, last - now) + window * 2)
        return [None if x is None else GapSlot(int(x)) if i in by_gap else int(x) for i, x in enumerate(out)]

    def unplan(self, plan_key: str, members: Sequence[str]) -> None:
        if members:
            self.client.zrem(plan_key, *members)

    def unplan_all(self, plan_key: str) -> None:
        self.client.delete(plan_key)
