"""`PUT /senders/{senderId}` and `GET /senders/{senderId}`: a sender's From address, cap, own relay and DKIM.

A sender id names a sender of the key's account: another account's sender of the
same id is another sender, never seen nor changed here.

The SMTP password travels inside `smtpUrl` on PUT only: it is split off,
stored encrypted (COLDMAIL_SECRET_KEY), and never shown or logged; the URL is
stored and shown without it. The relay's host must resolve to public addresses
(coldmail.net) unless ALLOW_PRIVATE_NETWORKS=true; the worker checks it again
at each connection, as DNS may answer otherwise by then.

The mailbox password travels inside `imapUrl` the same way (coldmail.mailbox
reads that mailbox); GET shows the URL without it, and how polling goes
(`imapStatus`).

A DKIM private key travels on PUT only, in `dkim.privateKey`: it is parsed (in
the executor: a 4096-bit key takes milliseconds), stored encrypted, and never
shown or logged; GET shows the domain, the selector and `hasKey`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from aiohttp import web
from marshmallow import ValidationError, fields, validate, validates_schema

from .. import net
from ..caps import pacing as rules
from ..db.pauses import MIN_SENDS, RECENT_SENDS
from ..errors import BadRequest, NotFound
from ..mail.dkim import UnusableKey, load_private_key
from ..senders import Dkim, PauseChange
from ..settings import Settings
from .auth import account_of
from .body import read_json
from .context import AppContext, ctx_key
from .schemas import SENDER_ID, TIME_ZONE, EmailAddress, Pattern, StrictSchema
from .serialize import iso

routes = web.RouteTableDef()

MAX_LIMIT = 100_000
MAX_URL_CHARS = 2048


@dataclass(frozen=True)
class SmtpEndpoint:
    """A sender's relay or mailbox: the URL as stored and shown (no password), and the password apart."""

    url: str
    password: str | None


_USERINFO_CHARS = r"[A-Za-z0-9._~!$&'()*+,;=%-]"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
#: what a relay URL may be; the OpenAPI description carries the same pattern
SMTP_URL = Pattern(
    rf"^smtps?://(?:{_USERINFO_CHARS}+(?::{_USERINFO_CHARS}*)?@)?"
    rf"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::{_PORT})?/?"
    r"(?:\?starttls=(?:auto|require|never))?$",
    error="Not an SMTP URL: smtp://[user[:password]@]host[:port][?starttls=auto|require|never] or smtps://…, "
          "with special characters in the user or password percent-encoded.")


_FOLDER_CHARS = r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]"
#: what a mailbox URL may be: a user is needed (IMAP always logs in); the path names the folder (INBOX)
IMAP_URL = Pattern(
    rf"^imaps?://{_USERINFO_CHARS}+(?::{_USERINFO_CHARS}*)?@"
    rf"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::{_PORT})?(?:/{_FOLDER_CHARS}{{0,255}})?"
    r"(?:\?starttls=(?:auto|require|never))?$",
    error="Not an IMAP URL: imaps://user[:password]@host[:port][/folder] or "
          "imap://user[:password]@host[:port][/folder][?starttls=auto|require|never], with special characters "
          "in the user, password or folder percent-encoded.")


