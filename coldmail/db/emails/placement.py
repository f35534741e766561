"""Placing a sender's PENDING emails again, in bulk, when its zone or window changed.

One read of the sender's PENDING emails (their own time: scheduledAt, or now for
a retry), the new times computed by the caller, then UPDATEs of CHUNK rows each,
every one a compare-and-set on PENDING (a worker's claim meanwhile wins; its own
window check then applies the new window) with its `deferred` event (reason
`window`), all in one transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from ..connection import database
from .columns import PENDING
from .due import HELD_BY_PAUSE, due_at

CHUNK = 5000

_PENDING = f"""
SELECT id, {due_at("CASE WHEN attempts = 0 THEN scheduled_at ELSE now() END")} AS own_at, next_attempt_at,
       recipient_time_zone
FROM emails e WHERE account = %(account)s AND sender_id = %(sender)s AND status = {PENDING}
"""

#: a paused sender's emails the pause moved out of the way stay there: resuming the sender makes them due again
#: (coldmail.db.emails.handover.resume_paused)
_NOT_HELD = f"  AND NOT {HELD_BY_PAUSE}\n"

_MOVE = f"""
WITH v AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(ats)s::timestamptz[]) AS v(id, at)
), m AS (
    UPDATE emails e SET next_attempt_at = v.at, queued_at = NULL, updated_at = now()
    FROM v WHERE e.id = v.id AND e.account = %(account)s AND e.sender_id = %(sender)s AND e.status = {PENDING}
    RETURNING e.id, e.next_attempt_at
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'deferred', jsonb_build_object('reason', 'window', 'nextAttemptAt', next_attempt_at) FROM m
)
SELECT count(*) FROM m
"""


def place_again(account: str, sender_id: str, new_time: Callable[[datetime, str | None], datetime], *,
                paused: bool = False) -> int:
    """Give each of the sender's PENDING emails the time `new_time(its own time, its recipient's zone)`; write
    only those whose time changes. Of a `paused` sender, those its pause holds are left where it put them.
    Returns how many moved."""
    with database.atomic():
        rows = database.execute_sql(_PENDING + (_NOT_HELD if paused else ""),
                                    {"account": account, "sender": sender_id}).fetchall()
        ids: list[int] = []
        ats: list[datetime] = []
        for email_id, own_at, next_at, zone in rows:
            at = new_time(own_at, zone)
            if at != next_at:
                ids.append(email_id)
                ats.append(at)
        moved = 0
        for i in range(0, len(ids), CHUNK):
            # arrays as their text form: psycopg2 would adapt a list item by item
            cursor = database.execute_sql(_MOVE, {
                "ids": "{" + ",".join(map(str, ids[i:i + CHUNK])) + "}",
                "ats": "{" + ",".join(f'"{at.isoformat()}"' for at in ats[i:i + CHUNK]) + "}",
                "account": account, "sender": sender_id})
            moved += cursor.fetchone()[0]
    return moved
