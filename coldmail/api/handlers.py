"""Thin handlers: parse and validate at the edge, ask a service (on the executor when it blocks), answer JSON.

Every service call names the account of the request's key (auth.account_of): another account's email is
`404`, as if absent, for reading and changing alike.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError
from prometheus_client import CollectorRegistry

from .. import metrics
from ..db.emails import reads
from ..errors import BadRequest, NotFound
from ..status import EmailStatus
from .auth import account_of
from .body import MAX_BATCH_BYTES, read_json
from .context import AppContext, ctx_key
from .openapi import openapi_spec
from .schemas import (FastBatchLoad, FastEmailLoad, ListEmailsQuerySchema, RescheduleSchema, ScheduleBatchSchema,
                      ScheduleEmailSchema)
from .serialize import email_json, event_json, scheduled_json

routes = web.RouteTableDef()
metrics_key = web.AppKey("metrics", CollectorRegistry)

_schedule_schema = ScheduleEmailSchema()
#: the schemas' own load, minus its per-call machinery: the same results and the same errors
_load_schedule = FastEmailLoad().load
_load_batch = FastBatchLoad(ScheduleBatchSchema()).load
_reschedule_schema = RescheduleSchema()
_list_schema = ListEmailsQuerySchema()


def _query(request: web.Request, schema: Schema) -> dict[str, Any]:
    """Query parameters through `schema`; a parameter given twice is an error, not a choice."""
    repeated = {key: ["give this parameter once"] for key in request.query if len(request.query.getall(key)) > 1}
    if repeated:
        raise ValidationError(repeated)
    return schema.load(dict(request.query))


def _email_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"no email with id {raw!r}")
    return int(raw)


def _idempotency_key(request: web.Request, payload: dict) -> str | None:
    header = request.headers.get("Idempotency-Key")
    body = payload.get("idempotencyKey")
    if header is not None:
        try:
            header = _schedule_schema.fields["idempotencyKey"].deserialize(header)
        except ValidationError as e:
            raise ValidationError({"Idempotency-Key": e.messages}) from None
        if body is not None and body != header:
            raise BadRequest("Idempotency-Key header and idempotencyKey field differ")
    return body if body is not None else header


# -- scheduling -------------------------------------------------------------------

@routes.post("/schedule-email")
@routes.post("/emails")
async def schedule_email(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    payload = _load_schedule(await read_json(request))
    account = account_of(request)
    if payload["inReplyTo"] is not None or payload["stopOnReply"] is not None:
        await ctx.run(ctx.intake.check_threads, account, [payload])
    row, created = await ctx.intake.accept(account, payload, _idempotency_key(request, payload))
    if created:
        metrics.ACCEPTED.inc()
        if row["status"] == EmailStatus.SUPPRESSED:
            metrics.SUPPRESSED.labels("accepted").inc()
    return web.json_response(scheduled_json(row), status=201 if created else 200)


@routes.post("/emails/batch")
async def schedule_batch(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    if "Idempotency-Key" in request.headers:
        raise BadRequest("a batch takes an idempotencyKey in each email, not the header")
    data = await read_json(request, max_bytes=MAX_BATCH_BYTES)
    account = account_of(request)

    def check_and_store() -> list[tuple[dict, bool]]:  # a thousand emails to check and store: off the event loop
        return ctx.intake.accept_batch(account, _load_batch(data)["emails"])

    stored = await ctx.run(check_and_store)
    created = sum(1 for _, was_created in stored if was_created)
    metrics.ACCEPTED.inc(created)
    metrics.SUPPRESSED.labels("accepted").inc(
        sum(1 for row, was_created in stored if was_created and row["status"] == EmailStatus.SUPPRESSED))
    return web.json_response({"jobIds": [row["id"] for row, _ in stored]}, status=201 if created else 200)


# -- looking up ----------------------------------------------------------------------

@routes.get("/emails")
async def get_emails(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    query = _query(request, _list_schema)
    rows, cursor = await ctx.run_db(reads.list_emails, account_of(request), status=query.get("status"),
                                    sender_id=query.get("senderId"), after=query.get("after"), limit=query["limit"],
                                    sequence=query.get("sequence"))
    return web.json_response({"items": [email_json(row) for row in rows], "next": cursor})


@routes.get("/emails/{id}")
async def get_email(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    email_id = _email_id(request)
    row = await ctx.run_db(reads.get_email, account_of(request), email_id)
    if row is None:
        raise NotFound(f"no email with id {email_id}")
    return web.json_response(email_json(row))


@routes.get("/emails/{id}/events")
async def get_events(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    email_id = _email_id(request)
    account = account_of(request)

    def load():
        if reads.get_email(account, email_id) is None:
            raise NotFound(f"no email with id {email_id}")
        return reads.list_events(email_id)

    events = await ctx.run_db(load)
    return web.json_response({"emailId": email_id, "events": [event_json(e) for e in events]})


# -- changing one's mind -------------------------------------------------------------

@routes.post("/emails/{id}/cancel")
async def cancel_email(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    row = await ctx.run(ctx.intake.cancel, account_of(request), _email_id(request))
    metrics.CANCELLED.inc()
    return web.json_response(email_json(row))


@routes.patch("/emails/{id}")
async def reschedule_email(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    email_id = _email_id(request)
    payload = _reschedule_schema.load(await read_json(request))
    row = await ctx.run(ctx.intake.reschedule, account_of(request), email_id, payload["scheduledAt"])
    metrics.RESCHEDULED.inc()
    return web.json_response(email_json(row))


# -- operations ----------------------------------------------------------------------

@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    checks = await ctx.check_backends()
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ok" if ready else "unavailable", "checks": checks},
                             status=200 if ready else 503)


@routes.get("/metrics")
async def get_metrics(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    body, content_type = await ctx.run(metrics.render, request.app[metrics_key], request.headers.get("Accept"))
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


@routes.get("/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec())
