"""Marshmallow schemas: what requests may hold. The same schemas describe the API in /openapi.json."""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

MAX_BODY_CHARS = 1024 * 1024
SENDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+:=-]{0,127}$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def _no_line_breaks(value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValidationError("must not contain CR or LF (header injection)")


class EmailAddress(fields.String):
    """An address checked by email-validator (syntax only: no DNS look-ups on the request path)."""

    default_error_messages = {"invalid_email": "Not a valid email address: {reason}"}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        _no_line_breaks(text)
        try:
            return validate_email(text, check_deliverability=False).normalized
        except EmailNotValidError as e:
            raise self.make_error("invalid_email", reason=str(e)) from None


class StrictSchema(Schema):
    """Unknown fields are an error, never silently dropped."""

    class Meta:
        unknown = RAISE


class ScheduleEmailSchema(StrictSchema):
    recipient = EmailAddress(required=True, metadata={"example": "user@example.com"})
    subject = fields.String(required=True, validate=[validate.Length(max=998), _no_line_breaks],
                            metadata={"example": "Welcome!"})
    body = fields.String(required=True, validate=validate.Length(max=MAX_BODY_CHARS),
                         metadata={"description": "Plain text, or HTML (sent as multipart/alternative)"})
    senderId = fields.String(required=True, validate=validate.Regexp(
        SENDER_ID, error="1–128 characters: letters, digits and . _ @ + : = -"), metadata={"example": "sender_123"})
    scheduledAt = fields.AwareDateTime(
        load_default=None, format="iso",
        metadata={"description": "ISO-8601 with an offset or Z; omitted or past: now"})
    idempotencyKey = fields.String(load_default=None, validate=validate.Regexp(
        IDEMPOTENCY_KEY, error="1–255 printable ASCII characters"))


class ScheduledSchema(Schema):
    message = fields.String()
    jobId = fields.Integer()
    status = fields.String()
    scheduledAt = fields.String()


class EmailSchema(Schema):
    id = fields.Integer()
    recipient = fields.String()
    subject = fields.String()
    senderId = fields.String()
    status = fields.String(metadata={"enum": ["PENDING", "SENDING", "SENT", "FAILED", "CANCELLED"]})
    scheduledAt = fields.String()
    nextAttemptAt = fields.String(allow_none=True)
    sentAt = fields.String(allow_none=True)
    attempts = fields.Integer()
    lastError = fields.String(allow_none=True)
    messageId = fields.String(allow_none=True)
    createdAt = fields.String()
    updatedAt = fields.String()


class EventSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    detail = fields.Dict()
    createdAt = fields.String()


class ErrorSchema(Schema):
    error = fields.String(required=True)
    message = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields")
