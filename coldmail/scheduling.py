"""Accepting an email: what makes it one, and handing it to Dramatiq at once if it is due within the horizon."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from .db import database
from .db import emails as email_rows
from .db.emails import NewEmail
from .queue.handover import HandOver

log = logging.getLogger(__name__)


def payload_hash(payload: dict[str, Any]) -> str:
    """What makes two requests with one idempotency key "the same": their validated fields."""
    canonical = {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                 for k, v in sorted(payload.items()) if k != "idempotencyKey"}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def new_email(payload: dict[str, Any], idempotency_key: str | None) -> NewEmail:
    return NewEmail(
        recipient=payload["recipient"], subject=payload["subject"], body=payload["body"],
        sender_id=payload["senderId"], scheduled_at=payload.get("scheduledAt"),
        idempotency_key=idempotency_key, payload_hash=payload_hash(payload))


def hand_over_marked(rows: list[dict[str, Any]], handover: HandOver) -> None:
    """Give Dramatiq the rows a request marked queued, soonest first, as far as their senders' caps allow.

    What Redis refused goes back to the scheduler; what is over its sender's cap
    goes back too, moved to when its slot frees (a rate_limited event).
    """
    marked = sorted((row for row in rows if row["queued_at"] is not None), key=lambda r: (r["delay_ms"], r["id"]))
    failed, later = handover.send_planned(marked)
    if failed or later:
        with database.connection_context():
            email_rows.unqueue(failed)
            email_rows.hold_back(later)
