"""What the recovery sweep asks Redis: did it forget everything, which messages did dead workers
take with them, and is the queue merely busy.

Dramatiq keeps a message a worker fetched in that worker's ack set until it is
done. A worker that dies (SIGKILL, OOM, a lost host) leaves its ack set behind:
the messages it was about to send and the delayed ones it held in memory until
their time. Dramatiq's own recovery moves them back only after a 60 s heartbeat
timeout and then only by chance (0.1 % of broker calls); here the sweep runs the
same maintenance on every pass, with a short timeout, so they go back in seconds.
"""

from __future__ import annotations

import redis
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from dramatiq.common import dq_name

#: a key that exists while Redis remembers what we gave it; gone means it came back empty
ALIVE_KEY = "coldmail:alive"


class QueueRecovery:
    def __init__(self, broker: RedisBroker, *, queue_name: str, dead_worker_s: float) -> None:
        self.client: redis.Redis = broker.client
        self.namespace = broker.namespace
        self.queue_names = (queue_name, dq_name(queue_name))
        # A broker of its own, never used to send: every call it makes runs Dramatiq's maintenance,
        # which takes a worker silent for `heartbeat_timeout` ms for dead. A live worker's consumers
        # poll Redis every WORKER_POLL_MS, and each call refreshes its heartbeat.
        self._maintenance = RedisBroker(
            client=broker.client, namespace=broker.namespace, middleware=[],
            heartbeat_timeout=int(dead_worker_s * 1000), maintenance_chance=MAINTENANCE_SCALE)

    def redis_forgot(self) -> bool:
        """True while Redis has lost its data (restart, flush): everything handed over must go again.

        Call `remember()` once that is done, so that a failure on the way is tried again.
        """
        return not self.client.exists(ALIVE_KEY)

    def remember(self) -> None:
        self.client.set(ALIVE_KEY, "1")

    def requeue_from_dead_workers(self) -> None:
        """Put the messages that dead workers had fetched back on their queues (delayed ones keep their time)."""
        for name in self.queue_names:
            self._maintenance.do_qsize(name)

    def waiting(self) -> int:
        """Messages in Redis that no worker has fetched yet: a busy queue, not a lossy one."""
        pipe = self.client.pipeline(transaction=False)
        for name in self.queue_names:
            pipe.llen(f"{self.namespace}:{name}")
        return sum(pipe.execute())
