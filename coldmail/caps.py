"""Sender caps: the worker's check before each send, the hand-over's plan, the usage the API shows.

The check (`for_sender`) is what makes the cap exact: a sliding window per
sender on Redis, rebuilt from PostgreSQL when Redis lost it. The plan keeps it
from having to say no: the hand-over gives Dramatiq only the emails a sender's
window will have room for at their time, earliest first, and moves the others to
when their slot frees, so a sender far over its cap does not wake every waiting
email each time a slot frees.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import redis
from dramatiq.rate_limits.backends import RedisBackend

from . import metrics
from .db import database
from .db.senders import hourly_limits, sends_in_window, sent_in_window
from .queue.rate_limits import (PLACEHOLDER, Decision, PlanRequest, Scripts, SlidingWindowRateLimiter, SlotRequest,
                                acquire_many, give_back, mark_done, plan_slots, restore, used_in_window)
from .settings import Settings

log = logging.getLogger(__name__)

#: a planned slot starts this long after the slot before it frees, so that sends finishing a little
#: after their planned time (worker pick-up, the SMTP conversation) do not meet a full window
MARGIN_MS = 500
#: an email whose slot comes within this of its time is handed over with that delay; later, it is moved
TOLERANCE_MS = 1000
#: GLOBAL_RATE_LIMIT_PER_SECOND's window
GLOBAL_KEY = "coldmail:cap:global"
#: how long a sender's limit read for planning is reused (the check before a send reads it fresh)
LIMIT_CACHE_S = 2.0


@dataclass(frozen=True)
class Plan:
    #: (email id, delay ms) to give Dramatiq now, soonest first
    go: list[tuple[int, int]] = field(default_factory=list)
    #: (email id, delay ms) over their sender's cap: moved to when their slot frees
    later: list[tuple[int, int]] = field(default_factory=list)
    #: email ids left as they are: their slot is more than half a window away, and is checked again
    #: against the sends before it when it comes nearer
    wait: list[int] = field(default_factory=list)


class Caps:
    """The per-sender caps and the global one, on one Redis client."""

    def __init__(self, settings: Settings, redis_client: redis.Redis) -> None:
        self.settings = settings
        self.backend = RedisBackend(client=redis_client)
        self.scripts = Scripts(redis_client)
        self.window_ms = settings.rate_limit_window_s * 1000
        self._limits: dict[str, tuple[int | None, float]] = {}

    @staticmethod
    def key(sender_id: str) -> str:
        return f"coldmail:cap:sender:{sender_id}"

    @staticmethod
    def plan_key(sender_id: str) -> str:
        return f"coldmail:plan:sender:{sender_id}"

    def for_sender(self, sender_id: str, limit: int, email_id: int) -> SlidingWindowRateLimiter:
        """The check a worker makes before sending `email_id`."""
        return SlidingWindowRateLimiter(
            self.backend, self.key(sender_id), limit=limit, window_ms=self.window_ms, member=str(email_id),
            plan_key=self.plan_key(sender_id), rebuild=lambda: self._sends(sender_id), scripts=self.scripts)

    def overall(self, email_id: int) -> SlidingWindowRateLimiter | None:
        """GLOBAL_RATE_LIMIT_PER_SECOND across all workers, or None when it is off.

        Not rebuilt when lost: a second's sends are over before a rebuild could matter."""
        per_s = self.settings.global_rate_limit_per_s
        if not per_s:
            return None
        return SlidingWindowRateLimiter(
            self.backend, GLOBAL_KEY, limit=per_s, window_ms=1000, member=str(email_id),
            scripts=self.scripts)

    def acquire(self, wanted: Sequence[tuple[str, int, int]]) -> list[Decision]:
        """The worker's check before sending the emails of one message: a slot for each (sender id, limit,
        email id), in order, in one script call; a sender's window that Redis lost is rebuilt first."""
        requests = [SlotRequest(self.key(sender), self.plan_key(sender), limit, str(email_id))
                    for sender, limit, email_id in wanted]
        decisions = acquire_many(self.scripts, requests, window_ms=self.window_ms)
        lost = [i for i, d in enumerate(decisions) if d is None]
        if lost:
            for sender in dict.fromkeys(wanted[i][0] for i in lost):
                log.warning("sender %r: its cap's window was lost by Redis; rebuilt from PostgreSQL", sender)
                restore(self.scripts, self.key(sender), self._sends(sender), window_ms=self.window_ms)
            again = acquire_many(self.scripts, [requests[i] for i in lost], window_ms=self.window_ms)
            for i, decision in zip(lost, again):
                decisions[i] = decision if decision is not None else Decision(False, 1000)
        return decisions  # type: ignore[return-value]

    def slots(self, sender_id: str, email_id: int) -> list[tuple[str, str]]:
        """The (key, member) slots a send of `email_id` takes: its sender's, and the global cap's if on."""
        slots = [(self.key(sender_id), str(email_id))]
        if self.settings.global_rate_limit_per_s:
            slots.append((GLOBAL_KEY, str(email_id)))
        return slots

    def mark_done(self, slots: Sequence[tuple[str, str]]) -> None:
        """Sends finished: their slots count from now, all in one script call."""
        mark_done(self.scripts, slots)

    def unplan(self, sender_id: str, *email_ids: int) -> None:
        """The emails will not go at their planned times (cancelled, moved, or to be planned again): free
        their places in the sender's plan, which would otherwise hold its other emails back until it
        expired."""
        if email_ids:
            self.scripts.client.zrem(self.plan_key(sender_id), *map(str, email_ids))

    def give_back(self, slots: Sequence[tuple[str, str]]) -> None:
        """Sends that did not happen: free their slots."""
        give_back(self.scripts, slots)

    def plan(self, due: Sequence[Mapping[str, Any]]) -> Plan:
        """Split emails about to be handed over into those that may go now, those over their sender's
        cap (to be moved), and those to be looked at again nearer their time.

        `due` rows carry `id`, `sender_id` and `delay_ms` (and `hourly_limit` when
        known), in due order. One pipelined Redis call for all senders; a sender whose
        window Redis lost is rebuilt from PostgreSQL first.
        """
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for row in due:
            groups.setdefault(row["sender_id"], []).append(row)
        senders = list(groups)
        limits = self._limits_of(groups)
        requests = [PlanRequest(self.key(sender), self.plan_key(sender), limits[sender], self.window_ms,
                                [(str(row["id"]), int(row["delay_ms"])) for row in groups[sender]])
                    for sender in senders]
        slots = plan_slots(self.scripts, requests, margin_ms=MARGIN_MS, tolerance_ms=TOLERANCE_MS)
        lost = [i for i, s in enumerate(slots) if s is None]
        if lost:
            for i in lost:
                restore(self.scripts, self.key(senders[i]), self._sends(senders[i]), window_ms=self.window_ms)
                log.warning("sender %r: its cap's window was lost by Redis; rebuilt from PostgreSQL", senders[i])
            for i, s in zip(lost, plan_slots(self.scripts, [requests[i] for i in lost], margin_ms=MARGIN_MS,
                                             tolerance_ms=TOLERANCE_MS)):
                slots[i] = s
        # Handed over no earlier than half a window ahead: by then the sends a window before it are over,
        # and the check above has seen when they really finished.
        ahead_ms = min(self.settings.handover_horizon_s * 1000, self.window_ms / 2)
        result = Plan()
        for request, at in zip(requests, slots):
            for (member, due_ms), at_ms in zip(request.candidates, at or ()):
                if at_ms - max(0, due_ms) > TOLERANCE_MS:
                    result.later.append((int(member), at_ms))
                elif at_ms > ahead_ms:
                    result.wait.append(int(member))
                else:
                    result.go.append((int(member), max(0, at_ms)))
        result.go.sort(key=lambda item: (item[1], item[0]))
        metrics.RATE_LIMITED.inc(len(result.later))
        return result

    def usage(self, sender_id: str) -> int:
        """Slots the sender took in the current window: Redis's count, PostgreSQL's if Redis lost it."""
        try:
            count = used_in_window(self.scripts, [self.key(sender_id)], window_ms=self.window_ms)[0]
        except redis.RedisError as e:
            log.warning("sender %r: usage counted in PostgreSQL, Redis failed (%s)", sender_id, e)
            count = None
        if count is None:
            with database.connection_context():
                count = sent_in_window(sender_id, window_s=self.settings.rate_limit_window_s)
        return count

    def forget_limit(self, sender_id: str) -> None:
        """The sender's limit changed here: plan with the new one from now on."""
        self._limits.pop(sender_id, None)

    def _sends(self, sender_id: str) -> list[tuple[str, int]]:
        with database.connection_context():
            return sends_in_window(sender_id, window_s=self.settings.rate_limit_window_s, claim_prefix=PLACEHOLDER)

    def _limits_of(self, groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, int]:
        now = time.monotonic()
        known: dict[str, int | None] = {}
        for sender, rows in groups.items():
            if "hourly_limit" in rows[0]:
                known[sender] = rows[0]["hourly_limit"]
            elif (cached := self._limits.get(sender)) and now - cached[1] < LIMIT_CACHE_S:
                known[sender] = cached[0]
        missing = [sender for sender in groups if sender not in known]
        if missing:
            with database.connection_context():
                found = hourly_limits(missing)
            if len(self._limits) > 10_000:
                self._limits.clear()
            for sender in missing:
                known[sender] = found.get(sender)
                self._limits[sender] = (known[sender], now)
        return {sender: limit or self.settings.rate_limit_per_hour for sender, limit in known.items()}
