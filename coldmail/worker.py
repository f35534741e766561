"""What `dramatiq coldmail.worker --processes N --threads M` imports: the broker and the send actor.

The CLI emits process_boot in each worker process; DeliveryMiddleware then
opens the database pool and the Deliverer there.
"""

from .logs import configure_logging
from .queue.setup import build_queue
from .settings import Settings

settings = Settings.from_env()
configure_logging(settings)
queue = build_queue(settings)
broker = queue.broker
send_email = queue.actor
