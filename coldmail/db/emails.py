"""Every statement that changes an email, each one atomic and with its audit row.

State changes are compare-and-set (`UPDATE … WHERE status = …`) and write
their event in the same statement through a CTE, so a change and its event
are never seen apart. Callers hold a connection (`database.connection_context()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable

from psycopg2.extras import Json

from .connection import database
from .models import Email, EmailEvent

EMAIL_COLUMNS = (
    "id, recipient, subject, body, sender_id, status, scheduled_at, next_attempt_at, queued_at, "
    "lease_until, attempts, last_error, message_id, sent_at, idempotency_key, payload_hash, "
    "created_at, updated_at")


@dataclass(frozen=True)
class NewEmail:
    recipient: str
    subject: str
    body: str
    sender_id: str
    scheduled_at: datetime | None
    idempotency_key: str | None
    payload_hash: str


def _dicts(cursor) -> list[dict[str, Any]]:
    names = [c.name for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _one(cursor) -> dict[str, Any] | None:
    rows = _dicts(cursor)
    return rows[0] if rows else None


# -- creating -------------------------------------------------------------

def get_email(email_id: int) -> dict[str, Any] | None:
    return Email.select().where(Email.id == email_id).dicts().get_or_none()


def list_events(email_id: int) -> list[dict[str, Any]]:
    return list(EmailEvent.select(EmailEvent.id, EmailEvent.kind, EmailEvent.detail, EmailEvent.created_at)
                .where(EmailEvent.email_id == email_id).order_by(EmailEvent.id).dicts())


def unqueue(email_ids: list[int]) -> None:
    """Forget that these were handed over (the hand-over failed); the scheduler tries again."""
    if email_ids:
        database.execute_sql(
            "UPDATE emails SET queued_at = NULL WHERE id = ANY(%s) AND status = 'PENDING'", (email_ids,))


# -- hand-over ------------------------------------------------------------

_LOCK_DUE = """
WITH due AS (
    SELECT id, sender_id, next_attempt_at FROM emails
    WHERE status = 'PENDING' AND queued_at IS NULL
      AND next_attempt_at <= now() + %(horizon_s)s * interval '1 second'
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
SELECT due.id, due.sender_id, s.hourly_limit,
       greatest(0, (extract(epoch FROM due.next_attempt_at - now()) * 1000))::bigint AS delay_ms
FROM due LEFT JOIN senders s ON s.id = due.sender_id
ORDER BY due.next_attempt_at, due.id
"""

_HAND_OVER = """
WITH go AS (
    SELECT * FROM unnest(%(go_ids)s::bigint[], %(go_ms)s::bigint[]) AS g(id, delay_ms)
), later AS (
    SELECT * FROM unnest(%(later_ids)s::bigint[], %(later_ms)s::bigint[]) AS l(id, delay_ms)
), q AS (
    UPDATE emails e SET queued_at = now()
    FROM go WHERE e.id = go.id AND e.status = 'PENDING' AND e.queued_at IS NULL
    RETURNING e.id, go.delay_ms
), m AS (
    UPDATE emails e SET next_attempt_at = now() + later.delay_ms * interval '1 millisecond', updated_at = now()
    FROM later WHERE e.id = later.id AND e.status = 'PENDING' AND e.queued_at IS NULL
    RETURNING e.id, e.next_attempt_at
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'queued', jsonb_build_object('dueAt', now() + delay_ms * interval '1 millisecond') FROM q
    UNION ALL
    SELECT id, 'rate_limited', jsonb_build_object('nextAttemptAt', next_attempt_at) FROM m
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
    others to when their cap allows, each with its event. Returns how many rows
    were queued or moved (fewer than `limit`: nothing else is due for now), and
    (id, delay_ms) of the queued ones, soonest first.
    """
    with database.atomic():
        due = _dicts(database.execute_sql(_LOCK_DUE, {"horizon_s": horizon_s, "limit": limit}))
        if not due:
            return 0, []
        decided = plan(due)
        cursor = database.execute_sql(_HAND_OVER, {
            "go_ids": [i for i, _ in decided.go], "go_ms": [ms for _, ms in decided.go],
            "later_ids": [i for i, _ in decided.later], "later_ms": [ms for _, ms in decided.later]})
        return len(decided.go) + len(decided.later), [(row[0], row[1]) for row in cursor.fetchall()]


_HOLD_BACK = """
WITH later AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(ms)s::bigint[]) AS l(id, delay_ms)
), m AS (
    UPDATE emails e SET queued_at = NULL, next_attempt_at = now() + later.delay_ms * interval '1 millisecond',
                        updated_at = now()
    FROM later WHERE e.id = later.id AND e.status = 'PENDING' AND e.queued_at IS NOT NULL
    RETURNING e.id, e.next_attempt_at
)
INSERT INTO email_events (email_id, kind, detail)
SELECT id, 'rate_limited', jsonb_build_object('nextAttemptAt', next_attempt_at) FROM m
"""


def hold_back(later: list[tuple[int, int]]) -> None:
    """Emails a request marked queued that their sender's cap does not allow yet: not handed over, but
    moved to when it does (each with its event); the scheduler hands them over then."""
    if later:
        database.execute_sql(_HOLD_BACK, {"ids": [i for i, _ in later], "ms": [ms for _, ms in later]})


_PULL_FORWARD = """
UPDATE emails SET next_attempt_at = greatest(scheduled_at, now()), updated_at = now()
WHERE sender_id = %s AND status = 'PENDING' AND queued_at IS NULL AND attempts = 0
  AND next_attempt_at > greatest(scheduled_at, now())
