"""Senders: their From address, cap and relay, and their sends in the current window.

A sender is an account's: (account, id) is its key, so two accounts may each have
a sender `alice`, with its own settings, cap and usage. A sender first seen in a
schedule request is a row of NULLs: "the defaults".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from psycopg2.extras import Json

from .connection import database
from .emails.columns import SENDING
from .models import Sender
from .rows import column_list, one

SENDER_COLUMNS = column_list(Sender._meta.sorted_fields)


def get_sender(account: str, sender_id: str) -> dict[str, Any] | None:
    return Sender.select().where((Sender.account == account) & (Sender.id == sender_id)).dicts().get_or_none()


_PUT = f"""
WITH before AS (SELECT hourly_limit, dkim_key_enc FROM senders WHERE account = %(account)s AND id = %(id)s)
INSERT INTO senders AS s (account, id, from_address, hourly_limit, smtp_url, smtp_password_enc, dkim_domain,
                          dkim_selector, dkim_key_enc, imap_url, imap_password_enc)
VALUES (%(account)s, %(id)s, %(from)s, %(limit)s, %(url)s, %(pw)s, %(dkim_domain)s, %(dkim_selector)s,
        -- in VALUES, not in the update: the row proposed for insertion must pass the all-or-none check
        CASE WHEN %(dkim_domain)s::text IS NOT NULL
             THEN coalesce(%(dkim_key)s::text, (SELECT dkim_key_enc FROM before)) END,
        %(imap_url)s, %(imap_pw)s)
ON CONFLICT (account, id) DO UPDATE SET
    from_address = EXCLUDED.from_address, hourly_limit = EXCLUDED.hourly_limit, smtp_url = EXCLUDED.smtp_url,
    smtp_password_enc = CASE
        WHEN EXCLUDED.smtp_password_enc IS NULL AND EXCLUDED.smtp_url = s.smtp_url THEN s.smtp_password_enc
        ELSE EXCLUDED.smtp_password_enc END,
    dkim_domain = EXCLUDED.dkim_domain, dkim_selector = EXCLUDED.dkim_selector, dkim_key_enc = EXCLUDED.dkim_key_enc,
    imap_url = EXCLUDED.imap_url,
    imap_password_enc = CASE
        WHEN EXCLUDED.imap_password_enc IS NULL AND EXCLUDED.imap_url = s.imap_url THEN s.imap_password_enc
        ELSE EXCLUDED.imap_password_enc END,
    updated_at = now()
RETURNING {SENDER_COLUMNS}, (xmax = 0) AS created, (SELECT hourly_limit FROM before) AS previous_limit
"""


@dataclass(frozen=True)
class DkimSetting:
    """A sender's DKIM as PUT gives it: d=, s= and the sealed key (None: keep the stored one)."""

    domain: str
    selector: str
    key_enc: str | None


def put_sender(account: str, sender_id: str, *, from_address: str, hourly_limit: int, smtp_url: str | None,
               smtp_password_enc: str | None, dkim: DkimSetting | None, imap_url: str | None = None,
               imap_password_enc: str | None = None) -> tuple[dict[str, Any], bool, int | None]:
    """Create or replace an account's sender; return (row, created, the hourly limit it had before: None when
    created or when it had none, the default).

    A request that repeats the stored `smtp_url` without a password keeps the
    stored password (GET never shows it, so a GET-edit-PUT round trip must not drop
    it); any other URL without one drops it. The same holds for `imap_url` and its
    password. Likewise a `dkim` without a key keeps the stored key; no `dkim` removes it.
    """
    row = one(database.execute_sql(_PUT, {
        "account": account, "id": sender_id, "from": from_address, "limit": hourly_limit, "url": smtp_url,
        "pw": smtp_password_enc, "dkim_domain": dkim.domain if dkim else None,
        "dkim_selector": dkim.selector if dkim else None, "dkim_key": dkim.key_enc if dkim else None,
        "imap_url": imap_url, "imap_pw": imap_password_enc}))
    assert row is not None, "an upsert returns its row"
    created, previous_limit = row.pop("created"), row.pop("previous_limit")
    return row, created, previous_limit


#: the pacing columns PUT sets (each NULL when off)
PACING_COLUMNS = ("time_zone", "sending_window", "daily_limit", "warmup", "min_gap_s", "jitter_s")


