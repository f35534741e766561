"""Sliding-window send caps on Redis: one atomic script call per acquire, well under a millisecond.

Per capped key, a sorted set holds the email ids that took a slot, scored by
when (ms, Redis's clock) they took it, and by when they finished once sent: a
slot counts from the send's start and again from its end, so the cap holds by
arrival at the relay, not only by start. A sentinel member scored +inf says "this
set is complete": a set without it was lost (Redis restarted empty, or it expired
while idle), and the caller rebuilds it from PostgreSQL before anyone goes on.

A second sorted set per key holds the plan of the hand-over: the emails given to
Dramatiq but not yet sending, at their due time, and those held back, at the
time their slot frees. Planning never lets anything through (only acquire does);
it spaces the emails out so that acquire rarely has to say no.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import redis
from dramatiq.rate_limits import RateLimiter
from dramatiq.rate_limits.backends import RedisBackend

SENTINEL = "~complete"
#: a rebuilt set marks the sends under way (SENDING rows) with this prefix: their own acquire
#: may still be to come, and must count them once (the scripts spell it out too)
PLACEHOLDER = "claim:"

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# One slot for `member` under `limit` in `window` ms on the set `key`; `plan` is its hand-over plan (or nil).
# Returns (1, 0) taken, (0, ms until a slot frees) refused, (-1, 0) the set was lost (no sentinel).
_ACQUIRE_FN = """
local function acquire(now, key, plan, limit, window, member, need_sentinel, sentinel)
    if redis.call('ZSCORE', key, sentinel) == false then
        if need_sentinel == '1' then return -1, 0 end
        redis.call('ZADD', key, 'inf', sentinel)
    end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    redis.call('ZREM', key, member, 'claim:' .. member)
    local used = redis.call('ZCARD', key) - 1
    if used < limit then
        redis.call('ZADD', key, now, member)
        redis.call('PEXPIRE', key, window * 2)
        if plan then redis.call('ZREM', plan, member) end
        return 1, 0
    end
    local kth = redis.call('ZREVRANGE', key, limit, limit, 'WITHSCORES')
    local wait = math.max(1, tonumber(kth[2]) + window - now)
    if plan then
        -- refused: it keeps its turn in the plan, at the time its slot frees
        redis.call('ZADD', plan, now + wait, member)
        if redis.call('PTTL', plan) < wait + window * 2 then redis.call('PEXPIRE', plan, wait + window * 2) end
    end
    return 0, wait
