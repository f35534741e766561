"""Read-only look-ups over many emails: pages for GET /emails, the backlog for /metrics."""

from __future__ import annotations

from typing import Any

from .connection import database
from .emails import _dicts

#: what a listing shows: never the body, which may be a megabyte per row
LIST_COLUMNS = (
    "id, recipient, subject, sender_id, status, scheduled_at, next_attempt_at, attempts, last_error, "
    "message_id, sent_at, created_at, updated_at")


def page_query(*, status: str | None, sender_id: str | None, after: int | None, limit: int) -> tuple[str, dict]:
    """Newest first, keyset on id: each filter has an index ending in `id DESC` (emails_status_id,
    emails_sender_id; the primary key without a filter), so a page reads `limit` index entries
    however deep it is, where OFFSET would read every row before it."""
    where = []
    if status is not None:
        where.append("status = %(status)s")
    if sender_id is not None:
        where.append("sender_id = %(sender_id)s")
    if after is not None:
        where.append("id < %(after)s")
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    sql = f"SELECT {LIST_COLUMNS} FROM emails {clause}ORDER BY id DESC LIMIT %(limit)s"
    return sql, {"status": status, "sender_id": sender_id, "after": after, "limit": limit}


def list_emails(*, status: str | None = None, sender_id: str | None = None, after: int | None = None,
                limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """One page and the cursor of the next (None on the last page)."""
    sql, params = page_query(status=status, sender_id=sender_id, after=after, limit=limit + 1)
    rows = _dicts(database.execute_sql(sql, params))
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, rows[-1]["id"]
    return rows, None


LIVE_COUNT = "SELECT status, count(*) FROM emails WHERE status IN ('PENDING', 'SENDING') GROUP BY status"


def count_live(*, timeout_ms: int = 2000) -> dict[str, int]:
    """Emails PENDING and SENDING: the backlog, read from emails_status_id in time proportional to it,
    not to the whole history (SENT rows pile up for ever). A scrape must not hang on a busy database:
    the count gives up after `timeout_ms`, and the caller then reports nothing rather than a wrong figure."""
    with database.atomic():
        database.execute_sql("SET LOCAL statement_timeout = %s", (int(timeout_ms),))
        rows = database.execute_sql(LIVE_COUNT).fetchall()
    return {status: count for status, count in rows}
