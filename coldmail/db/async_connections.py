"""psycopg2 connections in asynchronous mode, driven by the event loop: the group commit's INSERT goes out
from the loop itself, without a thread hand-off (and its wait for the GIL) there and back."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg2
import psycopg2.extensions

from .connection import _connect_kwargs, _dbname

#: how long opening a connection may take (psycopg2 ignores connect_timeout in asynchronous mode)
CONNECT_TIMEOUT_S = 5.0


class AsyncConnections:
    """psycopg2 connections in asynchronous mode, driven by the event loop: no thread, no GIL hand-off.

    A connection that failed, or whose statement was abandoned half-way, is closed
    and a new one opened for the next statement (as the pool drops a broken one).
    """

    def __init__(self, database_url: str, *, prepare: tuple[str, ...] = ()) -> None:
        self.prepare = prepare
        self.kwargs = dict(_connect_kwargs(database_url), dbname=_dbname(database_url))
        self.kwargs.pop("connect_timeout", None)
        self._idle: list[Any] = []
        self._closed = False

    async def fetch(self, sql: str, params: Any) -> list[dict[str, Any]]:
        """Run one statement (its own transaction) and return its rows as dicts."""
        conn = self._idle.pop() if self._idle else await self._connect()
        reusable = False
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                await self._wait(conn)
                names = [c.name for c in cursor.description] if cursor.description else []
                rows = [dict(zip(names, row)) for row in cursor.fetchall()] if names else []
            reusable = True
            return rows
        except psycopg2.Error:
            reusable = not conn.closed and \
                conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
            raise
        finally:
            if reusable and not self._closed:
                self._idle.append(conn)
            else:
                conn.close()

    async def _connect(self):
        conn = psycopg2.connect(async_=True, **self.kwargs)
        try:
            await asyncio.wait_for(self._wait(conn), CONNECT_TIMEOUT_S)
            for statement in self.prepare:
                with conn.cursor() as cursor:
                    cursor.execute(statement)
                    await self._wait(conn)
        except BaseException as e:
            conn.close()
            if isinstance(e, asyncio.TimeoutError):
                raise psycopg2.OperationalError(f"no answer from PostgreSQL in {CONNECT_TIMEOUT_S:.0f}s") from None
            raise
        return conn

    @staticmethod
    async def _wait(conn) -> None:
        loop = asyncio.get_running_loop()
        while True:
            state = conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            ready = loop.create_future()
            fd = conn.fileno()
            if state == psycopg2.extensions.POLL_READ:
                watch, unwatch = loop.add_reader, loop.remove_reader
            elif state == psycopg2.extensions.POLL_WRITE:
                watch, unwatch = loop.add_writer, loop.remove_writer
            else:
                raise psycopg2.OperationalError(f"unexpected poll state {state}")
            watch(fd, _wake, ready)
            try:
                await ready
            finally:
                unwatch(fd)

    def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
