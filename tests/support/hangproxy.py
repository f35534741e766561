"""A TCP proxy in front of Redis that can be told to hang: it keeps every connection open and
answers nothing, like a Redis stuck in a long command or behind a dead network path.

Only the test's own connections go through it, so the shared Redis server is never paused.
"""

from __future__ import annotations

import select
import socket
import threading


class HangProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._hung = threading.Event()
        self._reset = threading.Event()
        self._stopped = threading.Event()
        #: socket -> its peer (None for a connection accepted while hung); only the proxy thread touches it
        self._peers: dict[socket.socket, socket.socket | None] = {}
        self._thread = threading.Thread(target=self._run, name="hangproxy", daemon=True)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> HangProxy:
        self._thread.start()
        return self

    def hang(self) -> None:
        """From now on nothing is answered; new connections are accepted and left waiting."""
        self._hung.set()

    def resume(self) -> None:
        """Answer again. Connections opened or stalled while hung are closed (their clients reconnect)."""
        self._reset.set()
        self._hung.clear()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._server.close()

    def _run(self) -> None:
        while not self._stopped.is_set():
            if self._reset.is_set():
                self._reset.clear()
                self._close_all()
            hung = self._hung.is_set()
            watched = [self._server] if hung else [self._server, *(s for s in self._peers if self._peers[s])]
            readable, _, _ = select.select(watched, [], [], 0.05)
            for sock in readable:
                if sock is self._server:
                    self._accept(hung)
                else:
                    self._relay(sock)
        self._close_all()

    def _accept(self, hung: bool) -> None:
        client, _ = self._server.accept()
        if hung:
            self._peers[client] = None
            return
        upstream = socket.create_connection(self.upstream)
        self._peers[client] = upstream
        self._peers[upstream] = client

    def _relay(self, sock: socket.socket) -> None:
        peer = self._peers.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:
            pass
        for s in (sock, peer):
            self._peers.pop(s, None)
            s.close()

    def _close_all(self) -> None:
        for sock in list(self._peers):
            sock.close()
        self._peers.clear()
