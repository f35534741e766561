"""A user's requests: store new emails (many in one statement), cancel one, reschedule one.

New emails go in through one INSERT whatever their number: each column a request
supplies travels as one array, and the statement also creates unknown senders,
skips idempotency keys stored before, stores an email to a suppressed address
SUPPRESSED (never handed over), marks what is due within the hand-over horizon
and writes every event. The group commit runs it prepared, on its own
asynchronous connections (PREPARE_INSERT_BATCH, insert_batch_async).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Awaitable, Callable

from ...addresses import normalise
from ..connection import database
from ..models import Email
from ..outbox import outbox
from ..rows import column_list, dicts, one
from .columns import CANCELLED, EMAIL_COLUMNS, PENDING, STORED_COLUMNS, STORED_FIELDS, SUPPRESSED
from .due import delay_ms, due_at, queued_if_near


@dataclass(frozen=True)
class NewEmail:
    """An email as a schedule request gives it, with the account of the request's key: each field is the Email
    column it is stored in."""
    account: str
    recipient: str
    subject: str
    body: str
    sender_id: str
    scheduled_at: datetime | None
    idempotency_key: str | None
    payload_hash: str
    #: List-Unsubscribe on its message: false for transactional mail
    unsubscribe: bool = True
    #: the chain it belongs to, whether a reply stops it, and the earlier email whose thread it continues
    sequence: str | None = None
    stop_on_reply: bool = False
    in_reply_to: int | None = None
    #: the zone its sender's window is read in (None: the sender's)
    recipient_time_zone: str | None = None
    #: the recipient as suppressions are matched (coldmail.addresses.normalise), always derived from it
    recipient_key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipient_key", normalise(self.recipient))


# How a column of each type travels in the INSERT's arrays: its PostgreSQL array type, and what turns a value
# into text (None: it is text already).
_AS_TEXT: dict[str, tuple[str, Callable[[Any], str] | None]] = {
    "TEXT": ("text[]", None), "TIMESTAMPTZ": ("timestamptz[]", datetime.isoformat),
    "BOOL": ("boolean[]", lambda flag: "true" if flag else "false"), "BIGINT": ("bigint[]", str)}


def _travels_as(name: str) -> tuple[str, Callable[[Any], str] | None]:
    field = Email._meta.fields.get(name)
    if field is None or field.field_type not in _AS_TEXT:
        raise TypeError(f"NewEmail.{name} must be an Email column of a type in _AS_TEXT")
    return _AS_TEXT[field.field_type]


#: the columns a request supplies: NewEmail's fields, in its order
SUPPLIED_COLUMNS = tuple(field.name for field in fields(NewEmail))
_TRAVELS_AS = {name: _travels_as(name) for name in SUPPLIED_COLUMNS}

_INPUT = ", ".join(SUPPLIED_COLUMNS)
# what the INSERT stores from each input column: the request's value, but when it is due for the time asked
_STORED_FROM_INPUT = ", ".join("i.at" if name == "scheduled_at" else f"i.{name}" for name in SUPPLIED_COLUMNS)

_INSERT_BATCH = f"""
WITH input AS (
    SELECT * FROM unnest({", ".join(f"%({name})s::{_TRAVELS_AS[name][0]}" for name in SUPPLIED_COLUMNS)})
        WITH ORDINALITY AS t({_INPUT}, ord)
), ids AS (
    SELECT ord, nextval(pg_get_serial_sequence('emails', 'id')) AS id FROM input
), s AS (
    INSERT INTO senders (account, id) SELECT DISTINCT account, sender_id FROM input ORDER BY account, sender_id
    ON CONFLICT DO NOTHING
), nb AS (
    SELECT * FROM unnest(%(not_before)s::timestamptz[]) WITH ORDINALITY AS t(not_before, ord)
), e AS (
    INSERT INTO emails (id, {_INPUT}, next_attempt_at, status, queued_at)
    SELECT ids.id, {_STORED_FROM_INPUT}, greatest(i.at, nb.not_before),
           CASE WHEN x.reason IS NULL THEN {PENDING} ELSE {SUPPRESSED} END,
           CASE WHEN x.reason IS NULL THEN {queued_if_near("greatest(i.at, nb.not_before)")} END
    FROM (SELECT *, {due_at("scheduled_at")} AS at FROM input) i JOIN ids USING (ord) LEFT JOIN nb USING (ord)
    LEFT JOIN suppressions x ON x.account = i.account AND x.address = i.recipient_key
    ORDER BY i.account, i.idempotency_key, i.ord  -- one lock order for every batch: two cannot deadlock
    ON CONFLICT (account, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING {STORED_COLUMNS}
), sup AS (
    -- the ones stored SUPPRESSED, as the outbox reads an email (not yet sent: no attempt, no Message-ID)
    SELECT e.id, e.account, input.recipient, input.subject, e.sender_id, e.status, e.scheduled_at,
           NULL::timestamptz AS sent_at, 0 AS attempts, NULL::text AS last_error, NULL::text AS message_id,
           x.reason
    FROM e JOIN ids USING (id) JOIN input USING (ord)
    JOIN suppressions x ON x.account = input.account AND x.address = input.recipient_key
    WHERE e.status = {SUPPRESSED}
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'created', jsonb_build_object('scheduledAt', scheduled_at) FROM e
    UNION ALL
    SELECT id, 'queued', jsonb_build_object('dueAt', next_attempt_at) FROM e WHERE queued_at IS NOT NULL
    UNION ALL
    SELECT id, 'suppressed', jsonb_build_object('reason', reason) FROM sup
), wh AS ({outbox("sup", "email.suppressed", detail="jsonb_build_object('reason', src.reason)")}
)
SELECT ids.ord, e.*, {delay_ms("e.next_attempt_at")} AS delay_ms
FROM e JOIN ids USING (id)
"""

_SELECT_BY_KEYS = f"""
SELECT {column_list(STORED_FIELDS, prefix="e.")} FROM emails e
JOIN unnest(%s::text[], %s::text[]) AS k(account, idempotency_key) USING (account, idempotency_key)
"""


def insert_batch(news: list[NewEmail], *, horizon_s: float,
                 not_before: list[datetime | None] | None = None) -> list[tuple[dict[str, Any], bool]]:
    """Store many emails in one statement; return (row, created) for each, in order (rows hold
    STORED_COLUMNS, and `delay_ms` when created).

    A key already stored in the email's account returns its row with created=False,
    and rows due within `horizon_s` come back marked queued with their `delay_ms`.
    Without a transaction around it the statement commits on its own when it returns
    (all or none, and no BEGIN/COMMIT round trips); a caller that may still refuse
    the batch holds one (`database.atomic()`), and then nothing of it stays. (account,
    key) pairs must be unique within `news`. `not_before` gives, per email, the opening of its sender's window
    when its time falls outside it (None: its own time).
    """
    rows = _inserted_rows(news, dicts(database.execute_sql(_INSERT_BATCH,
                                                           _insert_params(news, horizon_s, not_before))))
    skipped = _skipped_keys(news, rows)
    if skipped:
        _add_stored_rows(rows, skipped, dicts(database.execute_sql(_SELECT_BY_KEYS, _key_params(skipped))))
    return rows  # type: ignore[return-value]


_PARAMS = tuple((name, _TRAVELS_AS[name][0]) for name in SUPPLIED_COLUMNS) + (
    ("not_before", "timestamptz[]"), ("horizon_s", "float8"))


def _numbered(sql: str) -> str:
    for number, (name, _) in enumerate(_PARAMS, 1):
        sql = sql.replace(f"%({name})s", f"${number}")
    assert "%(" not in sql, "every parameter of _INSERT_BATCH is in _PARAMS"
    return sql


#: run once on a connection of insert_batch_async: PostgreSQL then neither parses nor plans the statement again
PREPARE_INSERT_BATCH = (f"PREPARE coldmail_insert_batch ({', '.join(t for _, t in _PARAMS)}) AS "
                        + _numbered(_INSERT_BATCH).replace("%%", "%"))
_EXECUTE_INSERT_BATCH = f"EXECUTE coldmail_insert_batch ({', '.join(f'%({name})s' for name, _ in _PARAMS)})"


async def insert_batch_async(fetch: Callable[[str, Any], Awaitable[list[dict[str, Any]]]], news: list[NewEmail], *,
                             horizon_s: float, not_before: list[datetime | None] | None = None
                             ) -> list[tuple[dict[str, Any], bool]]:
    """insert_batch through `fetch(sql, params) -> rows as dicts`, an asynchronous connection in autocommit
    mode on which PREPARE_INSERT_BATCH ran: the statement has committed when its rows come back."""
    rows = _inserted_rows(news, await fetch(_EXECUTE_INSERT_BATCH, _insert_params(news, horizon_s, not_before)))
    skipped = _skipped_keys(news, rows)
    if skipped:
        _add_stored_rows(rows, skipped, await fetch(_SELECT_BY_KEYS, _key_params(skipped)))
    return rows  # type: ignore[return-value]


def _insert_params(news: list[NewEmail], horizon_s: float,
                   not_before: list[datetime | None] | None = None) -> dict[str, Any]:
    """The parameters of _INSERT_BATCH.

    Each column goes as one array literal (text, cast by the statement): psycopg2
    would adapt a list element by element, slowly for a large batch.
    """
    params: dict[str, Any] = {}
    for name in SUPPLIED_COLUMNS:
        values = [getattr(n, name) for n in news]
        to_text = _TRAVELS_AS[name][1]
        if to_text is not None:
            values = [None if v is None else to_text(v) for v in values]
        params[name] = _array_literal(values)
    params["not_before"] = "{}" if not_before is None or not any(not_before) else _array_literal(
        [None if t is None else t.isoformat() for t in not_before])
    params["horizon_s"] = horizon_s
    return params


def _array_literal(values: list[str | None]) -> str:
    """PostgreSQL's text form of an array: every element double-quoted, with " and \\ escaped; NULL bare."""
    return "{" + ",".join("NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for v in values) + "}"


def _inserted_rows(news: list[NewEmail], returned: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool] | None]:
    """_INSERT_BATCH's rows in the order of `news`: (row, True) where a row was made, None where its key was
    stored already."""
    rows: list[tuple[dict[str, Any], bool] | None] = [None] * len(news)
    for row in returned:
        rows[row.pop("ord") - 1] = (row, True)
    return rows


