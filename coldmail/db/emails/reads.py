"""Reads: one email and its events, pages of emails for GET /emails, the backlog for /metrics.

A user's reads name the account: another account's email is not found, as if absent.
"""

from __future__ import annotations

from typing import Any

from ..connection import database
from ..models import Email, EmailEvent
from ..rows import dicts
from .columns import LIST_COLUMNS, PENDING, SENDING


def get_email(account: str, email_id: int) -> dict[str, Any] | None:
    return Email.select().where((Email.id == email_id) & (Email.account == account)).dicts().get_or_none()


def list_events(email_id: int) -> list[dict[str, Any]]:
    """The email's events, oldest first; the caller checked that the email is the account's (get_email)."""
    return list(EmailEvent.select(EmailEvent.id, EmailEvent.kind, EmailEvent.detail, EmailEvent.created_at)
                .where(EmailEvent.email_id == email_id).order_by(EmailEvent.id).dicts())


def page_query(*, account: str, status: str | None, sender_id: str | None, after: int | None,
               limit: int, sequence: str | None = None) -> tuple[str, dict]:
    """The account's emails, newest first, keyset on id: each filter has an index that begins with the account
    and ends in `id DESC` (emails_account_id without a filter, emails_status_id, emails_sender_id,
    emails_sender_status_id, emails_sequence_id), so a page reads `limit` index entries however deep it is and however many
    emails other accounts have, where OFFSET would read every row before it."""
    where = ["account = %(account)s"]
    if status is not None:
        where.append("status = %(status)s")
    if sender_id is not None:
        where.append("sender_id = %(sender_id)s")
    if sequence is not None:
        where.append("sequence = %(sequence)s")
    if after is not None:
        where.append("id < %(after)s")
    sql = f"SELECT {LIST_COLUMNS} FROM emails WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %(limit)s"
    return sql, {"account": account, "status": status, "sender_id": sender_id, "after": after, "limit": limit,
                 "sequence": sequence}


def list_emails(account: str, *, status: str | None = None, sender_id: str | None = None, after: int | None = None,
                limit: int, sequence: str | None = None) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the account's emails and the cursor of the next (None on the last page)."""
    sql, params = page_query(account=account, status=status, sender_id=sender_id, after=after, limit=limit + 1,
                             sequence=sequence)
    rows = dicts(database.execute_sql(sql, params))
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, rows[-1]["id"]
    return rows, None


# Across every account, through the hand-over's and the sweep's partial indexes (emails_due, emails_queued,
# emails_sending), which hold exactly the live emails: the listing indexes begin with the account.
LIVE_COUNT = f"""
SELECT status, sum(n)::bigint FROM (
    SELECT {PENDING} AS status, count(*) AS n FROM emails WHERE status = {PENDING} AND queued_at IS NULL
    UNION ALL
    SELECT {PENDING}, count(*) FROM emails WHERE status = {PENDING} AND queued_at IS NOT NULL
    UNION ALL
    SELECT {SENDING}, count(*) FROM emails WHERE status = {SENDING}
) live GROUP BY status
"""


def count_live(*, timeout_ms: int = 2000) -> dict[str, int]:
    """Emails PENDING and SENDING: the backlog, read from partial indexes in time proportional to it,
    not to the whole history (SENT rows pile up for ever). A scrape must not hang on a busy database:
    the count gives up after `timeout_ms`, and the caller then reports nothing rather than a wrong figure."""
    with database.atomic():
        database.execute_sql("SET LOCAL statement_timeout = %s", (int(timeout_ms),))
        rows = database.execute_sql(LIVE_COUNT).fetchall()
    return {status: count for status, count in rows}