RETURNING id
"""


def pull_forward(sender_id: str) -> list[int]:
    """The sender's emails its cap moved later (never attempted, PENDING, not handed over): due at their own
    time again, for the scheduler to plan under the sender's new limit. Returns their ids."""
    return [row[0] for row in database.execute_sql(_PULL_FORWARD, (sender_id,)).fetchall()]


# -- sending --------------------------------------------------------------

_CLAIM = f"""
WITH c AS (
    UPDATE emails SET status = 'SENDING', lease_until = now() + %(lease_s)s * interval '1 second',
                      updated_at = now()
    WHERE id = ANY(%(ids)s::bigint[]) AND status = 'PENDING'
      AND next_attempt_at <= now() + %(early_s)s * interval '1 second'
    RETURNING {EMAIL_COLUMNS}
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'claimed', jsonb_build_object('attempt', attempts + 1) FROM c
)
SELECT c.*, greatest(0, extract(epoch FROM c.next_attempt_at - now()))::float AS wait_s,
       s.from_address, s.hourly_limit, s.smtp_url, s.smtp_password_enc
FROM c LEFT JOIN senders s ON s.id = c.sender_id
ORDER BY c.next_attempt_at, c.id
"""


def claim(email_ids: list[int], *, lease_s: float, early_s: float = 0.0) -> list[dict[str, Any]]:
    """Take the PENDING emails among `email_ids` that are due within `early_s` for sending (SENDING with a
    lease), soonest first; the others are not ours to send (yet). `wait_s` in each row says how long until
    it is due: the caller waits that out."""
    return _dicts(database.execute_sql(_CLAIM, {"ids": email_ids, "lease_s": lease_s, "early_s": early_s}))


def seconds_until_due(email_ids: list[int]) -> dict[int, float]:
    """For emails that could not be claimed: seconds until each still PENDING one is due."""
    cursor = database.execute_sql(
        "SELECT id, extract(epoch FROM next_attempt_at - now())::float FROM emails "
        "WHERE id = ANY(%s::bigint[]) AND status = 'PENDING'", (email_ids,))
    return dict(cursor.fetchall())


_EVENT_FROM_UPDATE = """
WITH u AS ({update} RETURNING id)
INSERT INTO email_events (email_id, kind, detail) SELECT id, %(kind)s, %(detail)s FROM u RETURNING email_id
"""


