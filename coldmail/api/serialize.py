"""Rows to the JSON the contract shows: camelCase, UTC times ending in Z."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def email_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "recipient": row["recipient"], "subject": row["subject"], "senderId": row["sender_id"],
        "status": row["status"], "scheduledAt": iso(row["scheduled_at"]),
        "nextAttemptAt": iso(row["next_attempt_at"]) if row["status"] in ("PENDING", "SENDING") else None,
        "sentAt": iso(row["sent_at"]), "attempts": row["attempts"], "lastError": row["last_error"],
        "messageId": row["message_id"], "createdAt": iso(row["created_at"]), "updatedAt": iso(row["updated_at"]),
        "unsubscribe": row["unsubscribe"], "sequence": row["sequence"], "stopOnReply": row["stop_on_reply"],
        "inReplyTo": row["in_reply_to"], "repliedAt": iso(row["replied_at"]),
        "recipientTimeZone": row.get("recipient_time_zone"),
    }


def event_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "kind": row["kind"], "detail": row["detail"], "createdAt": iso(row["created_at"])}


def scheduled_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"message": "Email scheduled", "jobId": row["id"], "status": row["status"],
            "scheduledAt": iso(row["scheduled_at"])}
