"""Every error leaves the API here, as {"error", "message", "fields"?} JSON."""

from __future__ import annotations

import logging

from aiohttp import web
from marshmallow import ValidationError

from ..db.connection import DATABASE_DOWN
from ..errors import (BadContentEncoding, BadRequest, Conflict, InvalidJson, NotFound, PayloadTooLarge,
                      ServiceUnavailable, UnsupportedContentEncoding, UnsupportedMediaType)
from .body import ACCEPTED_ENCODINGS, MAX_BODY_BYTES, too_large

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "unprocessable",
}


def error_response(status: int, error: str, message: str, *, fields: dict | None = None,
                   headers: dict | None = None) -> web.Response:
    body: dict = {"error": error, "message": message}
    if fields is not None:
        body["fields"] = fields
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ValidationError as e:
        return error_response(400, "validation_error", "the request has invalid fields", fields=e.messages)
    except NotFound as e:
        return error_response(404, "not_found", str(e))
    except Conflict as e:
        return error_response(409, "conflict", str(e))
    except InvalidJson as e:
        return error_response(400, "invalid_json", str(e))
    except BadContentEncoding as e:
        return error_response(400, "bad_content_encoding", str(e))
    except BadRequest as e:
        return error_response(400, "bad_request", str(e))
    except PayloadTooLarge as e:
        return error_response(413, "payload_too_large", str(e))
    except UnsupportedContentEncoding as e:
        return error_response(415, "unsupported_media_type", str(e), headers={"Accept-Encoding": ACCEPTED_ENCODINGS})
    except UnsupportedMediaType as e:
        return error_response(415, "unsupported_media_type", str(e))
    except ServiceUnavailable as e:
        log.error("%s", e)
        return error_response(503, "unavailable", "a backing service is unavailable; try again shortly")
    except DATABASE_DOWN as e:
        log.error("PostgreSQL unavailable on %s %s: %s", request.method, request.path, str(e).strip())
        return error_response(503, "unavailable", "the database is unavailable; try again shortly")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        error = _HTTP_CODES.get(e.status, "http_error")
        message = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        if e.status == 413:  # aiohttp's own check of client_max_size
            message = str(too_large(MAX_BODY_BYTES))
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        return error_response(e.status, error, message, headers=headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed to answer; the error is logged")
