"""Threads: the earlier emails a new one may continue, and the chain of Message-IDs a follow-up's headers name."""

from __future__ import annotations

from typing import Any

from ..connection import database
from ..rows import dicts

_PARENTS = "SELECT id, coalesce(recipient_key, lower(recipient)) FROM emails WHERE account = %s AND id = ANY(%s::bigint[])"


def recipients_of(account: str, email_ids: list[int]) -> dict[int, str]:
    """The account's emails among `email_ids`, each with its normalised recipient (another account's: absent)."""
    return dict(database.execute_sql(_PARENTS, (account, email_ids)).fetchall())


#: the thread above an email, nearest first: each ancestor's id, creation time, Message-ID if it was sent, and its
#: sender's From address (to make the Message-ID it will have when it was not sent yet); 100 deep at most
_CHAIN = """
WITH RECURSIVE up(id, depth) AS (
    SELECT in_reply_to, 1 FROM emails WHERE id = %(id)s AND in_reply_to IS NOT NULL
    UNION ALL
    SELECT e.in_reply_to, up.depth + 1 FROM up JOIN emails e ON e.id = up.id
    WHERE e.in_reply_to IS NOT NULL AND up.depth < 100
)
SELECT e.id, e.created_at, e.message_id, s.from_address FROM up
JOIN emails e ON e.id = up.id AND e.account = %(account)s
LEFT JOIN senders s ON s.account = e.account AND s.id = e.sender_id
ORDER BY up.depth
"""


def ancestors(account: str, email_id: int) -> list[dict[str, Any]]:
    return dicts(database.execute_sql(_CHAIN, {"id": email_id, "account": account}))