def set_pacing(account: str, sender_id: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set some of the sender's pacing columns (`values`: column -> value, None: off); return its pacing columns
    (before, after). Locks the row for the rest of the caller's transaction."""
    assert set(values) <= set(PACING_COLUMNS), "only pacing columns"
    listed = ", ".join(PACING_COLUMNS)
    before = one(database.execute_sql(f"SELECT {listed} FROM senders WHERE account = %s AND id = %s FOR UPDATE",
                                      (account, sender_id)))
    assert before is not None, "the sender was put first"
    if values:
        assignments = ", ".join(f"{column} = %({column})s" for column in values)
        params = {c: Json(v) if c in ("sending_window", "warmup") and v is not None else v for c, v in values.items()}
        database.execute_sql(f"UPDATE senders SET {assignments}, updated_at = now() "
                             "WHERE account = %(account)s AND id = %(id)s",
                             dict(params, account=account, id=sender_id))
    return before, dict(before, **values)


#: what placing a sender's emails needs: its cap and its pacing (coldmail.caps.pacing.Pacing.from_row)
PLACING_COLUMNS = ("hourly_limit", "time_zone", "sending_window", "daily_limit", "warmup", "min_gap_s", "jitter_s")
PLACING_SELECT = ", ".join(f"s.{c}" for c in PLACING_COLUMNS)
SETTINGS_SQL = f"""
SELECT s.account, s.id, {PLACING_SELECT} FROM senders s
JOIN unnest(%s::text[], %s::text[]) AS w(account, id) ON s.account = w.account AND s.id = w.id
"""


def sender_settings(senders: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each known (account, sender id)'s cap and pacing columns (NULL: the default); unknown senders are left
    out."""
    senders = list(senders)
    cursor = database.execute_sql(SETTINGS_SQL, ([a for a, _ in senders], [s for _, s in senders]))
    return {(row[0], row[1]): dict(zip(PLACING_COLUMNS, row[2:])) for row in cursor.fetchall()}


_DAY_SO_FAR = f"""
SELECT (SELECT count(*) FROM emails WHERE account = %(a)s AND sender_id = %(s)s AND sent_at >= %(since)s)
     + (SELECT count(*) FROM emails WHERE account = %(a)s AND sender_id = %(s)s AND status = {SENDING}),
       (SELECT max(sent_at) FROM emails WHERE account = %(a)s AND sender_id = %(s)s AND sent_at IS NOT NULL)
"""


def day_so_far(account: str, sender_id: str, *, since: Any) -> tuple[int, Any]:
    """(the sender's sends since `since` and under way, when its last send was made): what its day count and
    gap are rebuilt from when Redis lost them. A send under way counts once more if it takes its slot after the
    rebuild: the count errs towards fewer sends, never more."""
    row = database.execute_sql(_DAY_SO_FAR, {"a": account, "s": sender_id, "since": since}).fetchone()
    return int(row[0]), row[1]


_IN_WINDOW = f"""
SELECT id::text, (extract(epoch FROM sent_at - now()) * 1000)::bigint FROM emails
WHERE account = %(a)s AND sender_id = %(s)s AND sent_at > now() - %(w)s * interval '1 second'
UNION ALL
SELECT %(claim)s || id::text, 0 FROM emails WHERE account = %(a)s AND sender_id = %(s)s AND status = {SENDING}
"""


def sends_in_window(account: str, sender_id: str, *, window_s: float,
                    claim_prefix: str) -> list[tuple[str, int]]:
    """(member, ms relative to now) of the sender's sends in the last window, and of its sends under way.

    This is what the cap rebuilds itself from when Redis lost it. A send under way
    (SENDING) counts from now, under `claim_prefix` + its id: it may not have taken
    its slot yet, and when it does, that placeholder goes.
    """
    cursor = database.execute_sql(_IN_WINDOW, {"a": account, "s": sender_id, "w": window_s, "claim": claim_prefix})
    return [(row[0], int(row[1])) for row in cursor.fetchall()]


_SENT_IN_WINDOW = ("SELECT count(*) FROM emails WHERE account = %(a)s AND sender_id = %(s)s "
                   f"AND (sent_at > now() - %(w)s * interval '1 second' OR status = {SENDING})")


def sent_in_window(account: str, sender_id: str, *, window_s: float) -> int:
    """The sender's sends in the last window and under way, counted in PostgreSQL (Redis lost its count)."""
    row = database.execute_sql(_SENT_IN_WINDOW, {"a": account, "s": sender_id, "w": window_s}).fetchone()
    return int(row[0])


def sealed_secrets(*, for_update: bool = False, imap: bool = False) -> list[tuple[str, str, str]]:
    """(account, sender id, sealed secret) of every secret senders store (SMTP passwords and DKIM keys, and
    with `imap` their mailboxes' passwords: a sender may appear more than once); `for_update` locks those
    rows (rotate-secrets, inside its transaction: a PUT meanwhile waits rather than being overwritten).

    The start-up check leaves IMAP passwords out: an unreadable one holds no email (the mailbox's
    imapStatus says it), so it must not count the sender's emails as held."""
    lock = " FOR UPDATE" if for_update else ""
    columns = "smtp_password_enc, dkim_key_enc" + (", imap_password_enc" if imap else "")
    sql = (f"SELECT account, id, {columns} FROM senders "
           f"WHERE coalesce({columns}) IS NOT NULL ORDER BY account, id{lock}")
    return [(row[0], row[1], sealed) for row in database.execute_sql(sql).fetchall()
            for sealed in row[2:] if sealed is not None]


def replace_sealed(account: str, sender_id: str, *, old: str, new: str) -> bool:
    """One of the sender's sealed secrets, sealed again with another key (same secret); False if it changed
    meanwhile. Fernet tokens never repeat, so `old` names one column's value."""
    cursor = database.execute_sql(
        "UPDATE senders SET "
        "smtp_password_enc = CASE WHEN smtp_password_enc = %(old)s THEN %(new)s ELSE smtp_password_enc END, "
        "dkim_key_enc = CASE WHEN dkim_key_enc = %(old)s THEN %(new)s ELSE dkim_key_enc END, "
        "imap_password_enc = CASE WHEN imap_password_enc = %(old)s THEN %(new)s ELSE imap_password_enc END "
        "WHERE account = %(account)s AND id = %(id)s "
        "AND %(old)s IN (smtp_password_enc, dkim_key_enc, imap_password_enc)",
        {"account": account, "id": sender_id, "old": old, "new": new})
    return cursor.rowcount == 1
