"""Worker-side set-up in Dramatiq's hooks: database pool, the Deliverer, precise polling."""

from __future__ import annotations

import logging

import dramatiq

from ..db import database, open_database
from ..delivery import Deliverer
from ..settings import Settings
from .actors import install_deliverer

log = logging.getLogger(__name__)


class DeliveryMiddleware(dramatiq.Middleware):
    """Opens what a worker process needs at boot, and closes it at stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.deliverer: Deliverer | None = None

    def after_process_boot(self, broker) -> None:
        if database.obj is None:
            open_database(self.settings.database_url, max_connections=self.settings.db_pool_size)
        self.deliverer = Deliverer(self.settings, redis_client=broker.client)
        install_deliverer(self.deliverer)

    def before_worker_boot(self, broker, worker) -> None:
        # Delayed messages are released when the consumer polls; the default 1 s poll made them
        # up to a second late. Consumers are made after this hook, with this value.
        worker.worker_timeout = self.settings.worker_poll_ms

    def after_worker_thread_shutdown(self, broker, thread) -> None:
        if self.deliverer is not None:
            self.deliverer.close_thread()

    def before_process_stop(self, broker) -> None:
        install_deliverer(None)
        if database.obj is not None:
            database.close_all()
