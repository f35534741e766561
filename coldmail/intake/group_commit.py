"""Group commit: schedule requests that arrive together share one INSERT and one COMMIT.

A request still gets its answer only after its own row is committed. While a
transaction is under way, the requests that arrive queue up and go together in
the next one, so a lone request waits for nobody and a burst pays one commit
per group instead of one per email (PostgreSQL's commit rate is the ceiling
of one-row-per-transaction ingest).

The group's INSERT is one statement, sent from the event loop on a psycopg2
connection in asynchronous mode (autocommit: its rows come back committed): on
the executor, a thread hand-off there and back would wait for the GIL while the
loop is busy, most of a request's time under load. What the group created is
then given to `after_commit`, which must not block (the hand-over's own thread
talks to Redis).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from ..caps import Caps
from ..db.async_connections import AsyncConnections
from ..db.emails import intake as intake_rows
from ..db.emails.intake import NewEmail
from ..errors import Conflict
from ..logs import email_fields
from ..settings import Settings
from . import placing

log = logging.getLogger(__name__)

#: a stored email's row, and whether this request created it (False: its idempotency key's earlier row)
Stored = tuple[dict[str, Any], bool]


class GroupCommitter:
    def __init__(self, *, settings: Settings, after_commit: Callable[[list[dict[str, Any]]], None],
                 max_batch: int = 256, max_in_flight: int = 2, caps: Caps | None = None) -> None:
        self.settings = settings
        #: the senders' settings, by which an email outside its sender's window is due at its opening
        self.caps = caps
        #: given each group's created rows once they are committed; must not block the event loop
        self.after_commit = after_commit
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._waiting: list[tuple[NewEmail, asyncio.Future]] = []
        self._in_flight = 0
        self.connections = AsyncConnections(settings.database_url, prepare=(intake_rows.PREPARE_INSERT_BATCH,))

    async def schedule(self, new: NewEmail) -> Stored:
        """Store `new`; return (row, created) once it is committed. Conflict for a reused key."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((new, future))
        if self._in_flight < self.max_in_flight:
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _next_group(self) -> list[tuple[NewEmail, asyncio.Future]]:
        """Up to max_batch waiting requests, an account's idempotency key at most once (a repeat goes next
        time, and then finds the first one's row)."""
        group, rest, keys = [], [], set()
        for item in self._waiting:
            key = None if item[0].idempotency_key is None else (item[0].account, item[0].idempotency_key)
            if len(group) >= self.max_batch or (key is not None and key in keys):
                rest.append(item)
                continue
            if key is not None:
                keys.add(key)
            group.append(item)
        self._waiting = rest
        return group

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group = self._next_group()
                try:
                    results = await self._store([new for new, _ in group])
                except Exception as e:  # the group's transaction failed: every request in it gets the error
                    results = [e] * len(group)
                for (_, future), result in zip(group, results):
                    if future.done():  # the client went away; its row stays stored
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._in_flight -= 1

    async def _store(self, news: list[NewEmail]) -> list[Stored | Exception]:
        not_before = None if self.caps is None else await placing.placed_async(self.caps, self.connections.fetch,
                                                                                news)
        stored = await intake_rows.insert_batch_async(self.connections.fetch, news,
                                                      horizon_s=self.settings.handover_horizon_s,
                                                      not_before=not_before)
        results: list[Stored | Exception] = []
        created_rows = []
        for new, (row, created) in zip(news, stored):
            if not created and row["payload_hash"] != new.payload_hash:
                results.append(Conflict(f"idempotency key {new.idempotency_key!r} was used for a different email"))
                continue
            results.append((row, created))
            if created:
                created_rows.append(row)
                log.info("email %r: scheduled for %s (sender %r)", row["id"], row["scheduled_at"].isoformat(),
                         row["sender_id"], extra=email_fields(row))
        self.after_commit(created_rows)
        return results

    def close(self) -> None:
        self.connections.close()
