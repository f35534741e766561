"""Marshmallow schemas: what requests may hold. The same schemas describe the API in /openapi.json.

Every rule a client can see is a validator apispec understands (length, range,
pattern, one-of), so the OpenAPI description says what the server checks.
"""

from __future__ import annotations

import re
from datetime import timezone
from typing import Any

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import ATEXT, CASE_INSENSITIVE_MAILBOX_NAMES, EMAIL_MAX_LENGTH
from marshmallow import RAISE, Schema, ValidationError, fields, missing, validate

from ..caps.pacing import zone
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


def TIME_ZONE(value: str) -> str:  # noqa: N802 - a validator, named as the patterns are
    """An IANA time zone name that zoneinfo knows (Europe/Berlin, UTC)."""
    try:
        zone(value)
    except ValueError:
        raise ValidationError("Not a known IANA time zone (Europe/Berlin, America/New_York, UTC).") from None
    return value


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


#: local@domain with an ASCII dot-atom local part (email-validator's DOT_ATOM_TEXT) and an ASCII
#: hostname-ish domain: no quotes, display name, IP literal or non-ASCII, so email-validator checks the
#: two halves apart (see `normalized_address`)
_PLAIN_ADDRESS = re.compile(rf"([{ATEXT}]+(?:\.[{ATEXT}]+)*)@([A-Za-z0-9.-]+)")
_CASE_INSENSITIVE = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
#: domain -> (normalized domain, ASCII domain), for domains email-validator accepted
_domains: dict[str, tuple[str, str]] = {}
_MAX_DOMAINS = 10_000


def normalized_address(text: str) -> str:
    """`validate_email(text, check_deliverability=False).normalized`, with the domain's verdict remembered.

    For a plain address (see _PLAIN_ADDRESS) email-validator's result is the local
    part as given (lower-cased if it is an RFC 2142 mailbox name), "@", and the
    domain's normalized form, which depends on the domain alone, provided the three
    lengths it checks stay within 254. So a domain it accepted once (probed as
    a@domain) is not checked again. Everything else, and every refusal, goes
    through validate_email itself: its errors stay exactly the same.
    """
    plain = plain_address(text)
    return plain if plain is not None else validate_email(text, check_deliverability=False).normalized


def plain_address(text: str) -> str | None:
    """The normalized form of a plain address email-validator accepts (see normalized_address), else None."""
    match = _PLAIN_ADDRESS.fullmatch(text)
    if match is not None:
        local, domain = match.groups()
        known = _domains.get(domain)
        if known is None:
            try:
                probe = validate_email("a@" + domain, check_deliverability=False)
            except EmailNotValidError:
                probe = None
            if probe is not None:
                if len(_domains) >= _MAX_DOMAINS:
                    _domains.clear()
                known = _domains[domain] = (probe.domain, probe.ascii_domain)
        if known is not None:
            if local.lower() in _CASE_INSENSITIVE:
                local = local.lower()
            normalized = f"{local}@{known[0]}"
            if len(text) <= EMAIL_MAX_LENGTH and len(normalized.encode()) <= EMAIL_MAX_LENGTH \
                    and len(local) + 1 + len(known[1]) <= EMAIL_MAX_LENGTH:
                return normalized
    return None


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
            return normalized_address(text)
        except EmailNotValidError as e:
            raise self.make_error("invalid_email", reason=str(e)) from None


