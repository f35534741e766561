"""`/suppressions`: the addresses an account never sends to.

An address is stored and matched normalised (coldmail.addresses): `Jane@Bücher.example`
and `jane@xn--bcher-kva.example` are one entry, shown in the second form. Adding
one stops the account's PENDING emails to it; removing one sends nothing that was
stopped. Another account's entries are not seen: its list is its own.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from apispec import APISpec
from marshmallow import Schema, ValidationError, fields, validate

from ..addresses import normalise
from ..db import suppressions
from ..errors import NotFound
from ..suppressing import suppress
from .auth import account_of
from .body import read_json
from .context import AppContext, ctx_key
from .schemas import DEFAULT_PAGE, MAX_PAGE, EmailAddress, StrictSchema, Text
from .serialize import iso

routes = web.RouteTableDef()

#: an address as stored (RFC 5321's path limit): longer is no address
MAX_ADDRESS = 320


class Address(Text):
    """An address to look up or remove: only normalised, not validated, so that any stored entry can be named."""

    default_error_messages = {"address": "Not an email address: {reason}"}

    def __init__(self, **kwargs) -> None:
        super().__init__(validate=validate.Length(min=3, max=MAX_ADDRESS), **kwargs)
        self.metadata.setdefault("format", "email")

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        validate.Length(min=3, max=MAX_ADDRESS)(text)
        try:
            return normalise(text)
        except ValueError as e:
            raise self.make_error("address", reason=str(e)) from None


class SuppressionInSchema(StrictSchema):
    email = EmailAddress(required=True, metadata={"example": "jane@example.com"})
    reason = fields.String(load_default="manual", validate=validate.OneOf(suppressions.REASONS))


class ListSuppressionsQuerySchema(StrictSchema):
    email = Address(metadata={"description": "only this address (any case or IDN spelling)"})
    reason = fields.String(validate=validate.OneOf(suppressions.REASONS))
    limit = fields.Integer(load_default=DEFAULT_PAGE, validate=validate.Range(min=1, max=MAX_PAGE),
                           metadata={"description": f"page size, at most {MAX_PAGE}"})
    after = Text(validate=validate.Length(min=1, max=MAX_ADDRESS), metadata={
        "description": "the `next` of the previous page: only addresses after it"})


class SuppressionSchema(Schema):
    email = fields.String(required=True, metadata={
        "description": "normalised: local part lower-case, domain in ASCII (IDNA)", "example": "jane@example.com"})
    reason = fields.String(required=True, validate=validate.OneOf(suppressions.REASONS))
    senderId = fields.String(required=True, allow_none=True, metadata={"description": "the sender whose send "
                                                                        "bounced or was unsubscribed from"})
    emailId = fields.Integer(required=True, allow_none=True, metadata={"description": "the email that led to it"})
    createdAt = fields.DateTime(required=True)


class SuppressionPageSchema(Schema):
    items = fields.List(fields.Nested(SuppressionSchema), required=True, metadata={"description": "by address"})
    next = fields.String(required=True, allow_none=True,
                         metadata={"description": "pass as `after` for the next page; null on the last page"})


_in_schema = SuppressionInSchema()
_list_schema = ListSuppressionsQuerySchema()
_address = Address()


def suppression_json(entry: dict[str, Any]) -> dict[str, Any]:
    return {"email": entry["address"], "reason": entry["reason"], "senderId": entry["sender_id"],
            "emailId": entry["email_id"], "createdAt": iso(entry["created_at"])}


@routes.post("/suppressions")
async def add(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    data = _in_schema.load(await read_json(request))
    try:
        address = normalise(data["email"])
    except ValueError as e:
        raise ValidationError({"email": [str(e)]}) from None
    entry, created = await ctx.run_db(suppress, account_of(request), address, reason=data["reason"])
    return web.json_response(suppression_json(entry), status=201 if created else 200)


@routes.get("/suppressions")
async def page(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    repeated = {key: ["give this parameter once"] for key in request.query if len(request.query.getall(key)) > 1}
    if repeated:
        raise ValidationError(repeated)
    query = _list_schema.load(dict(request.query))
    limit = query["limit"]
    rows = await ctx.run_db(suppressions.page, account_of(request), limit=limit + 1, after=query.get("after"),
                            address=query.get("email"), reason=query.get("reason"))
    more = len(rows) > limit
    rows = rows[:limit]
    return web.json_response({"items": [suppression_json(row) for row in rows],
                              "next": rows[-1]["address"] if more else None})


@routes.delete("/suppressions/{email}")
async def remove(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    try:
        address = _address.deserialize(request.match_info["email"])
    except ValidationError as e:
        raise ValidationError({"email": e.messages}) from None
    if not await ctx.run_db(suppressions.remove, account_of(request), address):
        raise NotFound("this address is not on the account's suppression list")
    return web.Response(status=204)


def describe(spec: APISpec, errors) -> None:
    """The paths above in the OpenAPI description; `errors(*statuses)` names the shared error responses."""
    spec.components.schema("SuppressionIn", schema=SuppressionInSchema)
    spec.components.schema("Suppression", schema=SuppressionSchema)
    spec.components.schema("SuppressionPage", schema=SuppressionPageSchema)
    body = {"content": {"application/json": {"schema": "Suppression"}}}
    spec.path(path="/suppressions", operations={
        "post": {"operationId": "addSuppression", "summary": "Never send to an address again (its PENDING "
                 "emails become SUPPRESSED)", "tags": ["suppressions"],
                 "requestBody": {"required": True, "content": {"application/json": {"schema": "SuppressionIn"}}},
                 "responses": {"201": {"description": "Added", **body},
                               "200": {"description": "Already there (its entry, unchanged)", **body},
                               **errors(400, 401, 413, 415, 503)}},
        "get": {"operationId": "listSuppressions", "summary": "The account's suppressed addresses, a page at a time",
                "tags": ["suppressions"], "parameters": [{"in": "query", "schema": ListSuppressionsQuerySchema}],
                "responses": {"200": {"description": "One page; `next` leads to the following one",
                                      "content": {"application/json": {"schema": "SuppressionPage"}}},
                              **errors(400, 401, 503)}},
    })
    spec.path(path="/suppressions/{email}", parameters=[{
        "name": "email", "in": "path", "required": True, "description": "the address, any case or IDN spelling",
        "schema": {"type": "string", "minLength": 3, "maxLength": MAX_ADDRESS}}], operations={
        "delete": {"operationId": "removeSuppression", "summary": "Send to an address again (what it stopped "
                   "stays stopped)", "tags": ["suppressions"],
                   "responses": {"204": {"description": "Removed"},
                                 "404": {"description": "Not on the account's list", "content": {
                                     "application/json": {"schema": "Error"}}},
                                 **errors(400, 401, 503)}}})
