"""Thin handlers: parse and validate at the edge, call a service off the event loop, answer JSON."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .. import scheduling
from ..db import database
from ..db import emails as email_rows
from ..errors import NotFound
from .context import AppContext, ctx_key
from .errors import ApiError
from .schemas import ScheduleEmailSchema
from .serialize import email_json, event_json, scheduled_json

routes = web.RouteTableDef()
_schedule_schema = ScheduleEmailSchema()


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    raw = await request.read()  # raises 413 past client_max_size
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {e}") from None


def _email_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"no email with id {raw!r}")
    return int(raw)


def _idempotency_key(request: web.Request, payload: dict) -> str | None:
    header = request.headers.get("Idempotency-Key")
    body = payload.get("idempotencyKey")
    if header is not None:
        header = _schedule_schema.fields["idempotencyKey"].deserialize(header)
        if body is not None and body != header:
            raise ApiError(400, "bad_request", "Idempotency-Key header and idempotencyKey field differ")
    return body if body is not None else header


@routes.post("/schedule-email")
@routes.post("/emails")
async def schedule_email(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    payload = _schedule_schema.load(data)
    new = scheduling.new_email(payload, _idempotency_key(request, payload))
    row, created = await ctx.run(scheduling.schedule, new, settings=ctx.settings, handover=ctx.queue.handover)
    return web.json_response(scheduled_json(row), status=201 if created else 200)


@routes.get("/emails/{id}")
async def get_email(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    email_id = _email_id(request)
    row = await ctx.run_db(email_rows.get_email, email_id)
    if row is None:
        raise NotFound(f"no email with id {email_id}")
    return web.json_response(email_json(row))


@routes.get("/emails/{id}/events")
async def get_events(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    email_id = _email_id(request)

    def load():
        if email_rows.get_email(email_id) is None:
            raise NotFound(f"no email with id {email_id}")
        return email_rows.list_events(email_id)

    events = await ctx.run_db(load)
    return web.json_response({"emailId": email_id, "events": [event_json(e) for e in events]})


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
