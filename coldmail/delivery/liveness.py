"""Which worker processes are alive: each one beats in Redis; the sweep frees the leases of the silent.

A worker process names itself (`worker_id()`), puts that name on every claim it
makes (emails.worker_id) and beats once a second in one sorted set, scored with
Redis's clock so that hosts' clocks do not matter. The sweep asks which lease
holders are silent for DEAD_WORKER_SECONDS and ends their leases at once,
instead of LEASE_SECONDS after the claim.

Its own beat rather than Dramatiq's: a worker beats in Dramatiq's set only when
its consumers call Redis, and a worker whose threads are all inside slow SMTP
conversations, its prefetch full, may not call for longer than that; its claims
are alive, and taking them back would send those emails twice.

Only a beat that is there and old says dead. One that is missing (Redis came
back empty) says nothing: such leases wait out LEASE_SECONDS as before.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

import redis

log = logging.getLogger(__name__)

#: member: worker id; score: its last beat, in ms of Redis's clock
BEATS_KEY = "coldmail:workers:beats"

_BEAT = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[1])
"""

# KEYS[1]: beats; ARGV[1]: silent this long (ms) is dead; ARGV[2]: forget beats this old (ms); ARGV[3..]: ids
_SILENT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local dead = {}
for i = 3, #ARGV do
    local beat = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if beat and tonumber(beat) < now - tonumber(ARGV[1]) then
        dead[#dead + 1] = ARGV[i]
    end
end
return dead
"""


def worker_id() -> str:
    """A name for this worker process that no other process, here or on another host, will have."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat:
    """Beats for `worker` every `every_s` on a thread of its own, from `start()` until `stop()`."""

    def __init__(self, client: redis.Redis, worker: str, *, every_s: float) -> None:
        self.worker = worker
        self.every_s = every_s
        self._beat = client.register_script(_BEAT)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        self._beat(keys=[BEATS_KEY], args=[self.worker])

    def start(self) -> None:
        try:
            self.beat()  # before the first claim, so that a worker that holds a lease has a beat
        except redis.RedisError as e:
            log.warning("worker heartbeat not written (Redis: %s)", e)
        self._thread = threading.Thread(target=self._run, name="coldmail-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self.every_s):
            try:
                self.beat()
            except redis.RedisError as e:
                log.warning("worker heartbeat not written (Redis: %s)", e)


def beat_interval_s(dead_worker_s: float) -> float:
    """Several beats per DEAD_WORKER_SECONDS, so a missed one or two never makes a live worker look dead."""
    return min(1.0, dead_worker_s / 4)


class Liveness:
    """The sweep's question to Redis: which of these lease holders are dead?"""

    def __init__(self, client: redis.Redis, *, dead_worker_s: float, forget_after_s: float) -> None:
        self._silent = client.register_script(_SILENT)
        self.dead_ms = int(dead_worker_s * 1000)
        self.forget_ms = int(forget_after_s * 1000)

    def dead(self, workers: list[str]) -> list[str]:
        """The workers among `workers` whose last beat is older than DEAD_WORKER_SECONDS. Asks Redis even for
        none: the sweep learns from it whether Redis is reachable."""
        found = self._silent(keys=[BEATS_KEY], args=[self.dead_ms, self.forget_ms, *workers])
        return [w.decode() if isinstance(w, bytes) else w for w in found]