def _skipped_keys(news: list[NewEmail], rows: list) -> dict[tuple[str, str], int]:
    """(account, idempotency key) pairs ON CONFLICT skipped (stored before), and their place in `news`."""
    return {(n.account, n.idempotency_key): i for i, n in enumerate(news) if rows[i] is None}  # type: ignore[misc]


def _key_params(skipped: dict[tuple[str, str], int]) -> tuple[list[str], list[str]]:
    """_SELECT_BY_KEYS's parameters: the accounts, and the keys."""
    return [account for account, _ in skipped], [key for _, key in skipped]


def _add_stored_rows(rows: list, skipped: dict[tuple[str, str], int], found: list[dict[str, Any]]) -> None:
    """Fill in (row, False) for the skipped keys from _SELECT_BY_KEYS's rows."""
    for row in found:
        rows[skipped[(row["account"], row["idempotency_key"])]] = (row, False)
    assert all(r is not None for r in rows), "ON CONFLICT skipped only rows whose key is stored"


_CANCEL = f"""
WITH c AS (
    UPDATE emails SET status = {CANCELLED}, lease_until = NULL, updated_at = now()
    WHERE id = %(id)s AND account = %(account)s AND status = {PENDING}
    RETURNING {EMAIL_COLUMNS}
), ev AS (
    INSERT INTO email_events (email_id, kind, detail) SELECT id, 'cancelled', '{{}}'::jsonb FROM c
), wh AS ({outbox("c", "email.cancelled")}
)
SELECT * FROM c
"""


