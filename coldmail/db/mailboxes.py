"""Senders' mailboxes: where polling each one stands, and the lease that lets one poller read it at a time.

A row exists while its sender has an imap_url (PUT /senders writes it in the
sender's transaction). A poller claims due rows with a lease (SKIP LOCKED:
several API processes never take one row together), and every write of its
poll names that lease and the URL it read: a poller whose lease ran out, or
whose sender changed its mailbox meanwhile, writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .connection import database
from .rows import dicts, one

_CONFIGURE = """
INSERT INTO mailboxes AS m (account, sender_id, imap_url) VALUES (%(a)s, %(s)s, %(url)s)
ON CONFLICT (account, sender_id) DO UPDATE SET
    imap_url = EXCLUDED.imap_url,
    -- another URL is another mailbox: its state starts again
    since = CASE WHEN m.imap_url = EXCLUDED.imap_url THEN m.since ELSE now() END,
    uidvalidity = CASE WHEN m.imap_url = EXCLUDED.imap_url THEN m.uidvalidity END,
    last_uid = CASE WHEN m.imap_url = EXCLUDED.imap_url THEN m.last_uid END,
    status = CASE WHEN m.imap_url = EXCLUDED.imap_url THEN m.status ELSE 'never' END,
    last_error = CASE WHEN m.imap_url = EXCLUDED.imap_url THEN m.last_error END,
    last_polled_at = CASE WHEN m.imap_url = EXCLUDED.imap_url THEN m.last_polled_at END,
    -- a new password is worth trying at once, whatever the backoff said
    failures = CASE WHEN m.imap_url = EXCLUDED.imap_url AND NOT %(fresh)s THEN m.failures ELSE 0 END,
    next_poll_at = CASE WHEN m.imap_url = EXCLUDED.imap_url AND NOT %(fresh)s THEN m.next_poll_at ELSE now() END
