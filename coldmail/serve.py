"""Starting the long-running API process, with the send workers beside it (`python run.py`) or without (`api`).

The workers are `dramatiq coldmail.worker` child processes (WORKER_PROCESSES),
or with WORKER_PROCESSES=0 worker threads inside the API process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import dramatiq
import uvloop
from aiohttp import web

from .api.app import create_app
from .api.body import SERVER_OPTIONS
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


class WorkerChild:
    """`dramatiq coldmail.worker` as a child of `python run.py`, restarted if it dies.

    One Python process is held to one core by its GIL; with the sends in a child
    process the API and the workers each get one. The child stays in our process
    group, so a signal to the group (Ctrl-C, supervisord's killasgroup) reaches it too.
    """

    #: the folder that holds the coldmail package, for the CLI's --path
    PACKAGE_PARENT = Path(__file__).resolve().parents[1]

    def __init__(self, settings: Settings, *, log_format: str) -> None:
        self.settings = settings
        self.env = dict(os.environ, LOG_FORMAT=log_format)
        self.proc: subprocess.Popen | None = None
        self.stopping = False

    def argv(self) -> list[str]:
        return [str(Path(sys.executable).with_name("dramatiq")), "coldmail.worker",
                "--path", str(self.PACKAGE_PARENT),
                "--processes", str(self.settings.worker_processes), "--threads", str(self.settings.worker_threads),
                "--worker-shutdown-timeout", str(int(self.settings.shutdown_s * 1000))]

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv(), env=self.env)
        log.info("worker started: %d process(es) x %d threads (pid %d)", self.settings.worker_processes,
                 self.settings.worker_threads, self.proc.pid)

    async def watch(self) -> None:
        """Restart the child if it exits while we run (the dramatiq master exits when a child dies)."""
        while not self.stopping:
            await asyncio.sleep(1)
            if self.proc is not None and self.proc.poll() is not None and not self.stopping:
                log.error("worker exited with code %s; restarting it", self.proc.returncode)
                self.start()

    def stop(self) -> None:
        """SIGTERM the child and wait while in-flight sends finish; SIGKILL it past that."""
        self.stopping = True
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(self.settings.shutdown_s + 10)
        except subprocess.TimeoutExpired:
            log.error("worker did not stop in %.0fs; killing it", self.settings.shutdown_s + 10)
            self.proc.kill()
            self.proc.wait(5)


def child_worker_ctx(settings: Settings, *, log_format: str):
    async def ctx(app: web.Application):
        child = WorkerChild(settings, log_format=log_format)
        child.start()
        watcher = asyncio.get_running_loop().create_task(child.watch())
        yield
        child.stopping = True
        watcher.cancel()
        await asyncio.get_running_loop().run_in_executor(None, child.stop)

    return ctx


def serve(settings: Settings, *, with_workers: bool, log_format: str) -> None:
    """Run the API and its scheduler (and the workers, `with_workers`) until a signal stops them."""
    queue = build_queue(settings, redis_timeout_s=1.0)
    check_redis(queue.broker.client, settings.redis_url)
    app = create_app(settings, queue)
    if with_workers and settings.worker_processes:
        app.cleanup_ctx.append(child_worker_ctx(settings, log_format=log_format))
    elif with_workers:
        app.cleanup_ctx.append(embedded_worker_ctx(settings, queue))
    if not settings.api_keys:
        log.warning("COLDMAIL_API_KEYS is empty: only keys made with `python run.py create-api-key` are accepted")
    else:
        log.info("static API keys of account(s): %s", ", ".join(sorted({account for account, _ in settings.api_keys})))
    transport = redact_url(settings.smtp_url) if settings.smtp_url else f"outbox files in {settings.outbox_dir}"
    log.info("coldmail listening on http://%s:%d (database %s, redis %s, sending via %s)", settings.host,
             settings.port, redact_url(settings.database_url), redact_url(settings.redis_url), transport)
    # uvloop: aiohttp answers faster on it
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None,
                shutdown_timeout=5, handle_signals=True, loop=uvloop.new_event_loop(), **SERVER_OPTIONS)
