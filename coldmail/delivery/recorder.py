"""Group commit for sends: every worker thread's sends are recorded in PostgreSQL together.

A thread hands each finished send to the process's Recorder and goes on to its
next one; the Recorder's thread writes whatever has come in since its last
statement in one (SENT, with each email's event), then moves the senders' cap
slots to the send's end. Under load one statement records the sends of many
threads; a lone send is recorded at once. A worker killed before the statement
commits sends those few emails again after their lease, with the same
Message-ID, as it would any send whose reply it had not recorded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import redis

from ..db import database
from ..db.connection import DATABASE_DOWN
from ..db.emails import sending
from ..logs import email_fields
from ..mail.message import Outgoing

log = logging.getLogger(__name__)

#: sends recorded in one statement at most
MAX_BATCH = 500
#: pauses before trying a statement again after PostgreSQL dropped the connection: a blip must not leave
#: sent emails SENDING, to go a second time after their lease
RETRY_PAUSES_S = (0.1, 0.5, 2.0)


@dataclass
class Sent:
    """A send the relay accepted, to be recorded."""

    row: dict[str, Any]
    message: Outgoing
    reply: str
    #: the (key, member) cap slots that count again from the send's end, once it is recorded
    slots: list[tuple[str, str]]
    send_s: float
    late_s: float
    #: resolves to whether the row was still ours (SENDING under this claim) when recorded
    recorded: Future = field(default_factory=Future)


class Recorder:
    def __init__(self, mark_caps_done: Callable[[list[tuple[str, str]]], None]) -> None:
        self._mark_caps_done = mark_caps_done
        self._queue: queue.SimpleQueue[Sent | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, sent: Sent) -> Future:
        """Record `sent` soon; the future says when (and raises what recording raised)."""
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="coldmail-recorder", daemon=True)
                    self._thread.start()
        self._queue.put(sent)
        return sent.recorded

    def close(self) -> None:
        """Record what is waiting, then stop the thread (the worker's threads have stopped)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                self._record(batch)
            except Exception as e:  # a bug: the thread must go on, or every worker thread waits for it
                log.exception("recording %d send(s) failed: those not recorded stay SENDING, and go again after "
                              "their lease", len(batch))
                for s in batch:
                    if not s.recorded.done():
                        s.recorded.set_exception(e)

    @staticmethod
    def _mark_sent(batch: list[Sent]) -> set[int]:
        sent = [(s.row["id"], s.row["claims"], s.message.message_id, s.reply) for s in batch]
        for pause_s in RETRY_PAUSES_S:
            try:
                with database.connection_context():
                    return sending.mark_sent(sent)
            except DATABASE_DOWN as e:
                log.warning("recording %d send(s) failed (%s); trying again in %.1fs", len(batch),
                            str(e).strip(), pause_s)
                database.close_idle()  # PostgreSQL dropped them all, most likely: retry on a new one
                time.sleep(pause_s)
        with database.connection_context():
            return sending.mark_sent(sent)

    def _record(self, batch: list[Sent]) -> None:
        """In PostgreSQL first, then the caps: a Redis error must not leave a sent email SENDING, to be sent
        a second time when its lease runs out."""
        try:
            recorded = self._mark_sent(batch)
        except Exception as e:
            log.error("%d send(s) not recorded (%s): they stay SENDING, and go again after their lease",
                      len(batch), e)
            for s in batch:
                s.recorded.set_exception(e)
            return
        try:
            self._mark_caps_done([slot for s in batch for slot in s.slots])
        except redis.RedisError as e:
            log.warning("send caps not updated (Redis: %s)", e)
        except Exception:  # the sends are recorded: that is what the futures say
            log.exception("send caps not updated")
        for s in batch:
            row = s.row
            if row["id"] not in recorded:
                log.warning("email %r: sent, but its claim had been taken back", row["id"],
                            extra=email_fields(row))
            log.info("email %r: sent to relay in %.0fms, %.3fs after its time (sender %r): %s", row["id"],
                     s.send_s * 1000, s.late_s, row["sender_id"], s.reply, extra=email_fields(row))
            s.recorded.set_result(row["id"] in recorded)