"""


def configure(account: str, sender_id: str, *, imap_url: str | None, new_password: bool) -> None:
    """The sender's mailbox as PUT left it (None: it has none). Call inside the sender's transaction."""
    if imap_url is None:
        database.execute_sql("DELETE FROM mailboxes WHERE account = %s AND sender_id = %s", (account, sender_id))
        return
    database.execute_sql(_CONFIGURE, {"a": account, "s": sender_id, "url": imap_url, "fresh": new_password})


def get_mailbox(account: str, sender_id: str) -> dict[str, Any] | None:
    """The account's sender's polling state (GET /senders shows it), or None."""
    return one(database.execute_sql(
        "SELECT status, failures, last_error, last_polled_at, next_poll_at FROM mailboxes "
        "WHERE account = %s AND sender_id = %s", (account, sender_id)))


@dataclass(frozen=True)
class Claimed:
    """A mailbox a poller holds: what it reads, and where reading stands."""

    account: str
    sender_id: str
    imap_url: str
    password_enc: str | None
    since: datetime
    uidvalidity: int | None
    last_uid: int | None
    failures: int
    #: the database's clock when the lease was taken: the next `since` when this poll reads to the end
    claimed_at: datetime


_CLAIM = """
UPDATE mailboxes m SET leased_by = %(token)s, lease_until = now() + %(lease)s * interval '1 second'
FROM senders s
WHERE (m.account, m.sender_id) IN (
        SELECT account, sender_id FROM mailboxes
        WHERE next_poll_at <= now() AND (lease_until IS NULL OR lease_until < now())
        ORDER BY next_poll_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    AND (m.lease_until IS NULL OR m.lease_until < now())
    AND s.account = m.account AND s.id = m.sender_id AND s.imap_url = m.imap_url
RETURNING m.account, m.sender_id, m.imap_url, s.imap_password_enc AS password_enc, m.since, m.uidvalidity,
          m.last_uid, m.failures, now() AS claimed_at
"""


def claim(*, token: str, lease_s: float, limit: int) -> list[Claimed]:
    """Take up to `limit` due mailboxes no poller holds, earliest due first, for `lease_s`."""
    with database.atomic():
        rows = dicts(database.execute_sql(_CLAIM, {"token": token, "lease": lease_s, "limit": limit}))
    return [Claimed(**row) for row in rows]


_HELD = "account = %(a)s AND sender_id = %(s)s AND leased_by = %(token)s AND imap_url = %(url)s"


def _params(mailbox: Claimed, token: str, **more) -> dict[str, Any]:
    return {"a": mailbox.account, "s": mailbox.sender_id, "token": token, "url": mailbox.imap_url, **more}


def start_at(mailbox: Claimed, *, token: str, uidvalidity: int, last_uid: int) -> bool:
    """Read from after `last_uid` of this UIDVALIDITY (a first poll, or the mailbox was rebuilt); False: the
    lease is lost."""
    cursor = database.execute_sql(f"UPDATE mailboxes SET uidvalidity = %(v)s, last_uid = %(uid)s WHERE {_HELD}",
                                  _params(mailbox, token, v=uidvalidity, uid=last_uid))
    return cursor.rowcount == 1


def advance(mailbox: Claimed, *, token: str, uidvalidity: int, uid: int) -> bool:
    """Message `uid` was handed over: the next poll starts after it. False: the lease is lost (stop)."""
    cursor = database.execute_sql(
        f"UPDATE mailboxes SET last_uid = greatest(last_uid, %(uid)s) WHERE {_HELD} AND uidvalidity = %(v)s",
        _params(mailbox, token, v=uidvalidity, uid=uid))
    return cursor.rowcount == 1


def finish_ok(mailbox: Claimed, *, token: str, poll_s: float, read_all: bool) -> bool:
    """The poll worked: due again in `poll_s`, the lease let go. `read_all`: it read to the end of the
    mailbox, so a later reset needs to look back only to when it began."""
    cursor = database.execute_sql(
        "UPDATE mailboxes SET status = 'ok', failures = 0, last_error = NULL, last_polled_at = now(), "
        "since = CASE WHEN %(all)s THEN %(began)s ELSE since END, "
        "next_poll_at = now() + %(poll)s * interval '1 second', leased_by = NULL, lease_until = NULL "
        f"WHERE {_HELD}", _params(mailbox, token, all=read_all, began=mailbox.claimed_at, poll=poll_s))
    return cursor.rowcount == 1


def finish_failed(mailbox: Claimed, *, token: str, error: str, poll_s: float, max_backoff_s: float) -> bool:
    """The poll failed: `error` kept (no secret in it), the mailbox due again after a backoff that doubles with
    each failure in a row (poll_s × 2^failures, ±20 %, `max_backoff_s` at most), the lease let go."""
    cursor = database.execute_sql(
        "UPDATE mailboxes SET status = 'failing', failures = failures + 1, last_error = %(error)s, "
        "last_polled_at = now(), next_poll_at = now() + least(%(poll)s * power(2, least(failures + 1, 30)), "
        "%(max)s) * (0.8 + random() * 0.4) * interval '1 second', leased_by = NULL, lease_until = NULL "
        f"WHERE {_HELD}", _params(mailbox, token, error=error, poll=poll_s, max=max_backoff_s))
    return cursor.rowcount == 1


def release(mailbox: Claimed, *, token: str) -> bool:
    """Let the mailbox go unpolled (its poller stops): due again at once, for whichever poller is next."""
    cursor = database.execute_sql(
        f"UPDATE mailboxes SET next_poll_at = now(), leased_by = NULL, lease_until = NULL WHERE {_HELD}",
        _params(mailbox, token))
    return cursor.rowcount == 1


def count_by_status() -> dict[str, int]:
    """Mailboxes by polling state (ok, failing, never): the metrics count them at scrape time."""
    return dict(database.execute_sql("SELECT status, count(*) FROM mailboxes GROUP BY status").fetchall())