class StrictBoolean(fields.Boolean):
    """JSON true or false, nothing else: marshmallow's Boolean also takes "yes", 1 and "off"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not bool:
            raise self.make_error("invalid")
        return value


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
    unsubscribe = StrictBoolean(load_default=None, metadata={
        "description": "false: no List-Unsubscribe headers (transactional mail); omitted: true"})
    sequence = Text(load_default=None, validate=[validate.Length(min=1, max=128), ONE_LINE], metadata={
        "description": "names a chain of emails to one recipient (a first email and its follow-ups)",
        "example": "q4-intro"})
    stopOnReply = StrictBoolean(load_default=None, metadata={
        "description": "a reply to any email of the sequence cancels this one while PENDING; needs `sequence`; "
                       "omitted: true with a sequence"})
    inReplyTo = fields.Integer(load_default=None, strict=True, validate=validate.Range(min=1, max=MAX_ID),
                               metadata={"description": "an earlier email's id (same recipient): this one is sent "
                                                        "in its thread (In-Reply-To, References)"})
    recipientTimeZone = Text(load_default=None, validate=[validate.Length(min=1, max=64), TIME_ZONE], metadata={
        "description": "The recipient's IANA time zone: its sender's sendingWindow is read in it (the day "
                       "limit stays in the sender's zone). Omitted: the sender's timeZone",
        "example": "America/New_York"})


class ScheduleBatchSchema(StrictSchema):
    emails = fields.List(fields.Nested(ScheduleEmailSchema), required=True,
                         validate=validate.Length(min=1, max=MAX_BATCH),
                         metadata={"description": f"1 to {MAX_BATCH} emails, stored all or none"})


class FastLoad:
    """`schema.load(data)` for a flat schema without hooks, without Schema.load's per-call machinery.

    A JSON object with only known fields goes through each field's own `deserialize`
    (the same conversions and validators, in declared order, defaults included);
    anything else, and any field that fails, goes through `schema.load` itself, so
    every error is exactly the one the schema gives.
    """

    def __init__(self, schema: Schema) -> None:
        assert not schema._hooks.get("pre_load") and not schema._hooks.get("post_load") \
            and not schema._hooks.get("validates_schema") and not schema._hooks.get("validates"), \
            "FastLoad skips schema hooks"
        self.schema = schema
        self.fields = [(name, field) for name, field in schema.load_fields.items() if field.data_key is None]
        assert len(self.fields) == len(schema.load_fields), "FastLoad reads fields by name"
        self.names = frozenset(name for name, _ in self.fields)

    def fast(self, data: Any) -> dict[str, Any] | None:
        """The loaded dict, or None where only `schema.load` can tell (and word the error)."""
        if type(data) is not dict or not self.names.issuperset(data):
            return None
        try:
            return {name: field.deserialize(data.get(name, missing), name, data) for name, field in self.fields}
        except ValidationError:
            return None

    def load(self, data: Any) -> dict[str, Any]:
        loaded = self.fast(data)
        return loaded if loaded is not None else self.schema.load(data)


def _utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: the fields of sequences and threads: a request with any of them takes FastLoad's general path
_THREAD_FIELDS = frozenset({"sequence", "stopOnReply", "inReplyTo"})


class FastEmailLoad(FastLoad):
    """ScheduleEmailSchema's load, its common case checked inline: a request that passes these checks
    passes every validator of the schema, with the same result; any other goes through FastLoad.

    Each check here is the schema's own rule (the same compiled patterns and limits), so it can only
    be stricter than the schema, never looser; test_schemas compares the two on many inputs.
    """

    def __init__(self) -> None:
        super().__init__(ScheduleEmailSchema())
        self.when = self.schema.fields["scheduledAt"]
        self.one_line = ONE_LINE.regex.fullmatch
        self.sender_id = SENDER_ID.regex.fullmatch
        self.key = IDEMPOTENCY_KEY.regex.fullmatch
        #: scheduledAt text -> its UTC datetime: the field's result depends on the text alone, and a batch or
        #: a burst often shares one time
        self.instants: dict[str, Any] = {}

    def fast(self, data: Any) -> dict[str, Any] | None:
        if type(data) is dict and self.names.issuperset(data) and "recipientTimeZone" not in data:
            recipient, subject, body = data.get("recipient"), data.get("subject"), data.get("body")
            sender_id, at, key = data.get("senderId"), data.get("scheduledAt"), data.get("idempotencyKey")
            unsubscribe = data.get("unsubscribe")
            if not _THREAD_FIELDS.isdisjoint(data):
                return super().fast(data)
            if type(recipient) is str and type(subject) is str and type(body) is str and type(sender_id) is str \
                    and (unsubscribe is None or type(unsubscribe) is bool) \
                    and (key is None or type(key) is str) and (at is None or type(at) is str) \
                    and len(subject) <= 998 and self.one_line(subject) is not None and _utf8(subject) \
                    and len(body) <= MAX_BODY_CHARS and "\x00" not in body and _utf8(body) \
                    and self.sender_id(sender_id) is not None and (key is None or self.key(key) is not None):
                address = plain_address(recipient)
                if address is not None:
                    when = None if at is None else self.instants.get(at)
                    if when is None and at is not None:
                        try:
                            when = self.when.deserialize(at, "scheduledAt", data)
                        except ValidationError:
                            return None
                        if len(self.instants) >= 1024:
                            self.instants.clear()
                        self.instants[at] = when
                    return {"recipient": address, "subject": subject, "body": body, "senderId": sender_id,
                            "scheduledAt": when, "idempotencyKey": key, "unsubscribe": unsubscribe,
                            "sequence": None, "stopOnReply": None, "inReplyTo": None,
                            "recipientTimeZone": None}
        return super().fast(data)


class FastBatchLoad:
    """`ScheduleBatchSchema().load(data)`, each email through FastLoad; the schema words every error."""

    def __init__(self, schema: ScheduleBatchSchema) -> None:
        self.schema = schema
        self.item = FastEmailLoad()

    def load(self, data: Any) -> dict[str, Any]:
        if type(data) is dict and data.keys() == {"emails"}:
            items = data["emails"]
            if type(items) is list and 1 <= len(items) <= MAX_BATCH:
                loaded = []
                for item in items:
                    one = self.item.fast(item)
                    if one is None:
                        break
                    loaded.append(one)
                else:
                    return {"emails": loaded}
        return self.schema.load(data)


class RescheduleSchema(StrictSchema):
    scheduledAt = Instant(required=True, metadata={
        "description": "the new time, ISO-8601 with an offset or Z; past: now", "example": "2030-10-28T09:00:00Z"})


class ListEmailsQuerySchema(StrictSchema):
    status = Text(validate=validate.OneOf(STATUSES))
    senderId = Text(validate=SENDER_ID)
    sequence = Text(validate=[validate.Length(min=1, max=128), ONE_LINE],
                    metadata={"description": "only the emails of this sequence"})
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
    unsubscribe = fields.Boolean(required=True, metadata={
        "description": "whether its message carries List-Unsubscribe (false: scheduled as transactional)"})
    sequence = fields.String(required=True, allow_none=True)
    stopOnReply = fields.Boolean(required=True, metadata={
        "description": "a reply to an email of its sequence cancels it while PENDING"})
    inReplyTo = fields.Integer(required=True, allow_none=True,
                               metadata={"description": "the email whose thread it continues"})
    repliedAt = fields.DateTime(required=True, allow_none=True,
                                metadata={"description": "when a reply to it first came (POST /inbound, a mailbox)"})
    recipientTimeZone = fields.String(required=True, allow_none=True, metadata={
        "description": "the zone its sender's window is read in; null: the sender's"})


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