def _change(update: str, kind: str, detail: dict, params: dict) -> bool:
    sql = _EVENT_FROM_UPDATE.format(update=update)
    cursor = database.execute_sql(sql, dict(params, kind=kind, detail=Json(detail)))
    return cursor.fetchone() is not None


_MARK_SENT = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(message_ids)s::text[], %(replies)s::text[]) AS t(id, message_id, reply)
), u AS (
    UPDATE emails e SET status = 'SENT', sent_at = now(), message_id = input.message_id, attempts = attempts + 1,
                        lease_until = NULL, last_error = NULL, updated_at = now()
    FROM input WHERE e.id = input.id AND e.status = 'SENDING'
    RETURNING e.id, input.message_id, input.reply
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'sent', jsonb_build_object('reply', reply, 'messageId', message_id) FROM u
)
SELECT id FROM u
UNION ALL
-- recorded by an earlier try whose answer was lost with its connection (this statement sees the rows as
-- they were before it, so none comes twice)
SELECT e.id FROM emails e JOIN input USING (id) WHERE e.status = 'SENT' AND e.message_id = input.message_id
"""


def mark_sent(sent: list[tuple[int, str, str]]) -> set[int]:
    """Record (email id, Message-ID, the relay's reply) sends in one statement; return the ids recorded
    (one missing had lost its claim: its lease ran out and the sweep took it back). Safe to repeat."""
    cursor = database.execute_sql(_MARK_SENT, {
        "ids": [s[0] for s in sent], "message_ids": [s[1] for s in sent], "replies": [s[2] for s in sent]})
    return {row[0] for row in cursor.fetchall()}


def mark_failed(email_id: int, *, error: str, code: int | None) -> bool:
    return _change(
        "UPDATE emails SET status = 'FAILED', attempts = attempts + 1, lease_until = NULL, "
        "last_error = %(error)s, updated_at = now() WHERE id = %(id)s AND status = 'SENDING'",
        "failed", {"code": code, "error": error}, {"id": email_id, "error": error})


def retry_later(email_id: int, *, delay_s: float, error: str, code: int | None) -> bool:
    return _change(
        "UPDATE emails SET status = 'PENDING', attempts = attempts + 1, queued_at = NULL, lease_until = NULL, "
        "next_attempt_at = now() + %(delay_s)s * interval '1 second', last_error = %(error)s, updated_at = now() "
        "WHERE id = %(id)s AND status = 'SENDING'",
        "attempt_failed", {"code": code, "error": error, "retryInSeconds": round(delay_s, 3)},
        {"id": email_id, "delay_s": delay_s, "error": error})


def defer_for_cap(email_id: int, *, delay_s: float) -> bool:
    """Put a claimed email back for when its sender's cap frees a slot; no attempt is used."""
    sql = """
WITH u AS (
    UPDATE emails SET status = 'PENDING', queued_at = NULL, lease_until = NULL, updated_at = now(),
                      next_attempt_at = now() + %(delay_s)s * interval '1 second'
    WHERE id = %(id)s AND status = 'SENDING' RETURNING id, next_attempt_at
)
INSERT INTO email_events (email_id, kind, detail)
SELECT id, 'rate_limited', jsonb_build_object('nextAttemptAt', next_attempt_at) FROM u RETURNING email_id
"""
    return database.execute_sql(sql, {"id": email_id, "delay_s": delay_s}).fetchone() is not None


def release(email_ids: list[int], *, reason: str, delay_s: float = 0.0) -> int:
    """Give claimed emails back before their SMTP conversation began (the worker is stopping, Redis
    failed under the cap check, or the relay failed for the email before them); no attempt is used.
    They are handed over again in `delay_s`."""
    sql = _EVENT_FROM_UPDATE.format(update=(
        "UPDATE emails SET status = 'PENDING', queued_at = NULL, lease_until = NULL, updated_at = now(), "
        "next_attempt_at = greatest(next_attempt_at, now() + %(delay_s)s * interval '1 second') "
        "WHERE id = ANY(%(ids)s::bigint[]) AND status = 'SENDING'"))
    cursor = database.execute_sql(sql, {"ids": email_ids, "delay_s": delay_s, "kind": "released",
                                        "detail": Json({"reason": reason})})
    return len(cursor.fetchall())


# -- recovery -------------------------------------------------------------

def expire_leases(*, max_attempts: int) -> list[tuple[int, str]]:
    """SENDING rows whose lease ran out (their worker died) go back to PENDING, or FAILED after
    `max_attempts`. The lost attempt counts: a row that kills its worker every time must end."""
    sql = """
WITH u AS (
    UPDATE emails SET attempts = attempts + 1, queued_at = NULL, lease_until = NULL, updated_at = now(),
        status = CASE WHEN attempts + 1 >= %(max)s THEN 'FAILED' ELSE 'PENDING' END,
        last_error = CASE WHEN attempts + 1 >= %(max)s THEN 'lease expired: the worker sending it stopped'
                          ELSE last_error END
    WHERE status = 'SENDING' AND lease_until < now()
    RETURNING id, status
)
INSERT INTO email_events (email_id, kind, detail)
SELECT id, 'lease_expired', jsonb_build_object('status', status) FROM u RETURNING email_id, detail->>'status'
"""
    return database.execute_sql(sql, {"max": max_attempts}).fetchall()


def requeue_stale(*, after_s: float) -> int:
    """Handed-over emails still PENDING well after their time were lost by Redis or a worker:
    clear their mark so that the next hand-over gives them to Dramatiq again."""
    cursor = database.execute_sql(
        "UPDATE emails SET queued_at = NULL WHERE status = 'PENDING' AND queued_at IS NOT NULL "
        "AND next_attempt_at < now() - %(s)s * interval '1 second' "
        "AND queued_at < now() - %(s)s * interval '1 second'", {"s": after_s})
    return cursor.rowcount


def requeue_all_queued() -> int:
    """Redis came back empty: every handed-over PENDING email must be handed over again."""
    cursor = database.execute_sql(
        "UPDATE emails SET queued_at = NULL WHERE status = 'PENDING' AND queued_at IS NOT NULL")
    return cursor.rowcount


# -- a user's changes -----------------------------------------------------

#: what a new email's answer, log line and hand-over need: not its body (up to 1 MiB) nor the other columns
STORED_COLUMNS = "id, sender_id, status, scheduled_at, next_attempt_at, queued_at, idempotency_key, payload_hash"

_INSERT_BATCH = f"""
WITH input AS (
    SELECT * FROM unnest(%(recipient)s::text[], %(subject)s::text[], %(body)s::text[], %(sender_id)s::text[],
                         %(scheduled_at)s::timestamptz[], %(idempotency_key)s::text[], %(payload_hash)s::text[])
        WITH ORDINALITY AS t(recipient, subject, body, sender_id, scheduled_at, idempotency_key, payload_hash, ord)
), ids AS (
    SELECT ord, nextval(pg_get_serial_sequence('emails', 'id')) AS id FROM input
), s AS (
    INSERT INTO senders (id) SELECT DISTINCT sender_id FROM input ORDER BY sender_id ON CONFLICT DO NOTHING
), e AS (
    INSERT INTO emails (id, recipient, subject, body, sender_id, scheduled_at, next_attempt_at,
                        queued_at, idempotency_key, payload_hash)
    SELECT ids.id, i.recipient, i.subject, i.body, i.sender_id, i.at, i.at,
           CASE WHEN i.at <= now() + %(horizon_s)s * interval '1 second' THEN now() END,
           i.idempotency_key, i.payload_hash
    FROM (SELECT *, greatest(scheduled_at, now()) AS at FROM input) i JOIN ids USING (ord)
    ORDER BY i.idempotency_key, i.ord  -- one lock order for every batch: two batches cannot deadlock
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING {STORED_COLUMNS}
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'created', jsonb_build_object('scheduledAt', scheduled_at) FROM e
    UNION ALL
    SELECT id, 'queued', jsonb_build_object('dueAt', next_attempt_at) FROM e WHERE queued_at IS NOT NULL
)
SELECT ids.ord, e.*, greatest(0, (extract(epoch FROM e.next_attempt_at - now()) * 1000))::bigint AS delay_ms
FROM e JOIN ids USING (id)
"""


def insert_batch(news: list[NewEmail], *, horizon_s: float) -> list[tuple[dict[str, Any], bool]]:
    """Store many emails in one statement; return (row, created) for each, in order (rows hold
    STORED_COLUMNS, and `delay_ms` when created).

    A key already stored returns its row with created=False,
    and rows due within `horizon_s` come back marked queued with their `delay_ms`.
    Without a transaction around it the statement commits on its own when it returns
    (all or none, and no BEGIN/COMMIT round trips); a caller that may still refuse
    the batch holds one (`database.atomic()`), and then nothing of it stays. Keys must
    be unique within `news`.
    """
    rows = inserted_rows(news, _dicts(database.execute_sql(_INSERT_BATCH, insert_params(news, horizon_s))))
    skipped = skipped_keys(news, rows)
    if skipped:
        add_stored_rows(rows, skipped, _dicts(database.execute_sql(_SELECT_BY_KEYS, (list(skipped),))))
    return rows  # type: ignore[return-value]


_PARAMS = (("recipient", "text[]"), ("subject", "text[]"), ("body", "text[]"), ("sender_id", "text[]"),
           ("scheduled_at", "timestamptz[]"), ("idempotency_key", "text[]"), ("payload_hash", "text[]"),
           ("horizon_s", "float8"))


def _numbered(sql: str) -> str:
    for number, (name, _) in enumerate(_PARAMS, 1):
        sql = sql.replace(f"%({name})s", f"${number}")
    assert "%(" not in sql, "every parameter of _INSERT_BATCH is in _PARAMS"
    return sql


#: run once on a connection of insert_batch_async: PostgreSQL then neither parses nor plans the statement
#: again (measured: 0.25 ms of the 1.0 ms a group of 8 took)
PREPARE_INSERT_BATCH = (f"PREPARE coldmail_insert_batch ({', '.join(t for _, t in _PARAMS)}) AS "
                        + _numbered(_INSERT_BATCH).replace("%%", "%"))
_EXECUTE_INSERT_BATCH = f"EXECUTE coldmail_insert_batch ({', '.join(f'%({name})s' for name, _ in _PARAMS)})"


async def insert_batch_async(fetch: Callable[[str, Any], Awaitable[list[dict[str, Any]]]], news: list[NewEmail], *,
                             horizon_s: float) -> list[tuple[dict[str, Any], bool]]:
    """insert_batch through `fetch(sql, params) -> rows as dicts`, an asynchronous connection in autocommit
    mode on which PREPARE_INSERT_BATCH ran: the statement has committed when its rows come back."""
    rows = inserted_rows(news, await fetch(_EXECUTE_INSERT_BATCH, insert_params(news, horizon_s)))
    skipped = skipped_keys(news, rows)
    if skipped:
        add_stored_rows(rows, skipped, await fetch(_SELECT_BY_KEYS, (list(skipped),)))
    return rows  # type: ignore[return-value]


_SELECT_BY_KEYS = f"SELECT {STORED_COLUMNS} FROM emails WHERE idempotency_key = ANY(%s)"
_INSERT_COLUMNS = ("recipient", "subject", "body", "sender_id", "scheduled_at", "idempotency_key", "payload_hash")


def insert_params(news: list[NewEmail], horizon_s: float) -> dict[str, Any]:
    """The parameters of _INSERT_BATCH (insert_batch, or a caller with its own connection).

    Each column goes as one array literal (text, cast by the statement): psycopg2
    adapts a list element by element, 5 of a 1000-email batch's ~30 ms of CPU.
    """
    params: dict[str, Any] = {c: _array_literal([getattr(n, c) for n in news]) for c in _INSERT_COLUMNS
                              if c != "scheduled_at"}
    params["scheduled_at"] = _array_literal([None if n.scheduled_at is None else n.scheduled_at.isoformat()
                                             for n in news])
    params["horizon_s"] = horizon_s
    return params


def _array_literal(values: list[str | None]) -> str:
    """PostgreSQL's text form of an array: every element double-quoted, with " and \\ escaped; NULL bare."""
    return "{" + ",".join("NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for v in values) + "}"


def inserted_rows(news: list[NewEmail], returned: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool] | None]:
    """_INSERT_BATCH's rows in the order of `news`: (row, True) where a row was made, None where its key was
    stored already."""
    rows: list[tuple[dict[str, Any], bool] | None] = [None] * len(news)
    for row in returned:
        rows[row.pop("ord") - 1] = (row, True)
    return rows


