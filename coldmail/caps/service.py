"""Sender caps: the worker's check before each send, the hand-over's plan, the usage the API shows.

The check (`acquire`) is what makes the cap exact: a sliding window per sender
(coldmail.caps.window), rebuilt from PostgreSQL when the store lost it. The plan
keeps it from having to say no: the hand-over gives Dramatiq only the emails a
sender's window will have room for at their time, earliest first, and moves the
others to when their slot frees, so a sender far over its cap does not wake every
waiting email each time a slot frees.

A sender is an account's: every method names it by (account, sender id), and its
store keys hold both, so two accounts' senders of one id have their own caps.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

import redis

from .. import metrics
from ..db import database
from ..db.senders import hourly_limits, sends_in_window, sent_in_window
from ..settings import Settings
from . import timing
from .scripts import PLACEHOLDER, Decision, PlanRequest, RedisScripts, Scripts
from .timing import MARGIN_MS, TOLERANCE_MS, Plan
from .window import SlidingWindowRateLimiter

log = logging.getLogger(__name__)

#: GLOBAL_RATE_LIMIT_PER_SECOND's window
GLOBAL_KEY = "coldmail:cap:global"
#: a sender, as the caps know it: (account, sender id)
SenderRef = tuple[str, str]
#: how long a sender's limit read for planning is reused (the check before a send reads it fresh)
LIMIT_CACHE_S = 2.0


class Caps:
    """The per-sender caps and the global one, on one store: a Redis client's, or `scripts` (the stub)."""

    def __init__(self, settings: Settings, redis_client: redis.Redis | None = None, *,
                 scripts: Scripts | None = None) -> None:
        if scripts is None:
            if redis_client is None:
                raise ValueError("Caps needs a Redis client or scripts")
            scripts = RedisScripts(redis_client)
        self.settings = settings
        self.scripts = scripts
        self.window_ms = settings.rate_limit_window_s * 1000
        self._limits: dict[SenderRef, tuple[int | None, float]] = {}

    # `/` ends the account: neither an account name nor a sender id holds one, so no two senders share a key
    # (nor does a sender share one with the keys of the release before accounts, `coldmail:cap:sender:{id}`)
    @staticmethod
    def key(account: str, sender_id: str) -> str:
        return f"coldmail:cap:sender:{account}/{sender_id}"

    @staticmethod
    def plan_key(account: str, sender_id: str) -> str:
        return f"coldmail:plan:sender:{account}/{sender_id}"

    def for_sender(self, account: str, sender_id: str, limit: int, email_id: int) -> SlidingWindowRateLimiter:
        """The check a worker makes before sending `email_id`."""
        return SlidingWindowRateLimiter(
            self.scripts, self.key(account, sender_id), limit=limit, window_ms=self.window_ms,
            member=str(email_id), plan_key=self.plan_key(account, sender_id),
            rebuild=lambda: self._lost(account, sender_id))

    def overall(self, email_id: int) -> SlidingWindowRateLimiter | None:
        """GLOBAL_RATE_LIMIT_PER_SECOND across all workers, or None when it is off.

        Not rebuilt when lost: a second's sends are over before a rebuild could matter."""
        per_s = self.settings.global_rate_limit_per_s
        if not per_s:
            return None
        return SlidingWindowRateLimiter(self.scripts, GLOBAL_KEY, limit=per_s, window_ms=1000, member=str(email_id))

    def acquire(self, wanted: Sequence[tuple[str, str, int, int]]) -> list[Decision]:
        """The worker's check before sending the emails of one message: a slot for each (account, sender id,
        limit, email id), in order, in one script call; a sender's window that was lost is rebuilt first."""
        return SlidingWindowRateLimiter.decide_many(
            [self.for_sender(account, sender, limit, email_id) for account, sender, limit, email_id in wanted])

    def slots(self, account: str, sender_id: str, email_id: int) -> list[tuple[str, str]]:
        """The (key, member) slots a send of `email_id` takes: its sender's, and the global cap's if on."""
        slots = [(self.key(account, sender_id), str(email_id))]
        if self.settings.global_rate_limit_per_s:
            slots.append((GLOBAL_KEY, str(email_id)))
        return slots

    def mark_done(self, slots: Sequence[tuple[str, str]]) -> None:
        """Sends finished: their slots count from now, all in one script call."""
        self.scripts.done(slots)

    def give_back(self, slots: Sequence[tuple[str, str]]) -> None:
        """Sends that did not happen: free their slots."""
        self.scripts.give_back(slots)

    def unplan(self, account: str, sender_id: str, *email_ids: int) -> None:
        """The emails will not go at their planned times (cancelled, moved, or to be planned again): free
        their places in the sender's plan, which would otherwise hold its other emails back until it
        expired."""
        self.scripts.unplan(self.plan_key(account, sender_id), [str(email_id) for email_id in email_ids])

    def plan(self, due: Sequence[Mapping[str, Any]]) -> Plan:
        """Split emails about to be handed over into those that may go now, those over their sender's
        cap (to be moved), and those to be looked at again nearer their time (see timing.place).

        `due` rows carry `id`, `account`, `sender_id` and `delay_ms` (and `hourly_limit`
        when known), in due order. One pipelined call for all senders; a sender whose
        window was lost is rebuilt from PostgreSQL first.
        """
        groups: dict[SenderRef, list[Mapping[str, Any]]] = {}
        for row in due:
            groups.setdefault((row["account"], row["sender_id"]), []).append(row)
        senders = list(groups)
        limits = self._limits_of(groups)
        requests = [PlanRequest(self.key(*sender), self.plan_key(*sender), limits[sender], self.window_ms,
                                [(str(row["id"]), timing.due_ms(row["delay_ms"])) for row in groups[sender]])
                    for sender in senders]
        slots = self.scripts.plan(requests, margin_ms=MARGIN_MS, tolerance_ms=TOLERANCE_MS)
        lost = [i for i, s in enumerate(slots) if s is None]
        if lost:
            for i in lost:
                self.scripts.rebuild(self.key(*senders[i]), self._lost(*senders[i]), window_ms=self.window_ms)
            again = self.scripts.plan([requests[i] for i in lost], margin_ms=MARGIN_MS, tolerance_ms=TOLERANCE_MS)
            for i, s in zip(lost, again):
                slots[i] = s
        ahead_ms = timing.look_ahead_ms(horizon_s=self.settings.handover_horizon_s, window_ms=self.window_ms)
        result = timing.split(((int(member), due_ms, at_ms)
                               for request, at in zip(requests, slots)
                               for (member, due_ms), at_ms in zip(request.candidates, at or ())),
                              ahead_ms=ahead_ms)
        metrics.RATE_LIMITED.inc(len(result.later))
        return result

    def usage(self, account: str, sender_id: str) -> int:
        """Slots the sender took in the current window: the store's count, PostgreSQL's if it lost it."""
        try:
            count = self.scripts.used([self.key(account, sender_id)], window_ms=self.window_ms)[0]
        except redis.RedisError as e:
            log.warning("sender %r of account %r: usage counted in PostgreSQL, Redis failed (%s)", sender_id,
                        account, e)
            count = None
        if count is None:
            with database.connection_context():
                count = sent_in_window(account, sender_id, window_s=self.settings.rate_limit_window_s)
        return count

    def forget_limit(self, account: str, sender_id: str) -> None:
        """The sender's limit changed here: plan with the new one from now on."""
        self._limits.pop((account, sender_id), None)

    def _lost(self, account: str, sender_id: str) -> list[tuple[str, int]]:
        """A sender's window the store lost, from PostgreSQL: its sends in the window, and those under way."""
        log.warning("sender %r of account %r: its cap's window was lost by Redis; rebuilt from PostgreSQL",
                    sender_id, account)
        with database.connection_context():
            return sends_in_window(account, sender_id, window_s=self.settings.rate_limit_window_s,
                                   claim_prefix=PLACEHOLDER)

    def _limits_of(self, groups: Mapping[SenderRef, Sequence[Mapping[str, Any]]]) -> dict[SenderRef, int]:
        now = time.monotonic()
        known: dict[SenderRef, int | None] = {}
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