class SmtpUrl(fields.String):
    """A relay URL, split into the URL to store and show (no password) and the password.

    Error messages never repeat the value: it may hold a password.
    """

    pattern = SMTP_URL

    def __init__(self, **kwargs) -> None:
        super().__init__(validate=[validate.Length(max=MAX_URL_CHARS), self.pattern], **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> SmtpEndpoint:
        text = super()._deserialize(value, attr, data, **kwargs)
        for check in self.validators:  # before splitting: the parts of a bad URL mean nothing
            check(text)
        try:
            parts = urlsplit(text)
            parts.hostname, parts.port
        except ValueError:
            raise ValidationError(self.pattern.error) from None
        self._check_parts(parts)
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        netloc = f"{user}@{hostport}" if user else hostport
        url = urlunsplit((parts.scheme, netloc, parts.path if self.keeps_path else "", parts.query, ""))
        return SmtpEndpoint(url=url, password=unquote(password) if password else None)

    #: a relay URL has no path; a mailbox URL's path names the folder
    keeps_path = False

    def _check_parts(self, parts) -> None:
        """What the pattern cannot say about the URL's parts."""

    def _validate(self, value) -> None:
        """Checked in _deserialize, on the text; `validate` is there for the OpenAPI description."""


class ImapUrl(SmtpUrl):
    """A mailbox URL, split as a relay URL is; its folder, percent-decoded, must be printable."""

    pattern = IMAP_URL
    keeps_path = True

    def _check_parts(self, parts) -> None:
        folder = unquote(parts.path.lstrip("/"))
        if not folder.isprintable():
            raise ValidationError("The folder (the URL's path) must be printable text once percent-decoded.")


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: d=: a domain name of two labels at least (what DNS publishes the key under, with the selector)
DKIM_DOMAIN = Pattern(rf"^(?=.{{1,253}}$)(?:{_LABEL}\.)+{_LABEL}$",
                      error="Not a domain name (example.com).")
#: s=: one or more DNS labels
DKIM_SELECTOR = Pattern(rf"^(?=.{{1,63}}$){_LABEL}(?:\.{_LABEL})*$",
                        error="Not a DKIM selector: DNS labels of letters, digits and hyphens (s1, mail2026).")
#: a PEM RSA key of 4096 bits is about 3.3 KiB
MAX_KEY_CHARS = 16_384


class DkimSchema(StrictSchema):
    domain = fields.String(required=True, validate=DKIM_DOMAIN, metadata={
        "description": "The signing domain (d=), aligned with the From address's domain for DMARC",
        "example": "example.com"})
    selector = fields.String(required=True, validate=DKIM_SELECTOR, metadata={
        "description": "The selector (s=): the public key is published at {selector}._domainkey.{domain}",
        "example": "s1"})
    privateKey = fields.String(load_default=None, validate=validate.Length(min=1, max=MAX_KEY_CHARS), metadata={
        "description": "An RSA private key (1024 to 4096 bits; 2048 is usual) in PEM, not encrypted: "
                       "-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----. Stored encrypted "
                       "(COLDMAIL_SECRET_KEY) and never shown. Omitted: the stored key is kept."})


class JsonBoolean(fields.Boolean):
    """true or false, as JSON has them: not 1, "yes" or "true", which marshmallow's Boolean also takes."""

    def _deserialize(self, value, attr, data, **kwargs) -> bool:
        if type(value) is not bool:
            raise self.make_error("invalid")
        return value


MAX_GAP_S = 86_400


class ClockTime(fields.String):
    """A local wall-clock time, HH:MM or HH:MM:SS."""

    def __init__(self, **kwargs) -> None:
        super().__init__(validate=Pattern(r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$",
                                          error="Not a time: HH:MM or HH:MM:SS, 00:00 to 23:59:59."), **kwargs)


class WindowSchema(StrictSchema):
    days = fields.List(fields.String(validate=validate.OneOf(list(rules.DAYS))), required=True,
                       validate=validate.Length(min=1, max=7),
                       metadata={"description": "the days it sends on, of mon tue wed thu fri sat sun",
                                 "example": ["mon", "tue", "wed", "thu", "fri"]})
    start = ClockTime(required=True, metadata={"description": "local time it starts (HH:MM or HH:MM:SS)",
                                               "example": "09:00"})
    end = ClockTime(required=True, metadata={"description": "local time it ends, after start", "example": "17:30"})

    @validates_schema
    def _start_before_end(self, data, **kwargs) -> None:
        if rules.parse_clock(data["start"]) >= rules.parse_clock(data["end"]):
            raise ValidationError("Must be after start (a window ends on the day it starts).", "end")
        if len(set(data["days"])) != len(data["days"]):
            raise ValidationError("A day is named twice.", "days")


class WarmupSchema(StrictSchema):
    startPerDay = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=MAX_LIMIT),
                                 metadata={"description": "sends allowed on startDate", "example": 10})
    increasePerDay = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=MAX_LIMIT),
                                    metadata={"description": "added each day after it", "example": 5})
    startDate = fields.Date(load_default=None, metadata={
        "description": "YYYY-MM-DD; omitted: today in the sender's timeZone", "example": "2026-12-01"})


