"""Worker-side set-up in Dramatiq's hooks: database pool, the Deliverer, the heartbeat, precise polling."""

from __future__ import annotations

import logging

import dramatiq

from ..db import database, open_database
from ..delivery.deliverer import Deliverer
from ..delivery.liveness import Heartbeat, beat_interval_s, worker_id
from ..delivery.wiring import build_deliverer
from ..settings import Settings
from .actors import install_deliverer

log = logging.getLogger(__name__)

#: how often an idle worker thread wakes up to see whether the worker is stopping
IDLE_THREAD_WAKE_S = 0.25


class DeliveryMiddleware(dramatiq.Middleware):
    """Opens what a worker process needs at boot, and closes it at stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.deliverer: Deliverer | None = None
        self.heartbeat: Heartbeat | None = None
        self.opened_database = False

    def after_process_boot(self, broker) -> None:
        # In `python run.py` the API opened the pool and still uses it after the worker stops.
        if database.obj is None:
            open_database(self.settings.database_url, max_connections=self.settings.db_pool_size)
            self.opened_database = True
        # beating before the first claim: a lease's holder always has a beat the sweep can judge
        self.heartbeat = Heartbeat(broker.client, worker_id(), every_s=beat_interval_s(self.settings.dead_worker_s))
        self.heartbeat.start()
        self.deliverer = build_deliverer(self.settings, redis_client=broker.client, worker=self.heartbeat.worker)
        install_deliverer(self.deliverer)

    def before_worker_boot(self, broker, worker) -> None:
        # Delayed messages are released when the consumer polls; the default 1 s poll made them
        # up to a second late. Consumers are made after this hook, with this value.
        worker.worker_timeout = self.settings.worker_poll_ms

    def after_worker_boot(self, broker, worker) -> None:
        # The poll above is also how long an idle worker thread sleeps between looks at its work queue:
        # sixteen threads each waking fifty times a second cost a tenth of a core doing nothing. Messages
        # wake a thread at once whatever this is; it bounds only how soon an idle thread sees a stop.
        for thread in worker.workers:
            thread.timeout = IDLE_THREAD_WAKE_S

    def before_worker_shutdown(self, broker, worker) -> None:
        if self.deliverer is not None:
            self.deliverer.stopping.set()

    def before_worker_thread_shutdown(self, broker, thread) -> None:
        # (Dramatiq 2 emits only this one, in the stopping thread; it has no after_worker_thread_shutdown)
        if self.deliverer is not None:
            self.deliverer.close_thread()

    def after_worker_shutdown(self, broker, worker) -> None:
        # Dramatiq 2 has no process-stop hook; its CLI and `python run.py` both stop the worker last.
        if self.deliverer is not None:
            self.deliverer.close()
        if self.heartbeat is not None:
            self.heartbeat.stop()  # after the last record: its claims are over
        install_deliverer(None)
        if self.opened_database:
            database.close_all()
