"""The aiohttp middleware that counts requests by route and status, and times them (coldmail.metrics)."""

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


#: (method, route, status) -> the two series' children: labels() costs a lock and a dict look-up each, twice a
#: request; the set is bounded (METHODS x routes x status codes)
_series: dict[tuple[str, str, int], tuple] = {}


def _children(method: str, route: str, status: int) -> tuple:
    key = (method, route, status)
    found = _series.get(key)
    if found is None:
        found = _series[key] = (metrics.HTTP_REQUESTS.labels(method, route, str(status)),
                                metrics.HTTP_SECONDS.labels(method, route))
    return found


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
        requests, seconds = _children(request.method if request.method in METHODS else "OTHER", _route(request),
                                      status)
        requests.inc()
        seconds.observe(time.perf_counter() - started)