class SenderInSchema(StrictSchema):
    fromAddress = EmailAddress(required=True, metadata={"example": "alice@example.com"})
    hourlyLimit = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": "Sends allowed in any window of RATE_LIMIT_WINDOW_SECONDS (an hour by default)",
                  "example": 100})
    smtpUrl = SmtpUrl(load_default=None, allow_none=True, metadata={
        "description": "The sender's own relay: smtp://user:password@host:587 (STARTTLS when offered; "
                       "?starttls=require to insist; with a user, STARTTLS is required unless "
                       "?starttls=never) or smtps://… (implicit TLS). The host must resolve to public "
                       "addresses unless the server sets ALLOW_PRIVATE_NETWORKS. The password is stored "
                       "encrypted and never shown. Repeat the URL as GET shows it (without the password) "
                       "to keep the stored one. Omitted or null: the server's SMTP_URL.",
        "example": "smtp://alice@smtp.example.com:587?starttls=require"})
    imapUrl = ImapUrl(load_default=None, allow_none=True, metadata={
        "description": "The sender's own mailbox, read every IMAP_POLL_SECONDS for replies, bounces and "
                       "complaints (each new message is classified as POST /inbound does; the mailbox is only "
                       "read: nothing is flagged, moved or deleted): imaps://user:password@host:993/INBOX "
                       "(implicit TLS) or imap://user:password@host:143/INBOX (STARTTLS, required unless "
                       "?starttls=never). The path names the folder (INBOX when none). The host must resolve to "
                       "public addresses unless the server sets ALLOW_PRIVATE_NETWORKS. The password is stored "
                       "encrypted and never shown; repeat the URL as GET shows it to keep it. Omitted or null: "
                       "no mailbox is read.",
        "example": "imaps://alice%40example.com@imap.example.com:993/INBOX"})
    dkim = fields.Nested(DkimSchema, load_default=None, allow_none=True, metadata={
        "description": "Sign every message of the sender with DKIM (rsa-sha256, relaxed/relaxed). Omitted or "
                       "null: no signature (a stored key is removed)."})
    paused = JsonBoolean(allow_none=True, metadata={
        "description": "true holds every send of the sender (its emails stay PENDING, nothing is lost); false "
                       "resumes them in order (null: false). Omitted: unchanged (a sender that paused itself "
                       "stays paused)."})
    maxBounceRate = fields.Float(allow_none=True, validate=validate.Range(min=0, max=1, min_inclusive=False),
                                 metadata={"description": "the sender pauses itself when hard bounces among its "
                                                          f"last {RECENT_SENDS} sends (at least {MIN_SENDS}) "
                                                          "exceed this share; null: never. Omitted: unchanged.",
                                           "example": 0.05})
    timeZone = fields.String(allow_none=True, validate=[validate.Length(min=1, max=64), TIME_ZONE], metadata={
        "description": "IANA zone of its sendingWindow and of its days (dailyLimit, warmup); null: UTC. "
                       "Omitted: unchanged.", "example": "Europe/Berlin"})
    sendingWindow = fields.Nested(WindowSchema, allow_none=True, metadata={
        "description": "It sends only inside this local wall-clock window; null: any time. Omitted: unchanged."})
    dailyLimit = fields.Integer(allow_none=True, strict=True, validate=validate.Range(min=0, max=MAX_LIMIT),
                                metadata={"description": "sends per local calendar day of its timeZone; null: "
                                                         "none. Omitted: unchanged.", "example": 50})
    warmup = fields.Nested(WarmupSchema, allow_none=True, metadata={
        "description": "the day's limit is min(dailyLimit, startPerDay + increasePerDay × days since startDate); "
                       "null: none. Omitted: unchanged."})
    minGapSeconds = fields.Integer(allow_none=True, strict=True, validate=validate.Range(min=0, max=MAX_GAP_S),
                                   metadata={"description": "its consecutive sends start at least this far apart "
                                                            "(plus jitter); null: 0. Omitted: unchanged.",
                                             "example": 240})
    jitterSeconds = fields.Integer(allow_none=True, strict=True, validate=validate.Range(min=0, max=MAX_GAP_S),
                                   metadata={"description": "a random 0…jitterSeconds added to each gap; null: 0. "
                                                            "Omitted: unchanged.", "example": 120})


