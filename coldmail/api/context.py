"""What handlers share: settings, the executor for blocking calls, the queue."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiohttp import web

from ..db import database
from ..group_commit import GroupCommitter
from ..queue.setup import Queue
from ..settings import Settings


@dataclass
class AppContext:
    settings: Settings
    queue: Queue
    executor: ThreadPoolExecutor
    committer: GroupCommitter = field(init=False)

    def __post_init__(self) -> None:
        self.committer = GroupCommitter(settings=self.settings, handover=self.queue.handover)

    async def run(self, fn, /, *args, **kwargs):
        """Run a blocking call (database, Redis) on the executor, never on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def run_db(self, fn, /, *args, **kwargs):
        def with_connection():
            with database.connection_context():
                return fn(*args, **kwargs)

        return await self.run(with_connection)

    async def check_backends(self) -> dict[str, str]:
        def postgres() -> str:
            try:
                with database.connection_context():
                    database.execute_sql("SELECT 1")
                return "ok"
            except Exception as e:  # readiness reports any failure, it does not raise
                return f"error: {type(e).__name__}"

        def redis() -> str:
            try:
                self.queue.broker.client.ping()
                return "ok"
            except Exception as e:
                return f"error: {type(e).__name__}"

        pg, rd = await asyncio.gather(self.run(postgres), self.run(redis))
        return {"postgres": pg, "redis": rd}


ctx_key = web.AppKey("coldmail", AppContext)
