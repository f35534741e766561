"""The hand-over's statements: take what is due, mark it queued or move it to when its sender's cap allows.

The scheduler takes due emails (`take_due`); the API process's hand-over gives
back what Redis refused (`unqueue`) or what a cap does not allow yet
(`hold_back`); a sender whose limit went up gets its moved emails back at their
own time (`pull_forward`).
"""

from __future__ import annotations

from typing import Any, Callable

from ... import metrics
from ..connection import database
from ..senders import PLACING_SELECT
from ..rows import dicts
from .columns import PENDING
from .due import HELD_BY_PAUSE, MOVE_KIND, PAUSED_UNTIL, delay_ms, due_at

_LOCK_DUE = f"""
WITH due AS (
    SELECT id, account, sender_id, next_attempt_at, recipient_time_zone FROM emails
    WHERE status = {PENDING} AND queued_at IS NULL
      AND next_attempt_at <= now() + %(horizon_s)s * interval '1 second'
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
SELECT due.id, due.account, due.sender_id, due.recipient_time_zone, {PLACING_SELECT},
       coalesce(s.paused, false) AS paused, {delay_ms("due.next_attempt_at")} AS delay_ms
FROM due LEFT JOIN senders s ON s.account = due.account AND s.id = due.sender_id
ORDER BY due.next_attempt_at, due.id
"""

#: where a move goes: its exact instant when known (a window's opening), else its delay from now
MOVED_TO = "coalesce(later.at, now() + later.delay_ms * interval '1 millisecond')"

_HAND_OVER = f"""
WITH go AS (
    SELECT * FROM unnest(%(go_ids)s::bigint[], %(go_ms)s::bigint[]) AS g(id, delay_ms)
), later AS (
    SELECT * FROM unnest(%(later_ids)s::bigint[], %(later_ms)s::bigint[], %(later_reasons)s::text[],
                         %(later_ats)s::timestamptz[]) AS l(id, delay_ms, reason, at)
), q AS (
    UPDATE emails e SET queued_at = now()
    FROM go WHERE e.id = go.id AND e.status = {PENDING} AND e.queued_at IS NULL
    RETURNING e.id, go.delay_ms
), m AS (
    UPDATE emails e SET next_attempt_at = {MOVED_TO}, updated_at = now()
    FROM later WHERE e.id = later.id AND e.status = {PENDING} AND e.queued_at IS NULL
    RETURNING e.id, e.next_attempt_at, later.reason
), p AS (
    UPDATE emails e SET next_attempt_at = {PAUSED_UNTIL}, updated_at = now()
    WHERE e.id = ANY(%(paused_ids)s::bigint[]) AND e.status = {PENDING} AND e.queued_at IS NULL
    RETURNING e.id, e.next_attempt_at
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'queued', jsonb_build_object('dueAt', now() + delay_ms * interval '1 millisecond') FROM q
    UNION ALL
    SELECT id, {MOVE_KIND.format(reason="reason")},
           jsonb_build_object('reason', reason, 'nextAttemptAt', next_attempt_at)
    FROM m
    UNION ALL
    SELECT id, 'deferred', jsonb_build_object('reason', 'paused', 'nextAttemptAt', next_attempt_at) FROM p
)
SELECT id, delay_ms FROM q ORDER BY delay_ms, id
"""

#: plan(due rows) -> (go, later): which of the rows may be handed over, and which are moved, each as
#: (email id, delay ms); see coldmail.caps.Caps.plan
Planner = Callable[[list[dict[str, Any]]], Any]


