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
import random
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

import redis

from .. import metrics
from ..db import database
from ..db.senders import day_so_far, sender_settings, sends_in_window, sent_in_window
from ..settings import Settings
from . import pacing as rules, timing
from .pacing import NO_PACING, Pacing
from .scripts import DAY_FULL, PLACEHOLDER, Decision, GapSlot, PlanRequest, RedisScripts, Scripts
from .timing import MARGIN_MS, TOLERANCE_MS, Plan
from .window import Pace, SlidingWindowRateLimiter

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
        #: senders' (hourly limit, pacing) as last read, and when
        self._settings: dict[SenderRef, tuple[int | None, Pacing, float]] = {}

    # `/` ends the account: neither an account name nor a sender id holds one, so no two senders share a key
    # (nor does a sender share one with the keys of the release before accounts, `coldmail:cap:sender:{id}`)
    @staticmethod
    def key(account: str, sender_id: str) -> str:
        return f"coldmail:cap:sender:{account}/{sender_id}"

    @staticmethod
    def plan_key(account: str, sender_id: str) -> str:
        return f"coldmail:plan:sender:{account}/{sender_id}"

    @staticmethod
    def pace_key(account: str, sender_id: str) -> str:
        return f"coldmail:pace:sender:{account}/{sender_id}"

    def for_sender(self, account: str, sender_id: str, limit: int, email_id: int, *,
                   pacing: Pacing = NO_PACING, wait_ms: int = 0) -> SlidingWindowRateLimiter:
        """The check a worker makes before sending `email_id` (due in `wait_ms`): its sender's window, and a
        paced sender's day limit and gap."""
        return SlidingWindowRateLimiter(
            self.scripts, self.key(account, sender_id), limit=limit, window_ms=self.window_ms,
            member=str(email_id), plan_key=self.plan_key(account, sender_id),
            rebuild=lambda: self._lost(account, sender_id), pace=self._pace(account, sender_id, pacing, wait_ms))

    def _pace(self, account: str, sender_id: str, pacing: Pacing, wait_ms: int) -> Pace | None:
        if not counts_in_redis(pacing):
            return None
        today = rules.local_day(_now(), pacing.time_zone)
        jitter_ms = random.randint(0, pacing.jitter_s * 1000) if pacing.jitter_s else 0
        # the wait until this send starts counts in a gap; without one (a day limit alone) it holds nothing back
        spaced = pacing.min_gap_s > 0 or pacing.jitter_s > 0
        return Pace(self.pace_key(account, sender_id), day=today.toordinal(), day_limit=rules.day_limit(pacing, today),
                    after_ms=max(0, wait_ms) + pacing.min_gap_s * 1000 + jitter_ms if spaced else 0,
                    rebuild=lambda: self._lost_pace(account, sender_id, pacing))

    def overall(self, email_id: int) -> SlidingWindowRateLimiter | None:
        """GLOBAL_RATE_LIMIT_PER_SECOND across all workers, or None when it is off.

        Not rebuilt when lost: a second's sends are over before a rebuild could matter."""
        per_s = self.settings.global_rate_limit_per_s
        if not per_s:
            return None
        return SlidingWindowRateLimiter(self.scripts, GLOBAL_KEY, limit=per_s, window_ms=1000, member=str(email_id))

    def acquire(self, wanted: Sequence[tuple]) -> list[Decision]:
        """The worker's check before sending the emails of one message: a slot for each (account, sender id,
        limit, email id[, pacing, ms until it is due]), in order, in one script call; a sender's window (or
        pace) that was lost is rebuilt first."""
        return SlidingWindowRateLimiter.decide_many(
            [self.for_sender(account, sender, limit, email_id, pacing=paced[0], wait_ms=paced[1])
             if paced and paced[0] is not None else self.for_sender(account, sender, limit, email_id)
             for account, sender, limit, email_id, *paced in wanted])

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
        """Split emails about to be handed over into those that may go now, those to be moved (over their
        sender's cap or day limit, before its gap ends, or outside their window), and those to be looked at
        again nearer their time (see timing.place).

        `due` rows carry `id`, `account`, `sender_id` and `delay_ms` (and `hourly_limit`, the sender's pacing
        columns and `recipient_time_zone` when known), in due order. One pipelined call for all senders; a
        sender whose window or pace was lost is rebuilt from PostgreSQL first.
        """
        groups: dict[SenderRef, list[Mapping[str, Any]]] = {}
        for row in due:
            groups.setdefault((row["account"], row["sender_id"]), []).append(row)
        senders = list(groups)
        known = self._senders_of(groups)
        now = _now()
        requests = [self._plan_request(sender, known[sender], groups[sender], now) for sender in senders]
        slots = self.scripts.plan(requests, margin_ms=MARGIN_MS, tolerance_ms=TOLERANCE_MS)
        lost = [i for i, s in enumerate(slots) if s is None]
        if lost:
            for i in lost:
                account, sender_id = senders[i]
                self.scripts.rebuild(self.key(*senders[i]), self._lost(*senders[i]), window_ms=self.window_ms)
                pacing = known[senders[i]][1]
                if counts_in_redis(pacing):
                    day_count, next_ms = self._lost_pace(account, sender_id, pacing)
                    self.scripts.rebuild_pace(self.pace_key(account, sender_id), day=requests[i].day,
                                              count=day_count, next_ms=next_ms)
            again = self.scripts.plan([requests[i] for i in lost], margin_ms=MARGIN_MS, tolerance_ms=TOLERANCE_MS)
            for i, s in zip(lost, again):
                slots[i] = s
        ahead_ms = timing.look_ahead_ms(horizon_s=self.settings.handover_horizon_s, window_ms=self.window_ms)
        placed = []
        unplanned: dict[SenderRef, list[int]] = {}
        for sender, at in zip(senders, slots):
            pacing = known[sender][1]
            for row, slot_ms in zip(groups[sender], at or ()):
                placed.append(self._placed(row, slot_ms, pacing, now, unplanned))
        result = timing.split(placed, ahead_ms=ahead_ms)
        for (account, sender_id), ids in unplanned.items():
            self.unplan(account, sender_id, *ids)
        for email_id, _ in result.later:
            metrics.MOVED.labels(result.reason(email_id)).inc()
        metrics.RATE_LIMITED.inc(sum(1 for email_id, _ in result.later if result.reason(email_id) == "hourly_limit"))
        return result

    def _plan_request(self, sender: SenderRef, known: tuple[int, Pacing], rows: Sequence[Mapping[str, Any]],
                      now: datetime) -> PlanRequest:
        limit, pacing = known
        candidates = [(str(row["id"]), timing.due_ms(row["delay_ms"])) for row in rows]
        if not counts_in_redis(pacing):
            return PlanRequest(self.key(*sender), self.plan_key(*sender), limit, self.window_ms, candidates)
        today = rules.local_day(now, pacing.time_zone)
        day_limit = rules.day_limit(pacing, today)
        day_left = rules.next_day_start(now, pacing.time_zone) - now
        return PlanRequest(self.key(*sender), self.plan_key(*sender), limit, self.window_ms, candidates,
                           pace_key=self.pace_key(*sender), gap_ms=pacing.min_gap_s * 1000, day=today.toordinal(),
                           day_limit=-1 if day_limit is None else day_limit,
                           day_left_ms=int(day_left / timedelta(milliseconds=1)))

    def _placed(self, row: Mapping[str, Any], slot_ms: int | None, pacing: Pacing, now: datetime,
                unplanned: dict[SenderRef, list[int]]) -> tuple:
        """(id, due ms, slot ms, reason[, instant]) for timing.split: the plan's slot, moved to the next day's
        window when the day limit is reached, or to the window's opening when the slot is outside it."""
        email_id, due = row["id"], timing.due_ms(row["delay_ms"])
        zone = row.get("recipient_time_zone")
        if slot_ms is DAY_FULL:
            at = rules.after_day_limit(now, pacing, zone)
            return email_id, due, _ms_from(now, at), "daily_limit", at
        reason = "gap" if isinstance(slot_ms, GapSlot) else "hourly_limit"
        if pacing.window is not None:
            at = now + timedelta(milliseconds=max(slot_ms, due))
            opens = rules.earliest(at, pacing, zone)
            if opens > at:
                unplanned.setdefault((row["account"], row["sender_id"]), []).append(email_id)
                return email_id, due, _ms_from(now, opens), "window", opens
        return email_id, due, int(slot_ms), reason

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
        """The sender's limit or pacing changed here: plan with the new ones from now on."""
        self._settings.pop((account, sender_id), None)

    def forget_plan(self, account: str, sender_id: str) -> None:
        """The sender's emails are all placed again: its plan holds none of them any more."""
        try:
            self.scripts.unplan_all(self.plan_key(account, sender_id))
        except redis.RedisError as e:
            log.warning("sender %r of account %r: its plan stays until it expires (Redis: %s)", sender_id, account, e)

    def pacing_of(self, senders: Sequence[SenderRef]) -> dict[SenderRef, Pacing]:
        """The senders' pacing as last read (at most LIMIT_CACHE_S ago; the rest read now, blocking): what
        acceptance places emails by."""
        return {sender: known[1] for sender, known in self._senders_of({s: [{}] for s in senders}).items()}

    def known_pacing(self, senders: Sequence[SenderRef]) -> dict[SenderRef, Pacing] | None:
        """The senders' pacing if every one was read within LIMIT_CACHE_S, else None (without reading)."""
        now = time.monotonic()
        out = {}
        for sender in senders:
            cached = self._settings.get(sender)
            if cached is None or now - cached[2] >= LIMIT_CACHE_S:
                return None
            out[sender] = cached[1]
        return out

    def remember(self, found: Mapping[SenderRef, Mapping[str, Any]], senders: Sequence[SenderRef]) -> None:
        """Keep senders' settings read elsewhere (rows of db.senders.sender_settings; a sender missing from
        `found` has the defaults)."""
        now = time.monotonic()
        if len(self._settings) > 10_000:
            self._settings.clear()
        for sender in senders:
            row = found.get(sender)
            self._settings[sender] = (row["hourly_limit"] if row else None,
                                      Pacing.from_row(row) if row else NO_PACING, now)

    def sent_today(self, account: str, sender_id: str, pacing: Pacing) -> int:
        """The sender's sends (made or under way) on its local day: its pace's count when it has one (what its day
        limit is checked against), else (or when Redis lost it) PostgreSQL's."""
        if not counts_in_redis(pacing):
            return self.sent_today_in_db(account, sender_id, pacing)
        today = rules.local_day(_now(), pacing.time_zone).toordinal()
        try:
            client = getattr(self.scripts, "client")
            day, count = client.zscore(self.pace_key(account, sender_id), "day"), \
                client.zscore(self.pace_key(account, sender_id), "count")
        except redis.RedisError:
            day = count = None
        if day is not None and int(day) >= today:
            return int(count or 0)
        if day is not None:
            return 0
        return self._lost_pace(account, sender_id, pacing, quiet=True)[0]

    def sent_today_in_db(self, account: str, sender_id: str, pacing: Pacing) -> int:
        """The sender's sends (made or under way) on its local day, counted in PostgreSQL."""
        day_start = rules.day_start(_now(), pacing.time_zone)
        with database.connection_context():
            return day_so_far(account, sender_id, since=day_start)[0]

    def _lost(self, account: str, sender_id: str) -> list[tuple[str, int]]:
        """A sender's window the store lost, from PostgreSQL: its sends in the window, and those under way. Only
        a window that had sends is worth a warning: a sender's first send, or its first in a window, finds no
        key either."""
        with database.connection_context():
            sends = sends_in_window(account, sender_id, window_s=self.settings.rate_limit_window_s,
                                    claim_prefix=PLACEHOLDER)
        if sends:
            log.warning("sender %r of account %r: its cap's window was lost by Redis; %d sends rebuilt from "
                        "PostgreSQL", sender_id, account, len(sends))
        return sends

    def _lost_pace(self, account: str, sender_id: str, pacing: Pacing, *, quiet: bool = False) -> tuple[int, int]:
        """A paced sender's pace the store lost, from PostgreSQL: (its sends on its local day, made or under
        way; ms from now until its next send may start: its last send's start and the gap, without the
        jitter, which was not kept)."""
        now = _now()
        day_start = rules.day_start(now, pacing.time_zone)
        with database.connection_context():
            count, last = day_so_far(account, sender_id, since=day_start)
        if count and not quiet:
            log.warning("sender %r of account %r: its day count and gap were lost by Redis; %d sends today "
                        "rebuilt from PostgreSQL", sender_id, account, count)
        next_ms = 0 if last is None else _ms_from(now, last + timedelta(seconds=pacing.min_gap_s))
        return count, next_ms

    def _senders_of(self, groups: Mapping[SenderRef, Sequence[Mapping[str, Any]]]
                    ) -> dict[SenderRef, tuple[int, Pacing]]:
        """Each sender's (hourly limit, pacing): from its rows when they carry them, else as read within
        LIMIT_CACHE_S, else read now."""
        now = time.monotonic()
        known: dict[SenderRef, tuple[int | None, Pacing]] = {}
        for sender, rows in groups.items():
            first = rows[0]
            if "hourly_limit" in first:  # a row read with its sender (pacing columns beside it)
                known[sender] = (first["hourly_limit"], Pacing.from_row(first))
            elif (cached := self._settings.get(sender)) and now - cached[2] < LIMIT_CACHE_S:
                known[sender] = (cached[0], cached[1])
        missing = [sender for sender in groups if sender not in known]
        if missing:
            with database.connection_context():
                found = sender_settings(missing)
            self.remember(found, missing)
            for sender in missing:
                limit, pacing, _ = self._settings[sender]
                known[sender] = (limit, pacing)
        return {sender: (limit or self.settings.rate_limit_per_hour, pacing)
                for sender, (limit, pacing) in known.items()}


def counts_in_redis(pacing: Pacing) -> bool:
    """Whether the sender's sends are counted by day or spaced by a gap (its pace, in Redis): a window alone
    needs no count."""
    return pacing.daily_limit is not None or pacing.warmup is not None or pacing.min_gap_s > 0 or pacing.jitter_s > 0


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _ms_from(now: datetime, then: datetime) -> int:
    return int((then - now) / timedelta(milliseconds=1))
