"""`/webhooks`: an account's endpoints, their deliveries, and a test event.

The signing secret is made here, shown once in POST's answer, stored sealed
(COLDMAIL_SECRET_KEY: without it no endpoint can be registered, since a secret
that signs cannot be kept hashed) and never shown or logged again. A URL must be
https:// to a host that resolves to public addresses unless the server sets
ALLOW_PRIVATE_NETWORKS=true; the worker checks the address again at each
attempt (coldmail.webhooks.post). Another account's endpoint is `404`.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from marshmallow import ValidationError, fields, validate

from .. import net
from ..crypto import PasswordBox
from ..db import webhooks as rows
from ..errors import BadRequest, NotFound, SecretUnreadable
from ..webhooks import post, signing
from ..webhooks.delivery import UNREADABLE_SECRET, body_of
from ..webhooks.events import EVENT_TYPES, TEST_EVENT
from .auth import account_of
from .body import read_json
from .context import AppContext, ctx_key
from .schemas import StrictSchema
from .serialize import iso

routes = web.RouteTableDef()

MAX_URL_CHARS = 2048
MAX_DELIVERIES = 100


class WebhookInSchema(StrictSchema):
    url = fields.String(required=True, validate=[
        validate.Length(max=MAX_URL_CHARS),
        validate.URL(schemes={"https", "http"}, require_tld=False, error="Not an http(s) URL.")], metadata={
        "description": "Where deliveries are POSTed: https:// to a host that resolves to public addresses "
                       "(http:// and private addresses only if the server sets ALLOW_PRIVATE_NETWORKS)",
        "example": "https://example.com/hooks/coldmail"})
    events = fields.List(fields.String(validate=validate.OneOf(EVENT_TYPES)), required=True,
                         validate=validate.Length(min=1, max=len(EVENT_TYPES)),
                         metadata={"description": "The event types to receive", "example": ["email.sent"]})


class WebhookOutSchema(StrictSchema):
    id = fields.Integer(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(), required=True)
    createdAt = fields.String(required=True)


class WebhookCreatedSchema(WebhookOutSchema):
    secret = fields.String(required=True, metadata={
        "description": "`whsec_` + base64 of 32 random bytes: verifies each delivery's `webhook-signature` "
                       "(Standard Webhooks). Shown only here."})


class WebhooksSchema(StrictSchema):
    webhooks = fields.List(fields.Nested(WebhookOutSchema), required=True)


class DeliverySchema(StrictSchema):
    id = fields.Integer(required=True)
    event = fields.String(required=True)
    webhookId = fields.String(required=True, metadata={"description": "the `webhook-id` header: the same on "
                                                                      "every attempt"})
    status = fields.String(required=True, metadata={"enum": ["pending", "delivered", "failed"]})
    attempts = fields.Integer(required=True)
    lastStatusCode = fields.Integer(required=True, allow_none=True)
    lastError = fields.String(required=True, allow_none=True)
    nextAttemptAt = fields.String(required=True, allow_none=True, metadata={"description": "null unless pending"})
    createdAt = fields.String(required=True)
    deliveredAt = fields.String(required=True, allow_none=True)


class DeliveriesSchema(StrictSchema):
    deliveries = fields.List(fields.Nested(DeliverySchema), required=True)


class DeliveriesQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_DELIVERIES))


class TestResultSchema(StrictSchema):
    delivered = fields.Boolean(required=True, metadata={"description": "the endpoint answered 2xx"})
    statusCode = fields.Integer(required=True, allow_none=True)
    error = fields.String(required=True, allow_none=True)
    webhookId = fields.String(required=True)


_in_schema = WebhookInSchema()
_query_schema = DeliveriesQuerySchema()


def _webhook_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "url": row["url"], "events": list(row["events"]), "createdAt": iso(row["created_at"])}


def _delivery_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "event": row["event_type"], "webhookId": row["msg_id"], "status": row["status"],
            "attempts": row["attempts"], "lastStatusCode": row["last_status_code"], "lastError": row["last_error"],
            "nextAttemptAt": iso(row["next_attempt_at"]), "createdAt": iso(row["created_at"]),
            "deliveredAt": iso(row["delivered_at"])}


def _webhook_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"no webhook with id {raw!r}")
    return int(raw)


def _check_url(url: str, *, allow_private: bool) -> None:
    """The outbound guard at registration (blocks on DNS); the worker checks again at each attempt."""
    try:
        post.check_url(url, allow_private=allow_private)
        if not allow_private:
            parts = urlsplit(url)
            net.resolve(parts.hostname, parts.port or 443, allow_private=False)
    except (BadRequest, ValueError) as e:
        raise ValidationError({"url": [str(e)]}) from None


@routes.post("/webhooks")
async def create(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    data = _in_schema.load(await read_json(request))
    if not ctx.settings.secret_keys:
        raise BadRequest("registering a webhook needs COLDMAIL_SECRET_KEY to be set on the server: its signing "
                         "secret is stored encrypted")
    await ctx.run(_check_url, data["url"], allow_private=ctx.settings.allow_private_networks)
    secret = signing.new_secret()
    row = await ctx.run_db(rows.create, account_of(request), url=data["url"],
                           events=list(dict.fromkeys(data["events"])),
                           secret_enc=PasswordBox(ctx.settings.secret_keys).seal(secret))
    return web.json_response({**_webhook_json(row), "secret": secret}, status=201)


@routes.get("/webhooks")
async def list_all(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    found = await ctx.run_db(rows.list_for, account_of(request))
    return web.json_response({"webhooks": [_webhook_json(row) for row in found]})


@routes.delete("/webhooks/{id}")
async def delete(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    webhook_id = _webhook_id(request)
    if not await ctx.run_db(rows.delete, account_of(request), webhook_id):
        raise NotFound(f"no webhook with id {webhook_id}")
    return web.Response(status=204)


@routes.get("/webhooks/{id}/deliveries")
async def deliveries(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    webhook_id = _webhook_id(request)
    query = _query_schema.load(dict(request.query))
    account = account_of(request)
    if await ctx.run_db(rows.get, account, webhook_id) is None:
        raise NotFound(f"no webhook with id {webhook_id}")
    found = await ctx.run_db(rows.deliveries, account, webhook_id, limit=query["limit"])
    return web.json_response({"deliveries": [_delivery_json(row) for row in found]})


@routes.post("/webhooks/{id}/test")
async def test(request: web.Request) -> web.Response:
    """Post a signed `webhook.test` event now and say what the endpoint answered (nothing is stored)."""
    ctx: AppContext = request.app[ctx_key]
    webhook_id = _webhook_id(request)
    row = await ctx.run_db(rows.get, account_of(request), webhook_id)
    if row is None:
        raise NotFound(f"no webhook with id {webhook_id}")
    msg_id = f"msg_test_{uuid.uuid4().hex}"
    try:
        secret = PasswordBox(ctx.settings.secret_keys).open(row["secret_enc"])
    except SecretUnreadable:
        answer = post.Answer(code=None, error=UNREADABLE_SECRET)
    else:
        body = body_of({"type": TEST_EVENT, "timestamp": iso(datetime.now(timezone.utc)),
                        "data": {"webhookId": webhook_id}})
        answer = await post.post(row["url"], body, signing.headers(secret, msg_id, int(time.time()), body),
                                 allow_private=ctx.settings.allow_private_networks)
    return web.json_response({"delivered": answer.ok, "statusCode": answer.code, "error": answer.error,
                              "webhookId": msg_id})
