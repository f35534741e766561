"""The suppression list's statements: addresses an account never sends to.

Adding an address also stops, in the same statement, the account's PENDING
emails to it (SUPPRESSED, each with a `suppressed` event naming the reason): an
email already claimed is past that point, and one not claimed yet can no longer
be (the claim takes PENDING emails only, and checks the list itself for entries
made after this). Addresses are matched in their normalised form
(coldmail.addresses.normalise), against `emails.recipient_key`.
"""

from __future__ import annotations

from typing import Any

from ..addresses import normalise
from .connection import database
from .emails.columns import PENDING, SUPPRESSED
from .outbox import outbox, returning
from .rows import dicts, one

__all__ = ["REASONS", "add", "get", "page", "remove", "normalise"]

#: why an address is suppressed (the table's CHECK lists the same)
REASONS = ("manual", "unsubscribed", "bounced", "complained")

#: what an entry shows
COLUMNS = "address, reason, sender_id, email_id, created_at"

#: the reason a stopped email's event and webhook name: the entry's (an address already listed keeps its own)
_REASON = "coalesce((SELECT reason FROM entry), %(reason)s)"

_ADD = f"""
WITH new AS (
    INSERT INTO suppressions (account, address, reason, sender_id, email_id)
    VALUES (%(account)s, %(address)s, %(reason)s, %(sender_id)s, %(email_id)s)
    ON CONFLICT (account, address) DO NOTHING
    RETURNING {COLUMNS}, true AS created
), entry AS (
    SELECT * FROM new
    UNION ALL
    SELECT {COLUMNS}, false FROM suppressions
    WHERE account = %(account)s AND address = %(address)s AND NOT EXISTS (SELECT FROM new)
), stopped AS (
    UPDATE emails SET status = {SUPPRESSED}, queued_at = NULL, lease_until = NULL, updated_at = now()
    WHERE account = %(account)s AND recipient_key = %(address)s AND status = {PENDING}
    RETURNING {returning()}
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'suppressed', jsonb_build_object('reason', {_REASON}) FROM stopped
), wh AS ({outbox("stopped", "email.suppressed", detail=f"jsonb_build_object('reason', {_REASON})")}
)
SELECT entry.*, (SELECT count(*) FROM stopped) AS stopped FROM entry
"""


def add(account: str, address: str, *, reason: str, sender_id: str | None = None, email_id: int | None = None
        ) -> tuple[dict[str, Any], bool]:
    """Suppress `address` (normalised here) for the account; return (entry, created). Idempotent: an address
    already there keeps its entry (and reason) and comes back with created=False. The account's PENDING
    emails to the address become SUPPRESSED in the same statement; the entry's `stopped` says how many.
    Raises ValueError for an address normalise refuses or an unknown reason."""
    if reason not in REASONS:
        raise ValueError(f"unknown suppression reason: {reason!r}")
    params = {"account": account, "address": normalise(address), "reason": reason, "sender_id": sender_id,
              "email_id": email_id}
    while True:
        row = one(database.execute_sql(_ADD, params))
        if row is not None:
            return row, row.pop("created")
        # another transaction inserted the entry after this statement's snapshot was taken: ON CONFLICT saw
        # it, the SELECT did not; the next statement sees it


def get(account: str, address: str) -> dict[str, Any] | None:
    """The account's entry for `address` (normalised here), or None."""
    return one(database.execute_sql(f"SELECT {COLUMNS} FROM suppressions WHERE account = %s AND address = %s",
                                    (account, normalise(address))))


def remove(account: str, address: str) -> bool:
    """Take `address` off the account's list; False when it was not on it. Emails already SUPPRESSED stay
    so: a removal lets new emails through, it does not send old ones."""
    cursor = database.execute_sql("DELETE FROM suppressions WHERE account = %s AND address = %s RETURNING 1",
                                  (account, normalise(address)))
    return cursor.fetchone() is not None


def page(account: str, *, limit: int, after: str | None = None, address: str | None = None,
         reason: str | None = None) -> list[dict[str, Any]]:
    """Up to `limit` of the account's entries in address order, those after `after` (an address: the keyset
    of the primary key), optionally only `address` (normalised here) or only `reason`."""
    where, params = ["account = %(account)s"], {"account": account, "limit": limit}
    if after is not None:
        where.append("address > %(after)s")
        params["after"] = after
    if address is not None:
        where.append("address = %(address)s")
        params["address"] = normalise(address)
    if reason is not None:
        where.append("reason = %(reason)s")
        params["reason"] = reason
    return dicts(database.execute_sql(
        f"SELECT {COLUMNS} FROM suppressions WHERE {' AND '.join(where)} ORDER BY address LIMIT %(limit)s", params))