#: the pacing fields of PUT, and their columns
PACING_FIELDS = {"timeZone": "time_zone", "sendingWindow": "sending_window", "dailyLimit": "daily_limit",
                 "warmup": "warmup", "minGapSeconds": "min_gap_s", "jitterSeconds": "jitter_s"}


class UsageSchema(StrictSchema):
    sentInWindow = fields.Integer(required=True, metadata={
        "description": "Sends (made or under way) in the last windowSeconds, as the cap counts them"})
    windowSeconds = fields.Integer(required=True)
    sentToday = fields.Integer(required=True, metadata={
        "description": "Sends (made or under way) on the current local day of its timeZone"})
    todayLimit = fields.Integer(required=True, allow_none=True, metadata={
        "description": "today's limit: dailyLimit, or less during warmup; null: none"})


class WindowOutSchema(StrictSchema):
    days = fields.List(fields.String(), required=True)
    start = fields.String(required=True)
    end = fields.String(required=True)


class WarmupOutSchema(StrictSchema):
    startPerDay = fields.Integer(required=True)
    increasePerDay = fields.Integer(required=True)
    startDate = fields.String(required=True)


class DkimOutSchema(StrictSchema):
    domain = fields.String(required=True)
    selector = fields.String(required=True)
    hasKey = fields.Boolean(required=True, metadata={"description": "A private key is stored (never shown)"})


class ImapStatusSchema(StrictSchema):
    state = fields.String(required=True, metadata={
        "description": "never: not polled yet; ok: the last poll worked; failing: it failed (see lastError), "
                       "and the mailbox is tried again after a backoff", "enum": ["never", "ok", "failing"]})
    failures = fields.Integer(required=True, metadata={"description": "polls failed in a row"})
    lastError = fields.String(required=True, allow_none=True, metadata={
        "description": "why the last poll failed (never a password); null when it worked"})
    lastPolledAt = fields.String(required=True, allow_none=True, metadata={"description": "the last poll's end"})
    nextPollAt = fields.String(required=True, metadata={"description": "when the mailbox is due again"})


