"""HTTP metrics: requests by route and status, and how long they took."""

from __future__ import annotations

import time

from aiohttp import web

from .. import metrics

#: any other method is counted as OTHER: a client must not be able to make new series at will
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _route(request: web.Request) -> str:
    """The route's template (/emails/{id}), never the raw path: one series per route, not per id."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler):
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        route = _route(request)
        method = request.method if request.method in METHODS else "OTHER"
        metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
        metrics.HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)
