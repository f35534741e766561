"""At most SENDER_CONCURRENCY sends of one sender in flight across every worker, so that one sender's slow
relay cannot take every worker thread while the other senders' emails wait.

A send holds a slot in a sorted set per sender in Redis, from just before its
SMTP conversation to just after. The slot names the worker process
(coldmail.delivery.liveness), so the slots of a worker that died are freed as
soon as it is known dead; a slot also ends a lease after it was taken, whatever
happens. A send waits a moment for a slot (a relay that answers in
milliseconds frees one by then, and its emails are not claimed twice); an email
whose sender still has every slot taken is given back unsent (no attempt
spent) and goes again shortly.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from .liveness import BEATS_KEY

log = logging.getLogger(__name__)

#: how long a send waits for its sender's slot before its email is given back, and how often it looks
WAIT_S = 0.25
POLL_S = 0.01

# KEYS[1]: the sender's slots; KEYS[2]: the workers' beats
# ARGV: slot (worker id|email id), limit, slot lifetime (ms), a worker silent this long (ms) is dead
_TAKE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(ARGV[2])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= limit then
    for _, slot in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
        local beat = redis.call('ZSCORE', KEYS[2], string.match(slot, '^(.*)|'))
        if beat and tonumber(beat) < now - tonumber(ARGV[4]) then
            redis.call('ZREM', KEYS[1], slot)
        end
    end
    if redis.call('ZCARD', KEYS[1]) >= limit then
        return 0
    end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class InFlight:
    """Sender slots for one worker process (`worker`)."""

    def __init__(self, client: redis.Redis, *, worker: str, limit: int, lifetime_s: float,
                 dead_worker_s: float) -> None:
        self.client = client
        self.worker = worker
        self.limit = limit
        self.lifetime_ms = int(lifetime_s * 1000)
        self.dead_ms = int(dead_worker_s * 1000)
        self._take = client.register_script(_TAKE)

    @staticmethod
    def key(account: str, sender_id: str) -> str:
        """An account's sender's slots (`/` is in neither an account name nor a sender id)."""
        return f"coldmail:inflight:sender:{account}/{sender_id}"

    def wait_for_slot(self, account: str, sender_id: str, email_id: int, *, stopping: threading.Event) -> bool:
        """A slot for sending `email_id`, waiting up to WAIT_S for one; False when none came (or the worker
        began to stop)."""
        give_up_at = time.monotonic() + WAIT_S
        while not self.take(account, sender_id, email_id):
            if time.monotonic() >= give_up_at or stopping.wait(POLL_S):
                return False
        return True

    def take(self, account: str, sender_id: str, email_id: int) -> bool:
        """A slot for sending `email_id` now; False when the sender's sends in flight are at the limit. When
        Redis fails the send goes on: this bound is for fairness, and the caps' check already passed."""
        try:
            return bool(self._take(keys=[self.key(account, sender_id), BEATS_KEY],
                                   args=[self._slot(email_id), self.limit, self.lifetime_ms, self.dead_ms]))
        except redis.RedisError as e:
            log.warning("sender %r: sends in flight not counted (Redis: %s)", sender_id, e)
            return True

    def give_back(self, account: str, sender_id: str, email_id: int) -> None:
        """The send is over (sent or failed): its slot is free."""
        try:
            self.client.zrem(self.key(account, sender_id), self._slot(email_id))
        except redis.RedisError as e:
            log.warning("sender %r: send slot not freed (Redis: %s); it ends by itself", sender_id, e)

    def _slot(self, email_id: int) -> str:
        return f"{self.worker}|{email_id}"
