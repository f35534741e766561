"""Sliding-window send caps on Redis: one atomic script call per acquire, well under a millisecond.

Each capped key is a sorted set of the email ids that took a slot, scored by
the time (ms, Redis's clock) they took or finished it, plus a sentinel member
scored +inf that says "this set is complete". A set without its sentinel was
lost (Redis restarted empty, or it expired while idle): the caller rebuilds it
from PostgreSQL, the source of truth, before anyone is let through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from dramatiq.rate_limits import RateLimiter
from dramatiq.rate_limits.backends import RedisBackend

SENTINEL = "~complete"

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window, member, need_sentinel = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
if redis.call('ZSCORE', KEYS[1], ARGV[5]) == false then
    if need_sentinel then return {-1, 0} end
    redis.call('ZADD', KEYS[1], 'inf', ARGV[5])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], member) ~= false then return {1, 0} end
local used = redis.call('ZCARD', KEYS[1]) - 1
if used < limit then
    redis.call('ZADD', KEYS[1], now, member)
    redis.call('PEXPIRE', KEYS[1], window * 2)
    return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, used - limit, 'WITHSCORES')
return {0, math.max(1, tonumber(oldest[#oldest]) + window - now)}
"""

_TOUCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
"""

_REBUILD = """
redis.call('ZADD', KEYS[1], 'inf', ARGV[2])
for i = 3, #ARGV, 2 do
    redis.call('ZADD', KEYS[1], 'NX', ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return redis.call('ZCARD', KEYS[1]) - 1
"""

_USAGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) == false then return -1 end
return redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]), '(inf')
"""


_registered: dict[int, tuple] = {}


def _scripts(client) -> tuple:
    """The four scripts, registered once per Redis client (registering hashes the source)."""
    scripts = _registered.get(id(client))
    if scripts is None:
        scripts = tuple(client.register_script(src) for src in (_ACQUIRE, _REBUILD, _TOUCH, _USAGE))
        _registered[id(client)] = scripts
    return scripts


@dataclass(frozen=True)
class Decision:
    allowed: bool
    wait_ms: int = 0


class SlidingWindowRateLimiter(RateLimiter):
    """At most `limit` members in any `window_ms`, per key, across every process sharing the Redis.

    `rebuild` returns the (member, score_ms) pairs of the current window from
    the source of truth; it is called when the set was lost. Pass None for
    keys whose loss is harmless (a one-second global cap).
    """

    def __init__(self, backend: RedisBackend, key: str, *, limit: int, window_ms: int, member: str,
                 rebuild: Callable[[], Iterable[tuple[str, int]]] | None = None) -> None:
        super().__init__(backend, key)
        self.limit = limit
        self.window_ms = window_ms
        self.member = member
        self.rebuild = rebuild
        self._acquire_script, self._rebuild_script, self._touch_script, self._usage_script = _scripts(backend.client)

    def decide(self) -> Decision:
        """Take a slot for `member` if the window has one; otherwise say how long until one frees."""
        need = "1" if self.rebuild is not None else "0"
        args = [self.limit, self.window_ms, self.member, need, SENTINEL]
        allowed, wait_ms = self._acquire_script(keys=[self.key], args=args)
        if allowed == -1:
            self.restore()
            allowed, wait_ms = self._acquire_script(keys=[self.key], args=args)
        return Decision(allowed == 1, int(wait_ms))

    def restore(self) -> int:
        """Put back the window's members from the source of truth; return how many are in it."""
        args: list = [self.window_ms, SENTINEL]
        for member, score_ms in self.rebuild() if self.rebuild else ():
            args.extend((int(score_ms), str(member)))
        return int(self._rebuild_script(keys=[self.key], args=args))

    def mark_done(self) -> None:
        """The send finished: the slot counts from now, so arrivals, not just starts, keep the spacing."""
        self._touch_script(keys=[self.key], args=[self.member])

    def give_back(self) -> None:
        """The send did not happen: free the slot."""
        self.backend.client.zrem(self.key, self.member)

    def used(self) -> int | None:
        """Slots taken in the current window, or None if the set was lost."""
        count = int(self._usage_script(keys=[self.key], args=[self.window_ms, SENTINEL]))
        return None if count < 0 else count

    def _acquire(self) -> bool:
        return self.decide().allowed

    def _release(self) -> None:
        """A slot is spent by a send, not given back when the block ends."""
