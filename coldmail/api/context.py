"""What handlers share: settings, the executor for blocking calls, and the services they ask."""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import redis
from aiohttp import web

from ..db import database
from ..intake.service import Intake
from ..senders import Senders
from ..settings import Settings

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    settings: Settings
    executor: ThreadPoolExecutor
    intake: Intake
    senders: Senders
    #: the broker's Redis client, for readiness
    redis: redis.Redis

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
            except Exception as e:  # readiness reports any failure, it does not raise; the log says which
                log.warning("readiness: PostgreSQL: %s: %s", type(e).__name__, str(e).strip())
                return "error"

        def redis() -> str:
            try:
                self.redis.ping()
                return "ok"
            except Exception as e:
                log.warning("readiness: Redis: %s: %s", type(e).__name__, e)
                return "error"

        pg, rd = await asyncio.gather(self.run(postgres), self.run(redis))
        return {"postgres": pg, "redis": rd}


ctx_key = web.AppKey("coldmail", AppContext)
