"""A tarpit SMTP relay on a loopback port: it greets with a `220-` line it never finishes, one byte every
`drip_s`, so every read of the client gets a byte long before any per-read timeout.

It records when each connection came and when the client gave up on it.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class Visit:
    accepted_at: float
    #: when the client closed or shut down the connection; None while it still holds on
    closed_at: float | None = None


class DripRelay:
    def __init__(self, *, drip_s: float = 0.2) -> None:
        self.drip_s = drip_s
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.visits: list[Visit] = []
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> DripRelay:
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._stopped.set()
        for thread in self._threads:
            thread.join(5)
        self._server.close()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name="drip-relay", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        self._server.settimeout(0.05)
        while not self._stopped.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                continue
            visit = Visit(accepted_at=time.time())
            self.visits.append(visit)
            self._spawn(self._drip, conn, visit)

    def _drip(self, conn: socket.socket, visit: Visit) -> None:
        """Drip until the client closes (recorded in `visit.closed_at`) or the relay stops."""
        with conn:
            try:
                conn.sendall(b"220-")
                while True:
                    stopping = self._stopped.is_set()
                    readable, _, _ = select.select([conn], [], [], 0 if stopping else self.drip_s)
                    if readable and not conn.recv(4096):
                        break
                    if stopping:
                        return  # stopped with the client still connected: it never closed
                    if not readable:
                        conn.sendall(b"x")
            except OSError:
                pass
            visit.closed_at = time.time()