def skipped_keys(news: list[NewEmail], rows: list) -> dict[str, int]:
    """Idempotency keys ON CONFLICT skipped (stored before), and their place in `news`."""
    return {n.idempotency_key: i for i, n in enumerate(news) if rows[i] is None}


def add_stored_rows(rows: list, skipped: dict[str, int], found: list[dict[str, Any]]) -> None:
    """Fill in (row, False) for the skipped keys from _SELECT_BY_KEYS's rows."""
    for row in found:
        rows[skipped[row["idempotency_key"]]] = (row, False)
    assert all(r is not None for r in rows), "ON CONFLICT skipped only rows whose key is stored"


_CANCEL = f"""
WITH c AS (
    UPDATE emails SET status = 'CANCELLED', lease_until = NULL, updated_at = now()
    WHERE id = %(id)s AND status = 'PENDING'
    RETURNING {EMAIL_COLUMNS}
), ev AS (
    INSERT INTO email_events (email_id, kind, detail) SELECT id, 'cancelled', '{{}}'::jsonb FROM c
)
SELECT * FROM c
"""


def cancel(email_id: int) -> dict[str, Any] | None:
    """PENDING → CANCELLED; None if the email is not PENDING (a worker's claim won, or it is gone).

    A message for it still in Redis finds it not PENDING and is skipped.
    """
    return _one(database.execute_sql(_CANCEL, {"id": email_id}))


