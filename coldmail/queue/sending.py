"""Whether this process has email sends in flight, so that webhook deliveries can give way to them.

Webhook posts and email sends share a worker process's threads, its GIL and the
machine's cores. Before it claims a batch, a webhook thread waits until no send
of its process is in flight, WEBHOOK_YIELD_SECONDS at most: deliveries go in
the gaps between sends, and while email goes out without a gap each webhook
slot still posts a batch every WEBHOOK_YIELD_SECONDS. A send counts from the
moment a thread takes its message (it may wait there for its time) until its
outcome is recorded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class SendsInFlight:
    def __init__(self) -> None:
        self._idle = threading.Condition(threading.Lock())
        self._count = 0

    @contextmanager
    def sending(self) -> Iterator[None]:
        with self._idle:
            self._count += 1
        try:
            yield
        finally:
            with self._idle:
                self._count -= 1
                if self._count == 0:
                    self._idle.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no send is in flight, `timeout_s` at most; False if one still was then."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._count > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


#: the process's sends: the send actor counts itself in, the webhook actor waits on it
SENDS = SendsInFlight()
