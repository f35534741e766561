"""Senders: their From address, cap and relay, and their sends in the current window."""

from __future__ import annotations

from typing import Any

from .connection import database
from .emails import _one

SENDER_COLUMNS = "id, from_address, hourly_limit, smtp_url, smtp_password_enc, created_at, updated_at"


def get_sender(sender_id: str) -> dict[str, Any] | None:
    return _one(database.execute_sql(f"SELECT {SENDER_COLUMNS} FROM senders WHERE id = %s", (sender_id,)))


def put_sender(sender_id: str, *, from_address: str | None, hourly_limit: int | None, smtp_url: str | None,
               smtp_password_enc: str | None, keep_password: bool) -> tuple[dict[str, Any], bool]:
    """Create or replace a sender; return (row, created). `keep_password` leaves a stored password as it is."""
    sql = f"""
INSERT INTO senders AS s (id, from_address, hourly_limit, smtp_url, smtp_password_enc)
VALUES (%(id)s, %(from)s, %(limit)s, %(url)s, %(pw)s)
ON CONFLICT (id) DO UPDATE SET
    from_address = EXCLUDED.from_address, hourly_limit = EXCLUDED.hourly_limit, smtp_url = EXCLUDED.smtp_url,
    smtp_password_enc = CASE WHEN %(keep)s THEN s.smtp_password_enc ELSE EXCLUDED.smtp_password_enc END,
    updated_at = now()
RETURNING {SENDER_COLUMNS}, (xmax = 0) AS created
"""
    row = _one(database.execute_sql(sql, {
        "id": sender_id, "from": from_address, "limit": hourly_limit, "url": smtp_url,
        "pw": smtp_password_enc, "keep": keep_password}))
    created = row.pop("created")
    return row, created


def sends_in_window(sender_id: str, *, window_s: float) -> list[tuple[str, int]]:
    """(email id, ms since epoch) of the sender's sends in the last window, and of its sends under way.

    This is what the cap rebuilds itself from when Redis lost it: a send under
    way (SENDING) has its slot already, so it counts from now.
    """
    sql = """
SELECT id::text, (extract(epoch FROM sent_at) * 1000)::bigint FROM emails
WHERE sender_id = %(s)s AND sent_at > now() - %(w)s * interval '1 second'
UNION ALL
SELECT id::text, (extract(epoch FROM now()) * 1000)::bigint FROM emails
WHERE sender_id = %(s)s AND status = 'SENDING'
"""
    return [(row[0], row[1]) for row in database.execute_sql(sql, {"s": sender_id, "w": window_s}).fetchall()]
