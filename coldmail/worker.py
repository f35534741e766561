"""What `dramatiq coldmail.worker --processes N --threads M` imports: the broker and the send actor.

The CLI emits process_boot in each worker process; DeliveryMiddleware then
opens the database pool and the Deliverer there.
"""

import signal
import threading
import time

from .logs import configure_logging
from .queue.setup import build_queue
from .settings import Settings

#: SIGTERMs this close to the first one are the same stop request, delivered twice
REPEAT_WINDOW_S = 2.0


def pass_on_first_sigterm_only() -> None:
    """A dramatiq worker process exits at once, mid-send, on its second SIGTERM. A SIGTERM sent to the
    whole process group (systemd, `kill -TERM -<pgid>`, supervisord's stopasgroup) arrives twice: from
    the sender, and forwarded by the dramatiq master. Only the first is passed on, so in-flight sends
    finish; one sent later still forces the exit."""
    handler = signal.getsignal(signal.SIGTERM)
    if not callable(handler) or threading.current_thread() is not threading.main_thread():
        return  # not in a dramatiq worker process (which installs its handler before importing us)
    first_at: float | None = None

    def on_sigterm(signum, frame):
        nonlocal first_at
        now = time.monotonic()
        if first_at is not None and now - first_at < REPEAT_WINDOW_S:
            return
        if first_at is None:
            first_at = now
        handler(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


pass_on_first_sigterm_only()
settings = Settings.from_env()
configure_logging(settings)
queue = build_queue(settings)
broker = queue.broker
send_email = queue.actor
