"""The transactional outbox: a CTE that an email statement adds to write its webhook deliveries.

A statement that changes an email's state already writes its audit event in the
same statement; with `outbox(...)` it also writes one delivery per endpoint of the
email's account subscribed to the event, so an event exists if and only if the
change committed. With no endpoint the join finds nothing in `webhooks` (one probe
of its primary key per account), which is all the hot path pays.
"""

from __future__ import annotations

from ..webhooks.events import EVENT_TYPES

#: the columns `outbox` reads from its source rows: an UPDATE ... RETURNING these (prefixed as needed)
EMAIL_FIELDS = ("id", "account", "recipient", "subject", "sender_id", "status", "scheduled_at", "sent_at",
                "attempts", "last_error", "message_id")

_UTC_ISO = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


def returning(prefix: str = "") -> str:
    """What a source CTE returns for `outbox`."""
    return ", ".join(prefix + name for name in EMAIL_FIELDS)


def outbox(source: str, event: str, *, detail: str = "'{}'::jsonb", where: str = "TRUE") -> str:
    """An INSERT for a `WITH name AS (...)`: the deliveries of `event` for each row of the CTE `source`
    (which returns EMAIL_FIELDS) that matches `where`. `detail` is an SQL jsonb expression over the source's
    columns; its keys join `email` in the payload's `data`."""
    if event not in EVENT_TYPES:
        raise ValueError(f"{event!r} is not an event type")
    email = ", ".join((
        "'id', src.id", "'recipient', src.recipient", "'subject', src.subject", "'senderId', src.sender_id",
        "'status', src.status", f"'scheduledAt', {_UTC_ISO.format('src.scheduled_at')}",
        f"'sentAt', {_UTC_ISO.format('src.sent_at')}", "'attempts', src.attempts",
        "'lastError', src.last_error", "'messageId', src.message_id"))
    return f"""
    INSERT INTO webhook_deliveries (account, webhook_id, event_type, payload)
    SELECT w.account, w.id, '{event}', jsonb_build_object(
        'type', '{event}', 'timestamp', {_UTC_ISO.format('now()')},
        'data', jsonb_build_object('email', jsonb_build_object({email})) || {detail})
    FROM {source} src JOIN webhooks w ON w.account = src.account AND w.events @> ARRAY['{event}']
    WHERE {where}
    ORDER BY src.id, w.id"""
