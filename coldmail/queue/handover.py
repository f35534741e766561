"""The one place emails are given to Dramatiq: at most a horizon ahead of their time, with `delay`."""

from __future__ import annotations

import logging

import dramatiq
import redis

log = logging.getLogger(__name__)

#: a key that exists while Redis remembers what we gave it; gone means it came back empty
ALIVE_KEY = "coldmail:alive"


class HandOver:
    def __init__(self, actor: dramatiq.Actor) -> None:
        self.actor = actor
        self.client: redis.Redis = actor.broker.client

    def send(self, items: list[tuple[int, int]]) -> list[int]:
        """Enqueue (email id, delay ms) pairs; return the ids that could not be enqueued."""
        failed: list[int] = []
        for position, (email_id, delay_ms) in enumerate(items):
            try:
                self.actor.send_with_options(args=(email_id,), delay=delay_ms if delay_ms > 0 else None)
            except (redis.RedisError, dramatiq.errors.BrokerError, OSError) as e:
                log.warning("hand-over to Redis failed (%s); %d email(s) left for the scheduler",
                            e, len(items) - position)
                failed.extend(email_id for email_id, _ in items[position:])
                break
        return failed

    def redis_forgot(self) -> bool:
        """True once after Redis lost its data (restart, flush): everything handed over must go again."""
        return bool(self.client.set(ALIVE_KEY, "1", nx=True))
