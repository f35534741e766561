"""`POST /inbound`: one raw message a relay, a mail filter or a script hands over, classified and acted on.

The work is coldmail.inbound.receive, the same the mailbox poller calls; it blocks (PostgreSQL), so it runs on
the executor. Only the key's account's emails are matched.
"""

from __future__ import annotations

from aiohttp import web
from apispec import APISpec
from marshmallow import Schema, fields, validate

from .. import inbound
from ..errors import BadRequest
from .auth import account_of
from .body import MAX_INBOUND_BYTES, read_bytes
from .context import AppContext, ctx_key

routes = web.RouteTableDef()


class InboundResultSchema(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(inbound.KINDS), metadata={
        "description": "bounce (a DSN with a 5.x.x recipient), complaint (an ARF report), auto_reply, reply "
                       "(names a Message-ID coldmail sent), or unmatched"})
    emailId = fields.Integer(required=True, allow_none=True,
                             metadata={"description": "the account's email it was about; null: none was found, "
                                                      "nothing changed"})


@routes.post("/inbound")
async def post_inbound(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    raw = await read_bytes(request, content_type="message/rfc822", max_bytes=MAX_INBOUND_BYTES)
    account = account_of(request)
    try:
        received = await ctx.run(inbound.receive, account, raw)
    except inbound.NotAMessage as e:
        raise BadRequest(str(e)) from None
    return web.json_response({"kind": received.kind, "emailId": received.email_id})


def describe(spec: APISpec, errors) -> None:
    """POST /inbound in the OpenAPI description (`errors(*codes)`: the shared error responses)."""
    spec.components.schema("InboundResult", schema=InboundResultSchema)
    spec.path(path="/inbound", operations={"post": {
        "operationId": "postInbound", "tags": ["inbound"],
        "summary": "Hand over one inbound message (a reply, a DSN, an ARF report, an auto-reply)",
        "description": "The body is one raw RFC 5322 message. The same message twice changes nothing the second "
                       "time (matched by its Message-ID, or its bytes when it has none).",
        "requestBody": {"required": True, "content": {"message/rfc822": {
            "schema": {"type": "string", "format": "binary", "maxLength": MAX_INBOUND_BYTES}}}},
        "responses": {"200": {"description": "what the message was, and the email it was about",
                              "content": {"application/json": {"schema": "InboundResult"}}},
                      **errors(400, 401, 413, 415)}}})
