"""A total deadline for one SMTP send (or one mailbox poll, coldmail.mailbox), enforced by shutting its socket down.

smtplib's timeout bounds each read, so a relay that drips a byte now and then
holds a thread for as long as it likes. Shutting the socket down is the one way
to wake a thread blocked in a read or a TLS handshake: one watchdog thread per
transport does it for every send past its deadline. It shuts down a duplicate
of the socket's descriptor that only it closes, so it never touches a
descriptor the sending thread has closed and the system has handed to another
connection meanwhile.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time


class Watch:
    """One send's deadline: the connection it is attached to is shut down when the deadline passes."""

    def __init__(self, lock: threading.Condition, deadline: float) -> None:
        self._lock = lock
        self.deadline = deadline
        self.fired = False
        self.done = False
        self._sock: socket.socket | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def attach(self, sock: socket.socket) -> None:
        """Cut `sock`'s connection at the deadline (a plain or TLS socket; the latest one attached counts)."""
        dup = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        with self._lock:
            old, self._sock = self._sock, dup
            if self.fired:
                _shut(dup)
        if old is not None:
            old.close()

    def cut(self) -> None:
        """Cut the connection now, before the deadline (its owner is stopping)."""
        with self._lock:
            self._fire()

    def end(self) -> bool:
        """The send is over; whether its deadline cut it."""
        with self._lock:
            self.done = True
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        return self.fired

    def _fire(self) -> None:
        """Called with the lock held."""
        self.fired = True
        if self._sock is not None:
            _shut(self._sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the peer
        pass


class Watchdog:
    """The thread that fires watches past their deadline; started with the first watch."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, timeout_s: float) -> Watch:
        """A watch whose deadline is `timeout_s` from now."""
        watch = Watch(self._lock, time.monotonic() + timeout_s)
        with self._lock:
            self._drop_ended()
            heapq.heappush(self._heap, (watch.deadline, next(self._order), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="smtp-deadline", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is watch:
                self._lock.notify()
        return watch

    def _drop_ended(self) -> None:
        while self._heap and self._heap[0][2].done:
            heapq.heappop(self._heap)

    def _run(self) -> None:
        with self._lock:
            while True:
                self._drop_ended()
                if not self._heap:
                    self._lock.wait()
                    continue
                wait_s = self._heap[0][0] - time.monotonic()
                if wait_s > 0:
                    self._lock.wait(wait_s)
                    continue
                heapq.heappop(self._heap)[2]._fire()
