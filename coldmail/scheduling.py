"""Accepting an email: what makes it one, and handing it to Dramatiq at once if it is due within the horizon."""

from __future__ import annotations

import hashlib
import json
import json.encoder
import logging
from datetime import datetime
from typing import Any

from .db.emails.intake import NewEmail
from .queue.handover import HandOver

log = logging.getLogger(__name__)


def payload_hash(payload: dict[str, Any]) -> str:
    """What makes two requests with one idempotency key "the same": their validated fields.

    The SHA-256 of their canonical JSON (keys sorted, json.dumps' defaults); stored
    with each row, so it must never change. A schedule request's usual payload is
    written out directly (the same bytes, a quarter of the time: a batch of 1000
    spent a fifth of its CPU here).
    """
    canonical = _canonical_schedule(payload)
    if canonical is None:
        canonical = json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v)
                                for k, v in sorted(payload.items()) if k != "idempotencyKey"}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


_SCHEDULE_KEYS = frozenset({"recipient", "subject", "body", "senderId", "scheduledAt", "idempotencyKey"})
_quote = json.encoder.encode_basestring_ascii  # what json.dumps writes a str as (ensure_ascii)


def _canonical_schedule(payload: dict[str, Any]) -> str | None:
    """json.dumps(canonical, sort_keys=True) of a loaded schedule payload, or None for any other shape."""
    if payload.keys() != _SCHEDULE_KEYS:
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


def new_email(payload: dict[str, Any], idempotency_key: str | None) -> NewEmail:
    return NewEmail(
        recipient=payload["recipient"], subject=payload["subject"], body=payload["body"],
        sender_id=payload["senderId"], scheduled_at=payload.get("scheduledAt"),
        idempotency_key=idempotency_key, payload_hash=payload_hash(payload))


def hand_over_marked(rows: list[dict[str, Any]], handover: HandOver) -> None:
    """Give the hand-over the rows a request marked queued. It never blocks: its thread plans them under
    their senders' caps and enqueues them, and gives what it cannot back to the scheduler."""
    handover.send_planned([row for row in rows if row["queued_at"] is not None])
