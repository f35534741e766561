"""The sweep's statements: take back what a dead worker, an emptied Redis or a lost message left behind; and
the start-up's: let go at once the emails held for a secret that opens again."""

from __future__ import annotations

from ..connection import database
from ..outbox import outbox, returning
from .columns import FAILED, PENDING, SENDING
from .due import due_at

_EXPIRE_LEASES = f"""
WITH u AS (
    UPDATE emails SET attempts = attempts + 1, queued_at = NULL, lease_until = NULL, updated_at = now(),
        status = CASE WHEN attempts + 1 >= %(max)s THEN {FAILED} ELSE {PENDING} END,
        last_error = CASE WHEN attempts + 1 >= %(max)s THEN 'lease expired: the worker sending it stopped'
                          ELSE last_error END
    WHERE status = {SENDING} AND (lease_until < now() OR worker_id = ANY(%(dead)s::text[]))
    RETURNING {returning()}
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'lease_expired', jsonb_build_object('status', status) FROM u
), wh AS ({outbox("u", "email.failed", detail="jsonb_build_object('error', src.last_error)",
                  where=f"src.status = {FAILED}")}
)
SELECT id, status FROM u
"""


def expire_leases(*, max_attempts: int, dead_workers: list[str] = ()) -> list[tuple[int, str]]:
    """SENDING rows whose lease ran out, or held by one of `dead_workers` (worker ids known dead: their
    leases end now rather than LEASE_SECONDS after the claim), go back to PENDING, or FAILED after
    `max_attempts`. The lost attempt counts either way: the worker may have died inside the SMTP
    conversation, and a row that kills its worker every time must end."""
    return database.execute_sql(_EXPIRE_LEASES, {"max": max_attempts, "dead": list(dead_workers)}).fetchall()


_LEASE_HOLDERS = f"SELECT DISTINCT worker_id FROM emails WHERE status = {SENDING} AND worker_id IS NOT NULL"


def lease_holders() -> list[str]:
    """The worker ids that hold a lease now (the sweep asks Redis which of them are alive)."""
    return [worker for (worker,) in database.execute_sql(_LEASE_HOLDERS).fetchall()]


_REQUEUE_STALE = (f"UPDATE emails SET queued_at = NULL WHERE status = {PENDING} AND queued_at IS NOT NULL "
                  "AND next_attempt_at < now() - %(s)s * interval '1 second' "
                  "AND queued_at < now() - %(s)s * interval '1 second'")


def requeue_stale(*, after_s: float) -> int:
    """Handed-over emails still PENDING well after their time were lost by Redis or a worker:
    clear their mark so that the next hand-over gives them to Dramatiq again."""
    return database.execute_sql(_REQUEUE_STALE, {"s": after_s}).rowcount


_REQUEUE_ALL_QUEUED = f"UPDATE emails SET queued_at = NULL WHERE status = {PENDING} AND queued_at IS NOT NULL"


def requeue_all_queued() -> int:
    """Redis came back empty: every handed-over PENDING email must be handed over again."""
    return database.execute_sql(_REQUEUE_ALL_QUEUED).rowcount


_RESUME_HELD = f"""
WITH u AS (
    UPDATE emails e SET next_attempt_at = {due_at('e.scheduled_at')}, queued_at = NULL, updated_at = now()
    WHERE e.status = {PENDING} AND e.next_attempt_at > now()
      AND (e.account, e.sender_id) IN (SELECT * FROM unnest(%(accounts)s::text[], %(senders)s::text[]))
      AND (SELECT v.kind FROM email_events v WHERE v.email_id = e.id ORDER BY v.id DESC LIMIT 1) = 'held'
    RETURNING e.id
)
INSERT INTO email_events (email_id, kind, detail)
SELECT id, 'resumed', jsonb_build_object('reason', %(reason)s) FROM u RETURNING email_id
"""


def resume_held(senders: list[tuple[str, str]], *, reason: str) -> int:
    """Held emails of `senders` ((account, sender id) pairs whose secret opens again) are due now rather than
    at the end of their hold; how many. An email moved since it was held (its last event is not `held`)
    keeps its time."""
    params = {"accounts": [a for a, _ in senders], "senders": [s for _, s in senders], "reason": reason}
    return len(database.execute_sql(_RESUME_HELD, params).fetchall())