class SenderOutSchema(StrictSchema):
    id = fields.String(required=True)
    fromAddress = fields.String(required=True, metadata={"description": "DEFAULT_FROM when never set"})
    hourlyLimit = fields.Integer(required=True, metadata={"description": "RATE_LIMIT_PER_HOUR when never set"})
    smtpUrl = fields.String(required=True, allow_none=True,
                            metadata={"description": "Without its password; null: the server's SMTP_URL"})
    hasPassword = fields.Boolean(required=True, metadata={"description": "An SMTP password is stored"})
    secretReadable = fields.Boolean(required=True, allow_none=True, metadata={
        "description": "Whether a key of the server's COLDMAIL_SECRET_KEY opens the stored password and DKIM "
                       "key; false: the key was changed, and the sender's emails are held PENDING until it is "
                       "back. null: neither is stored"})
    dkim = fields.Nested(DkimOutSchema, required=True, allow_none=True,
                         metadata={"description": "null: messages are not signed"})
    imapUrl = fields.String(required=True, allow_none=True,
                            metadata={"description": "Without its password; null: no mailbox is read"})
    hasImapPassword = fields.Boolean(required=True, metadata={"description": "A mailbox password is stored"})
    imapStatus = fields.Nested(ImapStatusSchema, required=True, allow_none=True,
                               metadata={"description": "How reading the mailbox goes; null: no imapUrl"})
    usage = fields.Nested(UsageSchema, required=True)
    paused = fields.Boolean(required=True, metadata={"description": "its sends are held"})
    maxBounceRate = fields.Float(required=True, allow_none=True)
    bounceRate = fields.Float(required=True, allow_none=True, metadata={
        "description": f"hard bounces among its last {RECENT_SENDS} sends; null before its first send"})
    timeZone = fields.String(required=True, metadata={"description": "UTC when never set"})
    sendingWindow = fields.Nested(WindowOutSchema, required=True, allow_none=True)
    dailyLimit = fields.Integer(required=True, allow_none=True)
    warmup = fields.Nested(WarmupOutSchema, required=True, allow_none=True)
    minGapSeconds = fields.Integer(required=True)
    jitterSeconds = fields.Integer(required=True)
    createdAt = fields.String(required=True)
    updatedAt = fields.String(required=True)


_in_schema = SenderInSchema()


