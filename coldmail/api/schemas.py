"""Marshmallow schemas: what requests may hold. The same schemas describe the API in /openapi.json.

Every rule a client can see is a validator apispec understands (length, range,
pattern, one-of), so the OpenAPI description says what the server checks.
"""

from __future__ import annotations

from datetime import timezone

from email_validator import EmailNotValidError, validate_email
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from ..status import EmailStatus

MAX_BODY_CHARS = 1024 * 1024
MAX_BATCH = 1000
MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_ID = 2**63 - 1
STATUSES = [s.value for s in EmailStatus]


class Pattern(validate.Regexp):
    """A regular expression the whole value must match.

    marshmallow's Regexp uses `re.match`, whose `$` also matches before a final
    newline, so "key\\n" would pass `^…$`; apispec copies the pattern into the
    OpenAPI description.
    """

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


#: a header value: no CR, LF or other control character (tab aside), nor a Unicode line break, which
#: Python's email package also refuses in a header (so the worker could not build the message)
ONE_LINE = Pattern(r"^[^\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]*$",
                   error="must be one line: no CR, LF or other control characters (header injection)")
NO_NUL = Pattern(r"^[^\x00]*$", error="must not contain NUL characters")
SENDER_ID = Pattern(r"^[A-Za-z0-9][A-Za-z0-9._@+:=-]{0,127}$",
                    error="1–128 characters: letters, digits and . _ @ + : = -")
IDEMPOTENCY_KEY = Pattern(r"^[\x21-\x7e]{1,255}$", error="1–255 printable ASCII characters")


class Text(fields.String):
    """A string PostgreSQL can store: JSON allows lone surrogates (\\ud800), UTF-8 does not."""

    default_error_messages = {"surrogate": "Not valid Unicode (it holds a lone surrogate)."}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise self.make_error("surrogate") from None
        return text


class EmailAddress(Text):
    """An address checked by email-validator (syntax only: no DNS look-ups on the request path)."""

    default_error_messages = {"invalid_email": "Not a valid email address: {reason}"}

    def __init__(self, **kwargs) -> None:
        super().__init__(validate=ONE_LINE, **kwargs)
        self.metadata.setdefault("format", "email")

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        ONE_LINE(text)
        try:
            return validate_email(text, check_deliverability=False).normalized
        except EmailNotValidError as e:
            raise self.make_error("invalid_email", reason=str(e)) from None


class Instant(fields.AwareDateTime):
    """An ISO-8601 time with an offset or Z, that PostgreSQL and Python can both hold in UTC."""

    default_error_messages = {"out_of_range": "Must be a time before the year 9999."}

    def __init__(self, **kwargs) -> None:
        super().__init__(format="iso", **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        when = super()._deserialize(value, attr, data, **kwargs)
        try:
            utc = when.astimezone(timezone.utc)
        except OverflowError:
            raise self.make_error("out_of_range") from None
        if utc.year >= 9999:
            raise self.make_error("out_of_range")
        return utc


class StrictSchema(Schema):
    """Unknown fields are an error, never silently dropped."""

    class Meta:
        unknown = RAISE


# -- requests -------------------------------------------------------------------

class ScheduleEmailSchema(StrictSchema):
    recipient = EmailAddress(required=True, metadata={"example": "user@example.com"})
    subject = Text(required=True, validate=[validate.Length(max=998), ONE_LINE], metadata={"example": "Welcome!"})
    body = Text(required=True, validate=[validate.Length(max=MAX_BODY_CHARS), NO_NUL],
                metadata={"description": "Plain text, or HTML (sent as multipart/alternative)",
                          "example": "<h1>Hello</h1>"})
    senderId = Text(required=True, validate=SENDER_ID, metadata={"example": "sender_123"})
    scheduledAt = Instant(load_default=None, metadata={
        "description": "ISO-8601 with an offset or Z; omitted or past: now", "example": "2030-10-27T10:00:00Z"})
    idempotencyKey = Text(load_default=None, validate=IDEMPOTENCY_KEY, metadata={
        "description": "Same key and payload again: the same email (200). Same key, other payload: 409."})


class ScheduleBatchSchema(StrictSchema):
    emails = fields.List(fields.Nested(ScheduleEmailSchema), required=True,
                         validate=validate.Length(min=1, max=MAX_BATCH),
                         metadata={"description": f"1 to {MAX_BATCH} emails, stored all or none"})


class RescheduleSchema(StrictSchema):
    scheduledAt = Instant(required=True, metadata={
        "description": "the new time, ISO-8601 with an offset or Z; past: now", "example": "2030-10-28T09:00:00Z"})


class ListEmailsQuerySchema(StrictSchema):
    status = Text(validate=validate.OneOf(STATUSES))
    senderId = Text(validate=SENDER_ID)
    limit = fields.Integer(load_default=DEFAULT_PAGE, validate=validate.Range(min=1, max=MAX_PAGE),
                           metadata={"description": f"page size, at most {MAX_PAGE}"})
    after = fields.Integer(validate=validate.Range(min=1, max=MAX_ID), metadata={
        "description": "the `next` of the previous page: only emails with a smaller id"})


# -- responses (dumped by coldmail.api.serialize, described here) ----------------

class ScheduledSchema(Schema):
    message = fields.String(required=True, metadata={"example": "Email scheduled"})
    jobId = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    scheduledAt = fields.DateTime(required=True)


class BatchScheduledSchema(Schema):
    jobIds = fields.List(fields.Integer(), required=True, metadata={"description": "in the order of `emails`"})


class EmailSchema(Schema):
    id = fields.Integer(required=True)
    recipient = fields.String(required=True)
    subject = fields.String(required=True)
    senderId = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    scheduledAt = fields.DateTime(required=True)
    nextAttemptAt = fields.DateTime(required=True, allow_none=True,
                                    metadata={"description": "while PENDING or SENDING"})
    sentAt = fields.DateTime(required=True, allow_none=True)
    attempts = fields.Integer(required=True)
    lastError = fields.String(required=True, allow_none=True)
    messageId = fields.String(required=True, allow_none=True)
    createdAt = fields.DateTime(required=True)
    updatedAt = fields.DateTime(required=True)


class EmailPageSchema(Schema):
    items = fields.List(fields.Nested(EmailSchema), required=True, metadata={"description": "newest first"})
    next = fields.Integer(required=True, allow_none=True,
                          metadata={"description": "pass as `after` for the next page; null on the last page"})


class EventSchema(Schema):
    id = fields.Integer(required=True)
    kind = fields.String(required=True, metadata={"example": "created"})
    detail = fields.Dict(required=True)
    createdAt = fields.DateTime(required=True)


class EventsSchema(Schema):
    emailId = fields.Integer(required=True)
    events = fields.List(fields.Nested(EventSchema), required=True, metadata={"description": "oldest first"})


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})


class ReadySchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "unavailable"]))
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"example": {"postgres": "ok", "redis": "ok"}})


class ErrorSchema(Schema):
    error = fields.String(required=True, metadata={"example": "validation_error"})
    message = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields", metadata={
        "description": "validation errors by field; a batch names the index: {\"emails\": {\"3\": {...}}}"})
