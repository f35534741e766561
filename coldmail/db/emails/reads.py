"""Reads: one email and its events, pages of emails for GET /emails, the backlog for /metrics."""

from __future__ import annotations

from typing import Any

from ..connection import database
from ..models import Email, EmailEvent
from ..rows import dicts
from .columns import LIST_COLUMNS, PENDING, SENDING


def get_email(email_id: int) -> dict[str, Any] | None:
    return Email.select().where(Email.id == email_id).dicts().get_or_none()


def list_events(email_id: int) -> list[dict[str, Any]]:
    return list(EmailEvent.select(EmailEvent.id, EmailEvent.kind, EmailEvent.detail, EmailEvent.created_at)
                .where(EmailEvent.email_id == email_id).order_by(EmailEvent.id).dicts())


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
    rows = dicts(database.execute_sql(sql, params))
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, rows[-1]["id"]
    return rows, None


LIVE_COUNT = f"SELECT status, count(*) FROM emails WHERE status IN ({PENDING}, {SENDING}) GROUP BY status"


def count_live(*, timeout_ms: int = 2000) -> dict[str, int]:
    """Emails PENDING and SENDING: the backlog, read from emails_status_id in time proportional to it,
    not to the whole history (SENT rows pile up for ever). A scrape must not hang on a busy database:
    the count gives up after `timeout_ms`, and the caller then reports nothing rather than a wrong figure."""
    with database.atomic():
        database.execute_sql("SET LOCAL statement_timeout = %s", (int(timeout_ms),))
        rows = database.execute_sql(LIVE_COUNT).fetchall()
    return {status: count for status, count in rows}