def take_due(*, horizon_s: float, limit: int, plan: Planner) -> tuple[int, list[tuple[int, int]]]:
    """Hand over up to `limit` emails due within the horizon, as far as their senders' caps allow.

    In one transaction: take the due rows (SKIP LOCKED lets several API processes
    run this at once without taking the same row twice), let `plan` split them by
    their senders' caps, then mark the ones that may go as queued and move the
    others to when their cap allows, each with its event. A paused sender's rows
    are not planned: they are moved out of the way (PAUSED_UNTIL, a `deferred`
    event with reason `paused`) until the sender resumes (`resume_paused`). Returns how many rows
    were queued or moved (fewer than `limit`: nothing else is due for now), and
    (id, delay_ms) of the queued ones, soonest first.
    """
    with database.atomic():
        due = dicts(database.execute_sql(_LOCK_DUE, {"horizon_s": horizon_s, "limit": limit}))
        if not due:
            return 0, []
        paused = [row["id"] for row in due if row["paused"]]
        active = [row for row in due if not row["paused"]]
        go, later, reasons, ats = [], [], [], []
        if active:
            decided = plan(active)
            go, later = decided.go, decided.later
            reasons = [getattr(decided, "reasons", {}).get(i, "hourly_limit") for i, _ in later]
            ats = [getattr(decided, "at", {}).get(i) for i, _ in later]
        cursor = database.execute_sql(_HAND_OVER, {
            "go_ids": [i for i, _ in go], "go_ms": [ms for _, ms in go],
            "later_ids": [i for i, _ in later], "later_ms": [ms for _, ms in later], "later_reasons": reasons,
            "later_ats": ats, "paused_ids": paused})
        if paused:
            metrics.MOVED.labels("paused").inc(len(paused))
        return len(go) + len(later) + len(paused), [(row[0], row[1]) for row in cursor.fetchall()]


_UNQUEUE = f"UPDATE emails SET queued_at = NULL WHERE id = ANY(%s) AND status = {PENDING}"


def unqueue(email_ids: list[int]) -> None:
    """Forget that these were handed over (the hand-over failed); the scheduler tries again."""
    if email_ids:
        database.execute_sql(_UNQUEUE, (email_ids,))


_HOLD_BACK = f"""
WITH later AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(ms)s::bigint[], %(reasons)s::text[], %(ats)s::timestamptz[])
        AS l(id, delay_ms, reason, at)
), m AS (
    UPDATE emails e SET queued_at = NULL, next_attempt_at = {MOVED_TO}, updated_at = now()
    FROM later WHERE e.id = later.id AND e.status = {PENDING} AND e.queued_at IS NOT NULL
    RETURNING e.id, e.next_attempt_at, later.reason
)
INSERT INTO email_events (email_id, kind, detail)
SELECT id, {MOVE_KIND.format(reason="reason")}, jsonb_build_object('reason', reason, 'nextAttemptAt', next_attempt_at)
FROM m
"""


def hold_back(later: list[tuple[int, int]], reasons: dict[int, str] | None = None,
              ats: dict[int, Any] | None = None) -> None:
    """Emails a request marked queued that their sender's pacing does not allow yet (its cap, unless `reasons`
    says otherwise): not handed over, but moved to when it does (each with its event); the scheduler hands
    them over then."""
    if later:
        reasons, ats = reasons or {}, ats or {}
        database.execute_sql(_HOLD_BACK, {"ids": [i for i, _ in later], "ms": [ms for _, ms in later],
                                          "reasons": [reasons.get(i, "hourly_limit") for i, _ in later],
                                          "ats": [ats.get(i) for i, _ in later]})


_PULL_FORWARD = f"""
UPDATE emails SET next_attempt_at = {due_at("scheduled_at")}, updated_at = now()
WHERE account = %s AND sender_id = %s AND status = {PENDING} AND queued_at IS NULL AND attempts = 0
  AND next_attempt_at > {due_at("scheduled_at")}
RETURNING id
"""


def pull_forward(account: str, sender_id: str) -> list[int]:
    """The account's sender's emails its cap moved later (never attempted, PENDING, not handed over): due at their own
    time again, for the scheduler to plan under the sender's new limit. Returns their ids."""
    return [row[0] for row in database.execute_sql(_PULL_FORWARD, (account, sender_id)).fetchall()]


_RESUME_PAUSED = f"""
UPDATE emails e SET next_attempt_at = {due_at("CASE WHEN e.attempts = 0 THEN e.scheduled_at ELSE now() END")},
                    updated_at = now()
WHERE e.account = %s AND e.sender_id = %s AND e.status = {PENDING} AND e.queued_at IS NULL
  AND e.next_attempt_at > now()
  AND {HELD_BY_PAUSE}
RETURNING e.id
"""


def resume_paused(account: str, sender_id: str) -> list[int]:
    """The account's sender was resumed: its emails the pause moved out of the way (their last event is the
    `deferred` with reason `paused` that moved them) are due at their own time again, a retry at once, so the scheduler hands
    them over in their order. Returns their ids."""
    return [row[0] for row in database.execute_sql(_RESUME_PAUSED, (account, sender_id)).fetchall()]