def sender_json(row: dict[str, Any], *, sent_in_window: int, settings: Settings,
                bounces: tuple[int, int], today: tuple[int, int | None]) -> dict[str, Any]:
    """A row as the API shows it: defaults filled in, the password never; `bounces`: (hard bounces, sends);
    `today`: (sends today, today's limit)."""
    bounced, sends = bounces
    return {
        "id": row["id"],
        "fromAddress": row["from_address"] or settings.default_from,
        "hourlyLimit": row["hourly_limit"] or settings.rate_limit_per_hour,
        "smtpUrl": row["smtp_url"],
        "hasPassword": row["smtp_password_enc"] is not None,
        "secretReadable": row["secret_readable"],
        "dkim": {"domain": row["dkim_domain"], "selector": row["dkim_selector"], "hasKey": True}
        if row["dkim_key_enc"] else None,
        "imapUrl": row["imap_url"],
        "hasImapPassword": row["imap_password_enc"] is not None,
        "imapStatus": _imap_status(row["mailbox"]) if row["imap_url"] and row["mailbox"] else None,
        "usage": {"sentInWindow": sent_in_window, "windowSeconds": settings.rate_limit_window_s,
                  "sentToday": today[0], "todayLimit": today[1]},
        "timeZone": row["time_zone"] or "UTC",
        "sendingWindow": row["sending_window"],
        "dailyLimit": row["daily_limit"],
        "warmup": row["warmup"],
        "minGapSeconds": row["min_gap_s"] or 0,
        "jitterSeconds": row["jitter_s"] or 0,
        "paused": row["paused"],
        "maxBounceRate": row["max_bounce_rate"],
        "bounceRate": round(bounced / sends, 4) if sends else None,
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


def _imap_status(mailbox: dict[str, Any]) -> dict[str, Any]:
    return {"state": mailbox["status"], "failures": mailbox["failures"], "lastError": mailbox["last_error"],
            "lastPolledAt": iso(mailbox["last_polled_at"]) if mailbox["last_polled_at"] else None,
            "nextPollAt": iso(mailbox["next_poll_at"])}


def _check_public(url: str, field: str) -> None:
    """The outbound guard at save time: the relay's or mailbox's host must resolve to public addresses (blocks
    on DNS); a refusal names `field`."""
    parts = urlsplit(url)
    try:
        net.resolve(parts.hostname, net.port_of(parts), allow_private=False)
    except BadRequest as e:
        raise ValidationError({field: [str(e)]}) from None


def _check_key(pem: str) -> None:
    """The DKIM key must be one coldmail can sign with; the error says why, never repeating the key."""
    try:
        load_private_key(pem)
    except UnusableKey as e:
        raise ValidationError({"dkim": {"privateKey": [str(e)]}}) from None


@routes.put("/senders/{sender_id}")
async def put(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    sender_id = request.match_info["sender_id"]
    try:
        SENDER_ID(sender_id)
    except ValidationError as e:
        raise ValidationError({"senderId": e.messages}) from None
    data = _in_schema.load(await read_json(request))
    endpoint: SmtpEndpoint | None = data["smtpUrl"]
    mailbox: SmtpEndpoint | None = data["imapUrl"]
    if not ctx.settings.allow_private_networks:
        for field, checked in (("smtpUrl", endpoint), ("imapUrl", mailbox)):
            if checked is not None:
                await ctx.run(_check_public, checked.url, field)
    dkim = None
    if data["dkim"] is not None:
        dkim = Dkim(domain=data["dkim"]["domain"].lower(), selector=data["dkim"]["selector"].lower(),
                    private_key=data["dkim"]["privateKey"])
        if dkim.private_key is not None:
            await ctx.run(_check_key, dkim.private_key)
    account = account_of(request)
    pause = None
    if "paused" in data or "maxBounceRate" in data:
        pause = PauseChange(paused=bool(data["paused"]) if "paused" in data else None,
                            max_bounce_rate=data.get("maxBounceRate"), set_rate="maxBounceRate" in data)
    row, created = await ctx.run(ctx.senders.put, account, sender_id, from_address=data["fromAddress"],
                                 hourly_limit=data["hourlyLimit"], smtp_url=endpoint.url if endpoint else None,
                                 smtp_password=endpoint.password if endpoint else None, dkim=dkim,
                                 imap_url=mailbox.url if mailbox else None,
                                 imap_password=mailbox.password if mailbox else None, pause=pause,
                                 pacing=_pacing_columns(data))
    return web.json_response(await _shown(ctx, account, row), status=201 if created else 200)


def _pacing_columns(data: dict[str, Any]) -> dict[str, Any]:
    """The pacing columns a PUT sets (None: off), from its loaded fields; those it omits stay as they are. A
    warm-up without its startDate starts on the sender's today (coldmail.senders, which knows its zone)."""
    values = {column: data[name] for name, column in PACING_FIELDS.items() if name in data}
    if values.get("sending_window") is not None:
        window = values["sending_window"]
        days = sorted(set(window["days"]), key=rules.DAYS.index)
        values["sending_window"] = {"days": days, "start": window["start"], "end": window["end"]}
    if values.get("warmup") is not None:
        warm = values["warmup"]
        values["warmup"] = {"startPerDay": warm["startPerDay"], "increasePerDay": warm["increasePerDay"],
                            "startDate": warm["startDate"].isoformat() if warm["startDate"] else None}
    return values


async def _shown(ctx: AppContext, account: str, row: dict[str, Any]) -> dict[str, Any]:
    used = await ctx.run(ctx.senders.usage, account, row["id"])
    bounces = await ctx.run(ctx.senders.bounce_counts, account, row["id"])
    today = await ctx.run(ctx.senders.today, account, row["id"], row)
    return sender_json(row, sent_in_window=used, settings=ctx.settings, bounces=bounces, today=today)


@routes.get("/senders/{sender_id}")
async def get(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    sender_id = request.match_info["sender_id"]
    account = account_of(request)
    row = await ctx.run(ctx.senders.get, account, sender_id)
    if row is None:
        raise NotFound(f"no sender with id {sender_id!r}: make one with PUT, or schedule an email with it")
    return web.json_response(await _shown(ctx, account, row))
