"""A validated schedule payload as the row to store, with the hash that says which requests are the same email."""

from __future__ import annotations

import hashlib
import json
import json.encoder
from datetime import datetime
from typing import Any

from ..db.emails.intake import NewEmail


def payload_hash(payload: dict[str, Any]) -> str:
    """What makes two requests with one idempotency key "the same": their validated fields.

    The SHA-256 of their canonical JSON (keys sorted, json.dumps' defaults); stored
    with each row, so it must never change. A schedule request's usual payload is
    written out directly, the same bytes as json.dumps at a fraction of its cost:
    a batch hashes every one of its emails.
    """
    canonical = _canonical_schedule(payload)
    if canonical is None:
        canonical = json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v)
                                for k, v in sorted(payload.items())
                                if k != "idempotencyKey" and (v is not None or k not in _NEWER)}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


#: fields added after hashes were first stored: left out of the hash while None (not given), so a request
#: without them hashes as it always did and a stored idempotency key still matches it
_NEWER = frozenset({"unsubscribe", "sequence", "stopOnReply", "inReplyTo", "recipientTimeZone"})
_SCHEDULE_KEYS = frozenset({"recipient", "subject", "body", "senderId", "scheduledAt", "idempotencyKey"}) | _NEWER
_quote = json.encoder.encode_basestring_ascii  # what json.dumps writes a str as (ensure_ascii)


def _canonical_schedule(payload: dict[str, Any]) -> str | None:
    """json.dumps(canonical, sort_keys=True) of a loaded schedule payload without the _NEWER fields, or None for
    any other shape."""
    if payload.keys() != _SCHEDULE_KEYS or any(payload[k] is not None for k in _NEWER):
        return None
    recipient, subject, body, sender = payload["recipient"], payload["subject"], payload["body"], payload["senderId"]
    at = payload["scheduledAt"]
    if type(recipient) is not str or type(subject) is not str or type(body) is not str or type(sender) is not str:
        return None
    if at is None:
        when = "null"
    elif type(at) is datetime:
        when = _quote(at.isoformat())
    else:
        return None
    return (f'{{"body": {_quote(body)}, "recipient": {_quote(recipient)}, "scheduledAt": {when}, '
            f'"senderId": {_quote(sender)}, "subject": {_quote(subject)}}}')


def new_email(account: str, payload: dict[str, Any], idempotency_key: str | None) -> NewEmail:
    """The row to store for a loaded schedule payload (ScheduleEmailSchema's fields) of the account's key."""
    return NewEmail(
        account=account, recipient=payload["recipient"], subject=payload["subject"], body=payload["body"],
        sender_id=payload["senderId"], scheduled_at=payload.get("scheduledAt"),
        idempotency_key=idempotency_key, payload_hash=payload_hash(payload),
        unsubscribe=payload.get("unsubscribe") is not False, sequence=payload.get("sequence"),
        stop_on_reply=_stops_on_reply(payload), in_reply_to=payload.get("inReplyTo"),
        recipient_time_zone=payload.get("recipientTimeZone"))


def _stops_on_reply(payload: dict[str, Any]) -> bool:
    stop = payload.get("stopOnReply")
    return payload.get("sequence") is not None if stop is None else stop


def thread_errors(payload: dict[str, Any]) -> dict[str, list[str]]:
    """What the schema cannot say of a loaded payload's sequence fields alone: stopOnReply means nothing
    without a sequence. (inReplyTo is checked against the stored emails: coldmail.intake.threads.)"""
    if payload.get("stopOnReply") is not None and payload.get("sequence") is None:
        return {"stopOnReply": ["needs a sequence: only the emails of a sequence stop on a reply"]}
    return {}

