"""Reading and setting rows straight in the test database (the session's, opened by the database_url
fixture), for what the API does not show or for a state it cannot make."""

from __future__ import annotations

from collections import Counter
from typing import Callable

from coldmail.db import database


def sql(query: str, *params) -> list[tuple]:
    """Run one statement on a connection of its own; its rows, or [] for a statement that returns none."""
    with database.connection_context():
        cursor = database.execute_sql(query, params)
        return cursor.fetchall() if cursor.description else []


def statuses() -> Counter:
    """How many emails are in each status."""
    return Counter(dict(sql("SELECT status, count(*) FROM emails GROUP BY status")))


def sending_ids() -> list[int]:
    return [email_id for (email_id,) in sql("SELECT id FROM emails WHERE status = 'SENDING'")]


def event_kinds(email_id: int) -> list[str]:
    """The kinds of an email's events, oldest first."""
    return [kind for (kind,) in sql("SELECT kind FROM email_events WHERE email_id = %s ORDER BY id", email_id)]


def all_sent(n: int) -> Callable[[], bool]:
    """A check for wait_for: exactly `n` emails are SENT."""
    return lambda: statuses().get("SENT", 0) == n
