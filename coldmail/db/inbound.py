"""The statements of inbound mail: each message once, the email it names, and what it does to that email.

Every effect is one statement that changes the email and writes its audit event and webhook outbox rows
together. A reply's statement also cancels the recipient's PENDING emails of the same sequence and sender:
an UPDATE ... WHERE status = PENDING racing the worker's claim (also a compare-and-set on PENDING) on the
row's lock, so each follow-up is either claimed first (SENDING: it may still go) or cancelled, never both.
"""

from __future__ import annotations

from typing import Any

from psycopg2.extras import Json

from .connection import database
from .emails.columns import BOUNCED, CANCELLED, PENDING, SENT
from .outbox import outbox, returning
from .rows import dicts, one

_FIRST_SEEN = """
INSERT INTO inbound_messages (account, dedupe_key) VALUES (%s, %s)
ON CONFLICT (account, dedupe_key) DO NOTHING RETURNING true
"""
#: FOR UPDATE: a message matched again (seen before without an email) is matched by one delivery at a time
_SEEN_BEFORE = "SELECT kind, email_id FROM inbound_messages WHERE account = %s AND dedupe_key = %s FOR UPDATE"
_RECORD = "UPDATE inbound_messages SET kind = %s, email_id = %s WHERE account = %s AND dedupe_key = %s"


def first_seen(account: str, key: str) -> bool:
    """Take the message's row; False when the account had it before. A second delivery at the same moment waits
    on the primary key for the first's transaction, then finds the row: one of the two acts."""
    return database.execute_sql(_FIRST_SEEN, (account, key)).fetchone() is not None


def seen_before(account: str, key: str) -> tuple[str, int | None]:
    kind, email_id = database.execute_sql(_SEEN_BEFORE, (account, key)).fetchone()
    return kind, email_id


def record(account: str, key: str, kind: str, email_id: int | None) -> None:
    database.execute_sql(_RECORD, (kind, email_id, account, key))


_BY_MESSAGE_ID = """
SELECT e.id, e.recipient, e.sender_id, e.account FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS m(message_id, ord)
JOIN emails e ON e.account = %(account)s AND e.message_id = m.message_id
WHERE %(sender)s::text IS NULL OR e.sender_id = %(sender)s
ORDER BY m.ord LIMIT 1
"""
_BY_ID = """
SELECT id, recipient, sender_id, account FROM emails
WHERE id = ANY(%(ids)s::bigint[]) AND account = %(account)s AND message_id IS NOT NULL
  AND (%(sender)s::text IS NULL OR sender_id = %(sender)s)
ORDER BY array_position(%(ids)s::bigint[], id) LIMIT 1
"""


def find_sent(account: str, *, message_ids: tuple[str, ...] = (), email_ids: tuple[int, ...] = (),
              sender_id: str | None = None) -> dict[str, Any] | None:
    """The account's sent email with the first of `message_ids` (its Message-ID as sent), else of `email_ids`
    (an X-Coldmail-Id in a returned copy); only the sender's when `sender_id` is given."""
    params = {"account": account, "sender": sender_id}
    if message_ids:
        row = one(database.execute_sql(_BY_MESSAGE_ID, dict(params, ids=list(message_ids))))
        if row is not None:
            return row
    if email_ids:
        return one(database.execute_sql(_BY_ID, dict(params, ids=list(email_ids))))
    return None


_BOUNCE = f"""
WITH b AS (
    UPDATE emails SET status = {BOUNCED}, bounced_at = coalesce(bounced_at, now()), last_error = %(error)s,
                      updated_at = now()
    WHERE id = %(id)s AND account = %(account)s AND status = {SENT}
    RETURNING {returning()}
), ev AS (
    INSERT INTO email_events (email_id, kind, detail) SELECT id, 'bounced', %(detail)s FROM b
), wh AS ({outbox("b", "email.bounced", detail="%(detail)s")}
)
SELECT id FROM b
"""


def bounce(account: str, email_id: int, *, detail: dict, error: str) -> bool:
    """SENT → BOUNCED with a `bounced` event and email.bounced; False when it was not SENT (bounced before, or
    failed at RCPT TO already)."""
    params = {"account": account, "id": email_id, "error": error, "detail": Json(detail)}
    return database.execute_sql(_BOUNCE, params).fetchone() is not None


def _event(kind: str, webhook: str | None) -> str:
    deliveries = f", wh AS ({outbox('e', webhook, detail='%(detail)s')})" if webhook else ""
    return f"""
WITH e AS (SELECT {returning()} FROM emails WHERE id = %(id)s AND account = %(account)s
), ev AS (
    INSERT INTO email_events (email_id, kind, detail) SELECT id, '{kind}', %(detail)s FROM e
){deliveries}
SELECT id FROM e
"""


_COMPLAINED = _event("complained", "email.complained")
_AUTO_REPLIED = _event("auto_replied", None)


def complained(account: str, email_id: int, *, detail: dict) -> None:
    database.execute_sql(_COMPLAINED, {"account": account, "id": email_id, "detail": Json(detail)})


def auto_replied(account: str, email_id: int, *, detail: dict) -> None:
    database.execute_sql(_AUTO_REPLIED, {"account": account, "id": email_id, "detail": Json(detail)})


_REPLIED = f"""
WITH r AS (
    UPDATE emails SET replied_at = coalesce(replied_at, now()), updated_at = now()
    WHERE id = %(id)s AND account = %(account)s
    RETURNING {returning()}, recipient_key, sequence
), c AS (
    UPDATE emails e SET status = {CANCELLED}, queued_at = NULL, lease_until = NULL, updated_at = now()
    FROM r
    WHERE e.account = r.account AND e.recipient_key = r.recipient_key AND e.status = {PENDING}
      AND e.sequence = r.sequence AND e.sender_id = r.sender_id AND e.stop_on_reply AND e.id <> r.id
    RETURNING {returning("e.")}
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'replied', %(detail)s FROM r
    UNION ALL
    SELECT id, 'cancelled', jsonb_build_object('reason', 'replied', 'replyTo', %(id)s::bigint) FROM c
), wr AS ({outbox("r", "email.replied", detail="%(detail)s")}
), wc AS ({outbox("c", "email.cancelled", detail="jsonb_build_object('reason', 'replied', 'replyTo', %(id)s::bigint)")}
)
SELECT 'replied' AS what, id FROM r UNION ALL SELECT 'cancelled', id FROM c
"""


def replied(account: str, email_id: int, *, detail: dict) -> list[int] | None:
    """A reply to the email came: its `replied` event and email.replied, and, in the same statement, its
    recipient's PENDING emails of its sequence and sender that stop on a reply are CANCELLED (`cancelled`,
    reason `replied`, and email.cancelled). Returns the cancelled ids; None when the email is not the account's."""
    rows = dicts(database.execute_sql(_REPLIED, {"account": account, "id": email_id, "detail": Json(detail)}))
    if not any(row["what"] == "replied" for row in rows):
        return None
    return sorted(row["id"] for row in rows if row["what"] == "cancelled")
