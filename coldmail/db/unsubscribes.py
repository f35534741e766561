"""One-click unsubscribe's statements: the links' stored signing key, and an email's recipient unsubscribed."""

from __future__ import annotations

import secrets

from psycopg2.extras import Json

from . import suppressions
from .connection import database
from .outbox import outbox, returning
from .rows import one

_MAKE_KEY = "INSERT INTO unsubscribe_signing_key (secret) VALUES (%s) ON CONFLICT DO NOTHING"
_READ_KEY = "SELECT secret FROM unsubscribe_signing_key"


def signing_key() -> bytes:
    """The stored key, made now if there is none. Every process that starts at once offers its own random key:
    the first to commit wins (ON CONFLICT DO NOTHING), and each reads back the winner's."""
    database.execute_sql(_MAKE_KEY, (secrets.token_bytes(32),))
    return bytes(database.execute_sql(_READ_KEY).fetchone()[0])


def stored_signing_key() -> bytes | None:
    """The stored key if one was made (links signed before COLDMAIL_SECRET_KEY was set), else None."""
    row = database.execute_sql(_READ_KEY).fetchone()
    return bytes(row[0]) if row else None


_EMAIL = "SELECT id, recipient, sender_id FROM emails WHERE id = %s AND account = %s"
#: the email's `unsubscribed` event, written once (a unique index on it: the second attempt does nothing), and
#: with it, in the same statement, its email.unsubscribed webhook deliveries
_EVENT = f"""
WITH ev AS (
    INSERT INTO email_events (email_id, kind, detail) VALUES (%(id)s, 'unsubscribed', %(detail)s)
    ON CONFLICT (email_id) WHERE kind = 'unsubscribed' DO NOTHING RETURNING email_id, detail
), e AS (
    SELECT {returning("e.")}, ev.detail FROM emails e JOIN ev ON ev.email_id = e.id WHERE e.account = %(account)s
), wh AS ({outbox("e", "email.unsubscribed", detail="src.detail")}
)
SELECT email_id FROM ev
"""


def email_exists(account: str, email_id: int) -> bool:
    return one(database.execute_sql(_EMAIL, (email_id, account))) is not None


def unsubscribe(account: str, email_id: int) -> bool | None:
    """Put the recipient of the account's email on its suppression list (reason `unsubscribed`, which also
    stops their PENDING emails), in one transaction. True: this was the email's first unsubscribe (its
    `unsubscribed` event is written now); False: it was unsubscribed before (the address is suppressed again
    if it had been taken off the list since); None: the account has no such email."""
    with database.atomic():
        email = one(database.execute_sql(_EMAIL, (email_id, account)))
        if email is None:
            return None
        entry, created = suppressions.add(account, email["recipient"], reason="unsubscribed",
                                          sender_id=email["sender_id"], email_id=email_id)
        # the entry's reason is an earlier one when the address was on the list already (bounced, say)
        detail = Json({"suppressionReason": entry["reason"], "suppressionAdded": created})
        return database.execute_sql(_EVENT, {"id": email_id, "account": account, "detail": detail}
                                    ).fetchone() is not None
