"""The one place emails are given to Dramatiq: at most a horizon ahead of their time, with `delay`."""

from __future__ import annotations

import logging
import time

import dramatiq
import redis

log = logging.getLogger(__name__)

#: after a failed hand-over, requests leave hand-overs to the scheduler for this long
QUIET_AFTER_FAILURE_S = 5.0


class HandOver:
    def __init__(self, actor: dramatiq.Actor) -> None:
        self.actor = actor
        self.broker = actor.broker
        self._quiet_until = 0.0

    def send(self, items: list[tuple[int, int]], *, probe: bool = False) -> list[int]:
        """Enqueue (email id, delay ms) pairs; return the ids that could not be enqueued.

        Delays count from the call, so the last of a long batch is not late by the
        time the first ones took. After a failure, calls return at once with every id
        for QUIET_AFTER_FAILURE_S: a hung Redis costs one request one timeout, not
        every request. The scheduler passes `probe=True`: it tries anyway, and its
        success ends the quiet time.
        """
        if not probe and time.monotonic() < self._quiet_until:
            return [email_id for email_id, _ in items]
        started = time.monotonic()
        for position, (email_id, delay_ms) in enumerate(items):
            delay_ms -= int((time.monotonic() - started) * 1000)
            try:
                self.actor.send_with_options(args=(email_id,), delay=delay_ms if delay_ms > 0 else None)
            except (redis.RedisError, dramatiq.errors.BrokerError, OSError) as e:
                self._quiet_until = time.monotonic() + QUIET_AFTER_FAILURE_S
                log.warning("hand-over to Redis failed (%s); %d email(s) left for the scheduler",
                            e, len(items) - position)
                return [email_id for email_id, _ in items[position:]]
        self._quiet_until = 0.0
        return []
