"""The one place emails are given to Dramatiq: at most a horizon ahead of their time, with `delay`,
those due together in one message."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import dramatiq
import redis

if TYPE_CHECKING:
    from ..caps import Caps

log = logging.getLogger(__name__)

#: after a failed hand-over, requests leave hand-overs to the scheduler for this long
QUIET_AFTER_FAILURE_S = 5.0


class HandOver:
    def __init__(self, actor: dramatiq.Actor, *, caps: Caps, lead_ms: int = 0, batch: int = 1,
                 spread_ms: int = 0) -> None:
        self.actor = actor
        #: messages are released this much before their time (Settings.handover_lead_ms)
        self.lead_ms = lead_ms
        #: emails due at most `spread_ms` apart go in one message, up to `batch` of them (Settings.send_batch)
        self.batch = batch
        self.spread_ms = spread_ms
        self.broker = actor.broker
        #: the senders' caps: what is handed over is planned under them first
        self.caps = caps
        self._quiet_until = 0.0

    def send_planned(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[tuple[int, int]]]:
        """Rows a request stored and marked queued (`id`, `sender_id`, `delay_ms`): enqueue those their
        senders' caps allow by their time. Return the ids not enqueued (Redis failed, or their slot is not
        near yet), and the (id, delay ms) over their sender's cap, to be moved to when their slot frees;
        both go back to the scheduler."""
        if not rows:
            return [], []
        if time.monotonic() < self._quiet_until:
            return [row["id"] for row in rows], []
        try:
            plan = self.caps.plan(rows)
        except redis.RedisError as e:
            self._quiet_until = time.monotonic() + QUIET_AFTER_FAILURE_S
            log.warning("send caps unreachable on Redis (%s); %d email(s) left for the scheduler", e, len(rows))
            return [row["id"] for row in rows], []
        return self.send(plan.go) + plan.wait, plan.later

    def send(self, items: list[tuple[int, int]], *, probe: bool = False) -> list[int]:
        """Enqueue (email id, delay ms) pairs, soonest first; return the ids that could not be enqueued.

        Emails due together share a message (see `messages`). Delays count from the
        call, so the last of a long batch is not late by the time the first ones took,
        and end `lead_ms` early: the worker waits out the rest. After a failure, calls
        return at once with every id for QUIET_AFTER_FAILURE_S: a hung Redis costs one
        request one timeout, not every request. The scheduler passes `probe=True`: it
        tries anyway, and its success ends the quiet time.
        """
        if not probe and time.monotonic() < self._quiet_until:
            return [email_id for email_id, _ in items]
        started = time.monotonic()
        groups = self.messages(items)
        for position, (ids, delay_ms) in enumerate(groups):
            delay_ms -= int((time.monotonic() - started) * 1000) + self.lead_ms
            try:
                self.actor.send_with_options(args=tuple(ids), delay=delay_ms if delay_ms > 0 else None)
            except (redis.RedisError, dramatiq.errors.BrokerError, OSError) as e:
                self._quiet_until = time.monotonic() + QUIET_AFTER_FAILURE_S
                left = [email_id for ids, _ in groups[position:] for email_id in ids]
                log.warning("hand-over to Redis failed (%s); %d email(s) left for the scheduler", e, len(left))
                return left
        self._quiet_until = 0.0
        return []

    def messages(self, items: list[tuple[int, int]]) -> list[tuple[list[int], int]]:
        """Group (email id, delay ms) pairs into (ids, delay of the first) messages, soonest first: at most
        `batch` ids, due at most `spread_ms` after the message's first."""
        groups: list[tuple[list[int], int]] = []
        for email_id, delay_ms in sorted(items, key=lambda item: item[1]):
            if groups and len(groups[-1][0]) < self.batch and delay_ms - groups[-1][1] <= self.spread_ms:
                groups[-1][0].append(email_id)
            else:
                groups.append(([email_id], delay_ms))
        return groups
