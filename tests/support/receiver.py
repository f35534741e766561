"""A webhook receiver on loopback: a real aiohttp server that records what it is sent and answers as told."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each POST with the next of `answers` (then 200), after `delay_s`; `hang` makes it never answer.
    Counts the posts it was answering at once (`most_at_once`) and the connections they came on (`peers`).
    Runs its own event loop in a thread, so blocking tests and other processes can reach it too."""

    answers: list[int] = field(default_factory=list)
    hang: bool = False
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    peers: set[tuple] = field(default_factory=set)
    most_at_once: int = 0
    port: int = 0
    _at_once: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(dict(request.headers), await request.read()))
        self.peers.add(request.transport.get_extra_info("peername"))
        status = self.answers.pop(0) if self.answers else 200
        self._at_once += 1
        self.most_at_once = max(self.most_at_once, self._at_once)
        try:
            if self.hang:
                await asyncio.sleep(3600)
            await asyncio.sleep(self.delay_s)
        finally:
            self._at_once -= 1
        return web.Response(status=status)

    def start(self, port: int = 0) -> Receiver:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve():
            app = web.Application()
            app.router.add_post("/hook", self._handle)
            self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
            await site.start()
            self.port = self._runner.addresses[0][1]
            ready.set()

        def run():
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "the receiver did not start"
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        # a handler still hanging (its client was killed mid-post) ends here, not as a warning at exit
        asyncio.run_coroutine_threadsafe(self._cancel_the_rest(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @staticmethod
    async def _cancel_the_rest() -> None:
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def events(self, event_type: str | None = None) -> list[Received]:
        return [r for r in self.received if event_type is None or r.json["type"] == event_type]
