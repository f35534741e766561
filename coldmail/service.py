"""The long-running API process, optionally with a Dramatiq worker inside it (`python run.py`)."""

from __future__ import annotations

import logging

import dramatiq
import uvloop
from aiohttp import web

from .api.app import create_app
from .queue.broker import check_redis
from .queue.setup import Queue, build_queue
from .settings import Settings, redact_url

log = logging.getLogger(__name__)


def embedded_worker_ctx(settings: Settings, queue: Queue):
    """A worker in the API process. Only the dramatiq CLI emits process_boot, so it is emitted here;
    without it the TimeLimit middleware and our DeliveryMiddleware would silently stay off."""

    async def ctx(app: web.Application):
        queue.broker.emit_after("process_boot")
        worker = dramatiq.Worker(queue.broker, worker_threads=settings.worker_threads,
                                 worker_timeout=settings.worker_poll_ms)
        worker.start()
        log.info("in-process worker started with %d threads", settings.worker_threads)
        yield
        log.info("stopping worker: in-flight sends get %.0fs to finish", settings.shutdown_s)
        worker.stop(timeout=int(settings.shutdown_s * 1000))
        queue.broker.close()

    return ctx


def serve(settings: Settings, *, embedded_worker: bool) -> None:
    queue = build_queue(settings, redis_timeout_s=1.0)
    check_redis(queue.broker.client, settings.redis_url)
    app = create_app(settings, queue)
    if embedded_worker:
        app.cleanup_ctx.append(embedded_worker_ctx(settings, queue))
    if not settings.api_keys:
        log.warning("COLDMAIL_API_KEYS is empty: only keys made with `python run.py create-api-key` are accepted")
    transport = redact_url(settings.smtp_url) if settings.smtp_url else f"outbox files in {settings.outbox_dir}"
    log.info("coldmail listening on http://%s:%d (database %s, redis %s, sending via %s)", settings.host,
             settings.port, redact_url(settings.database_url), redact_url(settings.redis_url), transport)
    # uvloop: the harness measured a trivial aiohttp endpoint 1.6x faster with it on this machine
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None,
                shutdown_timeout=5, handle_signals=True, loop=uvloop.new_event_loop())