def cancel(account: str, email_id: int) -> dict[str, Any] | None:
    """PENDING → CANCELLED; None if the email is not the account's PENDING one (a worker's claim won, or it
    is gone, or another account's).

    A message for it still in Redis finds it not PENDING and is skipped.
    """
    return one(database.execute_sql(_CANCEL, {"id": email_id, "account": account}))


_RESCHEDULE = f"""
WITH old AS (
    SELECT id, scheduled_at FROM emails WHERE id = %(id)s AND account = %(account)s AND status = {PENDING}
    FOR UPDATE
), r AS (
    UPDATE emails e SET scheduled_at = t.at, next_attempt_at = t.next_at, updated_at = now(),
                        queued_at = {queued_if_near("t.next_at")}
    FROM old, (SELECT at, greatest(at, %(not_before)s::timestamptz) AS next_at
               FROM (SELECT {due_at("%(at)s::timestamptz")} AS at) a) t
    WHERE e.id = old.id AND e.status = {PENDING}
    RETURNING {column_list(Email._meta.sorted_fields, prefix="e.")}, old.scheduled_at AS previous_at
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'rescheduled', jsonb_build_object('scheduledAt', scheduled_at, 'previousScheduledAt', previous_at)
    FROM r
    UNION ALL
    SELECT id, 'queued', jsonb_build_object('dueAt', next_attempt_at) FROM r WHERE queued_at IS NOT NULL
)
SELECT r.*, {delay_ms("r.next_attempt_at")} AS delay_ms FROM r
"""


def reschedule(account: str, email_id: int, *, at: datetime, horizon_s: float,
               not_before: datetime | None = None) -> dict[str, Any] | None:
    """Move the account's PENDING email to `at` (past: now), due no earlier than `not_before` (its sender's
    window's opening); None if it is not that.

    Its hand-over mark is cleared, or set anew if `at` is within the horizon (the
    caller then enqueues it with `delay_ms`). A message still in Redis for the old
    time finds `next_attempt_at` in the future, so the claim refuses it.
    """
    return one(database.execute_sql(_RESCHEDULE, {"id": email_id, "account": account, "at": at,
                                                  "horizon_s": horizon_s, "not_before": not_before}))
