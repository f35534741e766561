"""What the tests post: one email as POST /emails (and each item of /emails/batch) takes it."""

from __future__ import annotations


def email(subject: str = "Welcome!", **fields) -> dict:
    """A valid email to user@example.com from sender s1, due now; `fields` replace or add any JSON field
    (scheduledAt, senderId, body, idempotencyKey, ...)."""
    return {"recipient": "user@example.com", "subject": subject, "body": "Hello", "senderId": "s1", **fields}
