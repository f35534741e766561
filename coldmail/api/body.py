"""A request's JSON body: reading it, and how large it may be. Every route that takes a body reads it here."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import BadRequest, InvalidJson, PayloadTooLarge, UnsupportedMediaType

#: what any route takes
MAX_BODY_BYTES = 1024 * 1024
#: what POST /emails/batch takes: a batch of 1000 emails with HTML bodies does not fit in 1 MiB
MAX_BATCH_BYTES = 16 * 1024 * 1024


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than {max_bytes // 2**20} MiB")


async def read_json(request: web.Request, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The body as a JSON object; 415 if it is not sent as JSON, 413 past `max_bytes`, 400 if not an object."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the body as Content-Type: application/json")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large(max_bytes)
    raw = bytearray()
    while chunk := await request.content.readany():
        raw += chunk
        if len(raw) > max_bytes:
            raise too_large(max_bytes)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise InvalidJson(f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data