_RESCHEDULE = f"""
WITH old AS (
    SELECT id, scheduled_at FROM emails WHERE id = %(id)s AND status = 'PENDING' FOR UPDATE
), r AS (
    UPDATE emails e SET scheduled_at = t.at, next_attempt_at = t.at, updated_at = now(),
                        queued_at = CASE WHEN t.at <= now() + %(horizon_s)s * interval '1 second' THEN now() END
    FROM old, (SELECT greatest(%(at)s::timestamptz, now()) AS at) t
    WHERE e.id = old.id AND e.status = 'PENDING'
    RETURNING {", ".join("e." + c.strip() for c in EMAIL_COLUMNS.split(","))}, old.scheduled_at AS previous_at
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'rescheduled', jsonb_build_object('scheduledAt', scheduled_at, 'previousScheduledAt', previous_at)
    FROM r
    UNION ALL
    SELECT id, 'queued', jsonb_build_object('dueAt', next_attempt_at) FROM r WHERE queued_at IS NOT NULL
)
SELECT r.*, greatest(0, (extract(epoch FROM r.next_attempt_at - now()) * 1000))::bigint AS delay_ms FROM r
"""


def reschedule(email_id: int, *, at: datetime, horizon_s: float) -> dict[str, Any] | None:
    """Move a PENDING email to `at` (past: now); None if it is not PENDING.

    Its hand-over mark is cleared, or set anew if `at` is within the horizon (the
    caller then enqueues it with `delay_ms`). A message still in Redis for the old
    time finds `next_attempt_at` in the future, so the claim refuses it.
    """
    return _one(database.execute_sql(_RESCHEDULE, {"id": email_id, "at": at, "horizon_s": horizon_s}))