end
"""

# KEYS: set, and its plan if it has one. ARGV: limit, window ms, member, sentinel required ('1'/'0'), sentinel.
_ACQUIRE = _NOW + _ACQUIRE_FN + """
local allowed, wait = acquire(now, KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5])
return {allowed, wait}
"""

# KEYS: (set, plan) per member. ARGV: window ms, sentinel required ('1'/'0'), sentinel, then (limit, member)
# pairs. Returns (allowed, wait) pairs, flat.
_ACQUIRE_MANY = _NOW + _ACQUIRE_FN + """
local out = {}
for i = 1, #KEYS / 2 do
    local allowed, wait = acquire(now, KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[1]),
                                  ARGV[3 + 2 * i], ARGV[2], ARGV[3])
    out[#out + 1] = allowed
    out[#out + 1] = wait
end
return out
"""

# KEYS: sets; ARGV: a member for each. The sends finished: each slot counts from now.
_DONE = _NOW + """
for i = 1, #KEYS do
    if redis.call('ZREM', KEYS[i], 'claim:' .. ARGV[i]) == 1 then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
    else
        redis.call('ZADD', KEYS[i], 'XX', now, ARGV[i])
    end
end
return #KEYS
"""

# ARGV: window ms, sentinel, then (ms relative to now, member) pairs.
_REBUILD = _NOW + """
for i = 3, #ARGV, 2 do
    redis.call('ZADD', KEYS[1], 'NX', now + tonumber(ARGV[i]), ARGV[i + 1])
end
redis.call('ZADD', KEYS[1], 'inf', ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return redis.call('ZCARD', KEYS[1]) - 1
"""

_USED = _NOW + """
if redis.call('ZSCORE', KEYS[1], ARGV[2]) == false then return -1 end
return redis.call('ZCOUNT', KEYS[1], '(' .. (now - tonumber(ARGV[1])), '(inf')
"""

# KEYS: set, plan. ARGV: limit, window ms, margin ms, tolerance ms, sentinel, then (member, due in ms)
# pairs in due order. Returns -1 if the set was lost, else each member's planned time (ms from now).
_PLAN = _NOW + """
local key, plan = KEYS[1], KEYS[2]
local limit, window, margin, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('ZSCORE', key, ARGV[5]) == false then return -1 end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', plan, '-inf', now - window)
-- the k-th earliest slot in (lo, hi], taken or planned, other than `member`'s own
local function kth(lo, hi, k, member)
    local xs = {}
    for _, set in ipairs({key, plan}) do
        local r = redis.call('ZRANGEBYSCORE', set, '(' .. lo, hi, 'WITHSCORES', 'LIMIT', 0, k + 1)
        for j = 1, #r, 2 do
            if r[j] ~= member then xs[#xs + 1] = tonumber(r[j + 1]) end
        end
    end
    table.sort(xs)
    return xs[k]
end
local out, fresh = {}, {}
for i = 6, #ARGV, 2 do
    local member, due = ARGV[i], now + math.max(0, tonumber(ARGV[i + 1]))
    local at = redis.call('ZSCORE', plan, member)
    if at and math.abs(tonumber(at) - due) <= tolerance then
        -- planned before: it keeps its place, unless the sends before it went late and the window it
        -- was planned in is full; then it goes as soon after as that window allows
        at = tonumber(at)
        local lo = at - window
        local others = redis.call('ZCOUNT', key, '(' .. lo, at) + redis.call('ZCOUNT', plan, '(' .. lo, at) - 1
        if others >= limit then
            at = kth(lo, at, others - limit + 1, member) + window + margin
            redis.call('ZADD', plan, at, member)
        end
        out[#out + 1] = at - now
    else
        redis.call('ZREM', plan, member)
        out[#out + 1] = false
        fresh[#out] = due
    end
end
local nfresh = 0
for _ in pairs(fresh) do nfresh = nfresh + 1 end
local times, last = {}, now
if redis.call('ZCARD', key) - 1 + redis.call('ZCARD', plan) + nfresh <= limit then
    -- room in the window for every slot taken or planned and these: each goes at its due time, without
    -- reading the window's times (a sender with a high limit has thousands)
    local top = redis.call('ZREVRANGE', plan, 0, 0, 'WITHSCORES')
    last = math.max(now, tonumber(top[2] or now))
else
    -- the `limit` latest slot times, taken or planned, ascending
    for _, source in ipairs({redis.call('ZREVRANGE', key, 1, limit, 'WITHSCORES'),
                             redis.call('ZREVRANGE', plan, 0, limit - 1, 'WITHSCORES')}) do
        for j = 2, #source, 2 do times[#times + 1] = tonumber(source[j]) end
    end
    table.sort(times)
    if #times > limit then
        local kept = {}
        for j = #times - limit + 1, #times do kept[#kept + 1] = times[j] end
        times = kept
    end
    last = times[#times] or now
end
for i = 1, #out do
    local due = fresh[i]
    if due then
        local at = due
        if #times >= limit then at = math.max(due, times[#times - limit + 1] + window + margin) end
        local lo, hi = 1, #times + 1
        while lo < hi do
            local mid = math.floor((lo + hi) / 2)
            if times[mid] <= at then lo = mid + 1 else hi = mid end
        end
        table.insert(times, lo, at)
        redis.call('ZADD', plan, at, ARGV[4 + 2 * i])
        out[i] = at - now
        if at > last then last = at end
    end
end
redis.call('PEXPIRE', plan, math.max(1, last - now) + window * 2)
return out
"""


class Scripts:
    """The scripts registered on one Redis client: build once per client, share between limiters."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.acquire = client.register_script(_ACQUIRE)
        self.acquire_many = client.register_script(_ACQUIRE_MANY)
        self.done = client.register_script(_DONE)
        self.rebuild = client.register_script(_REBUILD)
        self.used = client.register_script(_USED)
        self.plan = client.register_script(_PLAN)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    wait_ms: int = 0


class SlidingWindowRateLimiter(RateLimiter):
    """At most `limit` members in any `window_ms`, per key, across every process sharing the Redis.

    `member` is what takes the slot (an email id): acquiring again moves its one
    slot to now, so a repeated acquire never takes two. `rebuild` returns the
    window's (member, ms relative to now) pairs from the source of truth, and is
    called when the set was lost; pass None where a loss is harmless (a one-second
    global cap). `plan_key` is the key's hand-over plan: acquire takes the member out of it, or,
    refusing, moves it there to when its slot frees, so that it keeps its turn.
    """

    def __init__(self, backend: RedisBackend, key: str, *, limit: int, window_ms: int, member: str,
                 plan_key: str | None = None, rebuild: Callable[[], Iterable[tuple[str, int]]] | None = None,
                 scripts: Scripts | None = None) -> None:
        super().__init__(backend, key)
        self.limit = limit
        self.window_ms = window_ms
        self.member = member
        self.keys = [key, plan_key] if plan_key else [key]
        self.rebuild = rebuild
        self.scripts = scripts or Scripts(backend.client)

    def decide(self) -> Decision:
        """Take a slot for `member` if the window has one; otherwise say in how many ms one frees."""
        args = [self.limit, self.window_ms, self.member, "1" if self.rebuild else "0", SENTINEL]
        allowed, wait_ms = self.scripts.acquire(keys=self.keys, args=args)
        if allowed == -1:
            self.restore()
            allowed, wait_ms = self.scripts.acquire(keys=self.keys, args=args)
        return Decision(allowed == 1, int(wait_ms))

    def restore(self) -> int:
        """Put back the window's members from the source of truth; return how many are in it."""
        return restore(self.scripts, self.key, self.rebuild() if self.rebuild else (), window_ms=self.window_ms)

    def mark_done(self) -> None:
        """The send finished: its slot counts from now, so arrivals, not only starts, keep the spacing."""
        mark_done(self.scripts, [(self.key, self.member)])

    def give_back(self) -> None:
        """The send did not happen: free the slot."""
        give_back(self.scripts, [(self.key, self.member)])

    def used(self) -> int | None:
        """Slots taken in the current window, or None if the set was lost."""
        count = int(self.scripts.used(keys=[self.key], args=[self.window_ms, SENTINEL]))
        return None if count < 0 else count

    def _acquire(self) -> bool:
        return self.decide().allowed

    def _release(self) -> None:
        """A slot is spent by a send, not given back when the block ends."""


@dataclass(frozen=True)
class SlotRequest:
    """A slot for `member` on `key` (whose hand-over plan is `plan_key`), at most `limit` per window."""

    key: str
    plan_key: str
    limit: int
    member: str


def acquire_many(scripts: Scripts, requests: Sequence[SlotRequest], *, window_ms: int) -> list[Decision | None]:
    """Take a slot for each request, in order, in one script call; None for one whose set was lost
    (rebuild it, then ask again)."""
    keys: list[str] = []
    args: list = [window_ms, "1", SENTINEL]
    for r in requests:
        keys.extend((r.key, r.plan_key))
        args.extend((r.limit, r.member))
    flat = scripts.acquire_many(keys=keys, args=args)
    return [None if allowed == -1 else Decision(allowed == 1, int(wait))
            for allowed, wait in zip(flat[::2], flat[1::2])]


def mark_done(scripts: Scripts, slots: Sequence[tuple[str, str]]) -> None:
    """(key, member) slots whose sends finished: each counts from now, in one script call."""
    if slots:
        scripts.done(keys=[key for key, _ in slots], args=[member for _, member in slots])


def give_back(scripts: Scripts, slots: Sequence[tuple[str, str]]) -> None:
    """(key, member) slots whose sends did not happen: free them, in one round trip."""
    if slots:
        pipe = scripts.client.pipeline(transaction=False)
        for key, member in slots:
            pipe.zrem(key, member, PLACEHOLDER + member)
        pipe.execute()


def restore(scripts: Scripts, key: str, entries: Iterable[tuple[str, int]], *, window_ms: int) -> int:
    """Rebuild a lost set from (member, ms relative to now) pairs and mark it complete."""
    args: list = [window_ms, SENTINEL]
    for member, at_ms in entries:
        args.extend((int(at_ms), str(member)))
    return int(scripts.rebuild(keys=[key], args=args))


@dataclass(frozen=True)
class PlanRequest:
    """One key's candidates for the hand-over, in due order: (member, ms until due)."""

    key: str
    plan_key: str
    limit: int
    window_ms: int
    candidates: Sequence[tuple[str, int]]


def plan_slots(scripts: Scripts, requests: Sequence[PlanRequest], *, margin_ms: int,
               tolerance_ms: int) -> list[list[int] | None]:
    """Plan every request's candidates in one pipelined round trip; None for a key whose set was lost.

    Each candidate gets the ms from now at which it may go: its due time if the
    window allows it then (or a time it was planned before, within `tolerance_ms`
    of that), else `margin_ms` after the time a slot frees behind everything
    already taken or planned. Later candidates queue behind earlier ones.
    """
    pipe = scripts.client.pipeline(transaction=False)
    for r in requests:
        args: list = [r.limit, r.window_ms, margin_ms, tolerance_ms, SENTINEL]
        for member, due_ms in r.candidates:
            args.extend((str(member), int(due_ms)))
        scripts.plan(keys=[r.key, r.plan_key], args=args, client=pipe)
    return [None if reply == -1 else [int(x) for x in reply] for reply in pipe.execute()]


def used_in_window(scripts: Scripts, keys: Sequence[str], *, window_ms: int) -> list[int | None]:
    """Slots taken per key in the current window, in one round trip; None where the set was lost."""
    pipe = scripts.client.pipeline(transaction=False)
    for key in keys:
        scripts.used(keys=[key], args=[window_ms, SENTINEL], client=pipe)
    return [None if int(n) < 0 else int(n) for n in pipe.execute()]
