"""The one place emails are given to Dramatiq: at most a horizon ahead of their time, with `delay`,
those due together in one message.

Requests do not plan and enqueue their emails themselves: they leave them to a
thread that gathers what concurrent requests stored over a couple of
milliseconds, so that a request answers once its row is committed, and emails
due together travel in one message even when each request brings one (a worker
then claims, caps and records them together).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import dramatiq
import redis

if TYPE_CHECKING:
    from ..caps import Caps

log = logging.getLogger(__name__)

#: after a failed hand-over, requests leave hand-overs to the scheduler for this long
QUIET_AFTER_FAILURE_S = 5.0
#: how long the first of the requests' emails waits for others to share its plan and messages
GATHER_S = 0.002


class HandOver:
    def __init__(self, actor: dramatiq.Actor, *, caps: Caps, lead_ms: int = 0, batch: int = 1,
                 spread_ms: int = 0,
                 back_to_scheduler: Callable[[list[int], list[tuple]], None] | None = None) -> None:
        self.actor = actor
        #: given requests' emails not handed over (ids: Redis failed, or their slot is not near) and those
        #: over their sender's cap ((id, delay ms) until their slot frees; (id, delay ms, reason, instant or None) when
        #: moved for another reason of its pacing): the scheduler's from then on
        self.back_to_scheduler = back_to_scheduler
        #: messages are released this much before their time (Settings.handover_lead_ms)
        self.lead_ms = lead_ms
        #: emails due at most `spread_ms` apart go in one message, up to `batch` of them (Settings.send_batch)
        self.batch = batch
        self.spread_ms = spread_ms
        self.broker = actor.broker
        #: the senders' caps: what is handed over is planned under them first
        self.caps = caps
        self._quiet_until = 0.0
        #: requests' rows, and when they came, waiting for the gathering thread
        self._gathered: list[tuple[Mapping[str, Any], float]] = []
        self._gathering = threading.Condition()
        self._gatherer: threading.Thread | None = None
        self._close_at_exit = False

    def send_planned(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rows a request stored and marked queued (`id`, `account`, `sender_id`, `delay_ms`, maybe
        `hourly_limit`): to be planned under their senders' caps and enqueued by their time, with other
        requests' rows, after the request has its answer. Never blocks: the gathering thread does the rest, and gives
        what it cannot hand over back to the scheduler (`back_to_scheduler`)."""
        if not rows:
            return
        now = time.monotonic()
        with self._gathering:
            if self._gatherer is None:
                self._gatherer = threading.Thread(target=self._gather, name="coldmail-handover", daemon=True)
                self._gatherer.start()
                if not self._close_at_exit:
                    atexit.register(self.close)
                    self._close_at_exit = True
            self._gathered.extend((row, now) for row in rows)
            self._gathering.notify()

    def _gather(self) -> None:
        """Plan and enqueue what requests stored, GATHER_S after the first of it (more comes in meanwhile),
        in one pass for all of it: one plan call, messages of emails due together."""
        while True:
            with self._gathering:
                while not self._gathered:
                    if self._gatherer is None:
                        return
                    self._gathering.wait()
            if time.monotonic() >= self._quiet_until:
                time.sleep(GATHER_S)
            with self._gathering:
                gathered, self._gathered = self._gathered, []
            self._hand_over(gathered)

    def _hand_over(self, gathered: list[tuple[Mapping[str, Any], float]]) -> None:
        """Plan gathered rows (delays counted from now) and enqueue what may go; the rest, or everything if
        Redis fails, back to the scheduler."""
        planned_at = time.monotonic()
        rows = sorted(({**row, "delay_ms": max(0, row["delay_ms"] - int((planned_at - at) * 1000))}
                       for row, at in gathered), key=lambda row: (row["delay_ms"], row["id"]))
        plan = None
        if time.monotonic() >= self._quiet_until:  # in the quiet time after a Redis failure, straight back
            try:
                plan = self.caps.plan(rows)
            except redis.RedisError as e:
                self._quiet_until = time.monotonic() + QUIET_AFTER_FAILURE_S
                log.warning("send caps unreachable on Redis (%s); %d email(s) left for the scheduler", e, len(rows))
            except Exception:
                log.exception("planning %d email(s) failed; left for the scheduler", len(rows))
        if plan is None:
            self._back([row["id"] for row in rows], [])
        else:
            later = [(i, ms, plan.reasons[i], plan.at.get(i)) if i in plan.reasons else (i, ms)
                     for i, ms in plan.later]
            self._back(self.send(plan.go, since=planned_at) + plan.wait, later)

    def _back(self, ids: list[int], later: list[tuple]) -> None:
        if (ids or later) and self.back_to_scheduler is not None:
            try:
                self.back_to_scheduler(ids, later)
            except Exception:
                log.exception("%d email(s) not handed over, and not given back to the scheduler either: the "
                              "sweep hands them over again after REQUEUE_AFTER_SECONDS", len(ids) + len(later))

    def close(self) -> None:
        """Enqueue what is gathered, then stop the gathering thread."""
        with self._gathering:
            gatherer, self._gatherer = self._gatherer, None
            self._gathering.notify()
        if gatherer is not None and gatherer is not threading.current_thread():
            gatherer.join(timeout=10)

    def send(self, items: list[tuple[int, int]], *, probe: bool = False, since: float | None = None) -> list[int]:
        """Enqueue (email id, delay ms) pairs, soonest first; return the ids that could not be enqueued.

        Emails due together share a message (see `messages`). Delays count from
        `since` (time.monotonic() when they were computed; default: the call), so
        neither the last of a long batch nor a batch whose planning had to rebuild
        senders' windows first is late by the time that took; and they end `lead_ms`
        early: the worker waits out the rest. After a failure, calls
        return at once with every id for QUIET_AFTER_FAILURE_S: a hung Redis costs one
        request one timeout, not every request. The scheduler passes `probe=True`: it
        tries anyway, and its success ends the quiet time.
        """
        if not probe and time.monotonic() < self._quiet_until:
            return [email_id for email_id, _ in items]
        started = time.monotonic() if since is None else since
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
