"""The mailbox poller: every IMAP_POLL_SECONDS, each sender's mailbox is read from the UID after the last one
handed over, and each new message goes to the inbound classifier (coldmail.inbound.receive).

- One poller at a time per mailbox, across any number of API processes: a
  mailbox is taken with a lease in PostgreSQL (coldmail.db.mailboxes.claim), and
  a poll cannot outlive it (read timeouts, and a deadline that cuts the
  connection, well inside the lease).
- One bad mailbox never delays the others: polls run on a few threads of their
  own, each bounded by that deadline; a failing mailbox waits out a backoff.
- At least once: the last UID is stored only after its message was handed
  over; a message handed over twice (a poll cut after the handler, before the
  store) is one the classifier has seen, and it changes nothing the second time.
- Read only: the folder is EXAMINEd (read-only) and messages fetched with
  BODY.PEEK[], so nothing is marked seen, moved or deleted.
- Where reading starts, for a new mailbox or when UIDVALIDITY changes (the
  server renumbered the folder): at the first message that arrived since the day
  before `since` (when the URL was set; later, when the last poll that read to
  the end began), found with SEARCH SINCE, or at UIDNEXT when there is none.
  Old mail is not re-read, and what may have come meanwhile is (a day early, as
  SINCE counts whole days in the server's time zone).
"""

from __future__ import annotations

import imaplib
import logging
import os
import socket
import ssl
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Callable

from imapclient import IMAPClient

from .. import metrics, net
from ..crypto import PasswordBox
from ..db import database, mailboxes as mailbox_rows
from ..db.mailboxes import Claimed
from ..errors import BadRequest, ConfigError, SecretUnreadable
from ..mail.deadline import Watchdog
from ..settings import Settings
from .client import LoginFailed, MailboxError, open_mailbox
from .target import Target

log = logging.getLogger(__name__)

#: hands one raw message over: handler(account, raw, sender_id=...); coldmail.inbound.receive by default
Handler = Callable[..., Any]

#: polls at once in one process (each holds a thread, a connection, and a database connection at times)
THREADS = 4
#: messages one poll hands over at most; the rest waits for the next poll
BATCH = 100
#: messages fetched per FETCH
FETCH_CHUNK = 10
#: each read from the server
TIMEOUT_S = 30.0
#: a whole poll, connection to logout
DEADLINE_S = 120.0
#: the longest wait before a failing mailbox is tried again
MAX_BACKOFF_S = 3600.0


class LeaseLost(Exception):
    """Another poller holds the mailbox now (ours ran out), or its sender changed it: stop writing."""


class HandlerFailed(Exception):
    """The classifier raised on a message (other than ValueError, which says the message is none it can take:
    that one is skipped): the poll stops there, and the message is read again next time."""


def default_handler(account: str, raw: bytes, *, sender_id: str | None = None) -> Any:
    """coldmail.inbound.receive, imported when the first message comes (it is another part's module)."""
    from ..inbound import receive

    return receive(account, raw, sender_id=sender_id)


class MailboxPoller:
    """What the scheduler's `poll_mailboxes` job runs (tick), and the polls it starts on threads of its own."""

    def __init__(self, settings: Settings, *, handler: Handler | None = None, threads: int = THREADS,
                 batch: int = BATCH, timeout_s: float = TIMEOUT_S, deadline_s: float = DEADLINE_S,
                 context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.handler = handler or default_handler
        self.threads = threads
        self.batch = batch
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        #: a poll ends by its deadline; the lease leaves it that and a margin for its last statements
        self.lease_s = deadline_s * 2 + 30
        #: names this poller's leases (a host, a process, an instance)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.context = context or ssl.create_default_context()
        self._box = PasswordBox(settings.secret_keys)
        self._watchdog = Watchdog()
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="coldmail-imap")
        self._lock = threading.Lock()
        self._busy = 0
        #: the deadlines of the polls under way, cut when the poller stops
        self._watches: set = set()
        self._stopping = threading.Event()

    def tick(self) -> int:
        """Start a poll of each due mailbox no poller holds, as far as free threads allow; how many started."""
        if self._stopping.is_set():
            return 0
        with self._lock:
            free = self.threads - self._busy
        if free <= 0:
            return 0
        with database.connection_context():
            claimed = mailbox_rows.claim(token=self.token, lease_s=self.lease_s, limit=free)
        for mailbox in claimed:
            with self._lock:
                self._busy += 1
            self._executor.submit(self._run, mailbox)
        return len(claimed)

    def stop(self) -> None:
        """No new poll; cut the connections of those under way, and wait while they record it (their
        mailboxes are due again at once, for whichever process polls next)."""
        self._stopping.set()
        with self._lock:
            for watch in self._watches:
                watch.cut()
        self._executor.shutdown(wait=True)

    def _run(self, mailbox: Claimed) -> None:
        try:
            self.poll(mailbox)
        except Exception:
            log.exception("mailbox of sender %r of account %r: poll failed unexpectedly", mailbox.sender_id,
                          mailbox.account)
        finally:
            with self._lock:
                self._busy -= 1

    def poll(self, mailbox: Claimed) -> int:
        """Read one claimed mailbox, hand its new messages over, record how it went; the messages handed."""
        who = f"mailbox of sender {mailbox.sender_id!r} of account {mailbox.account!r}"
        handed, password, watch = 0, None, None
        try:
            if mailbox.password_enc is None:
                raise MailboxError("no password is stored for the mailbox")
            password = self._box.open(mailbox.password_enc, what="IMAP password")
            target = Target.from_url(mailbox.imap_url)
            destination = net.resolve(target.host, target.port, allow_private=self.settings.allow_private_networks)
            watch = self._watchdog.watch(self.deadline_s)
            with self._lock:
                self._watches.add(watch)
            if self._stopping.is_set():
                watch.cut()
            try:
                client = open_mailbox(target, password, destination=destination, context=self.context,
                                      watch=watch, timeout_s=self.timeout_s)
                try:
                    handed, read_all = self._read(client, target, mailbox, who)
                finally:
                    _logout(client)
            finally:
                watch.end()
                with self._lock:
                    self._watches.discard(watch)
        except LeaseLost:
            log.warning("%s: another poller holds it now, or its URL changed; this poll stops", who)
            return handed
        except (MailboxError, SecretUnreadable, ConfigError, BadRequest, imaplib.IMAP4.error, OSError,
                HandlerFailed) as e:  # imapclient's errors are imaplib's; ssl.SSLError is an OSError
            if watch is not None and watch.fired and self._stopping.is_set():
                with database.connection_context():
                    mailbox_rows.release(mailbox, token=self.token)
                log.info("%s: poll cut off as the process stops; due again at once", who)
                return handed
            reason = _scrub(str(e) or type(e).__name__, password)
            if watch is not None and watch.fired:
                reason = f"the poll took longer than {self.deadline_s:g}s and was cut off"
            outcome = "login_failed" if isinstance(e, LoginFailed) else "failed"
            metrics.MAILBOX_POLLS.labels(outcome).inc()
            with database.connection_context():
                mailbox_rows.finish_failed(mailbox, token=self.token, error=reason[:500],
                                           poll_s=self.settings.imap_poll_s, max_backoff_s=MAX_BACKOFF_S)
            log.warning("%s: poll failed (%d in a row): %s; tried again after a backoff", who,
                        mailbox.failures + 1, reason)
            return handed
        metrics.MAILBOX_POLLS.labels("ok").inc()
        with database.connection_context():
            mailbox_rows.finish_ok(mailbox, token=self.token, poll_s=self.settings.imap_poll_s, read_all=read_all)
        if handed:
            log.info("%s: %d new message(s) handed to the classifier", who, handed)
        return handed

    def _read(self, client: IMAPClient, target: Target, mailbox: Claimed, who: str) -> tuple[int, bool]:
        """Hand over the folder's messages after the last UID, in UID order, BATCH at most; (how many, whether
        that was all)."""
        info = client.select_folder(target.folder, readonly=True)
        uidvalidity = int(info[b"UIDVALIDITY"])
        last_uid = mailbox.last_uid
        if mailbox.uidvalidity != uidvalidity or last_uid is None:
            last_uid = self._starting_uid(client, info, mailbox)
            if mailbox.uidvalidity is not None:
                log.warning("%s: UIDVALIDITY changed (%d → %d): reading again from UID %d", who,
                            mailbox.uidvalidity, uidvalidity, last_uid + 1)
            with database.connection_context():
                if not mailbox_rows.start_at(mailbox, token=self.token, uidvalidity=uidvalidity, last_uid=last_uid):
                    raise LeaseLost()
        # `n:*` names the last message even when its UID is below n: keep only what is after last_uid
        uids = sorted(uid for uid in client.search(["UID", f"{last_uid + 1}:*"]) if uid > last_uid)
        todo = uids[:self.batch]
        handed = 0
        for start in range(0, len(todo), FETCH_CHUNK):
            chunk = todo[start:start + FETCH_CHUNK]
            fetched = client.fetch(chunk, ["BODY.PEEK[]"])
            for uid in chunk:
                raw = fetched.get(uid, {}).get(b"BODY[]")
                if raw is not None:  # None: expunged since the search; nothing to hand over
                    try:
                        self.handler(mailbox.account, raw, sender_id=mailbox.sender_id)
                    except ValueError as e:  # coldmail.inbound.NotAMessage: never takeable; reading again won't help
                        log.warning("%s: message UID %d skipped, the classifier does not take it: %s", who, uid, e)
                    except Exception as e:
                        log.exception("%s: the classifier failed on UID %d", who, uid)
                        raise HandlerFailed(f"the classifier failed on message UID {uid}: "
                                            f"{type(e).__name__}") from None
                    else:
                        handed += 1
                        metrics.MAILBOX_MESSAGES.inc()
                with database.connection_context():
                    if not mailbox_rows.advance(mailbox, token=self.token, uidvalidity=uidvalidity, uid=uid):
                        raise LeaseLost()
            if self._stopping.is_set():
                return handed, False
        return handed, len(uids) <= self.batch

    @staticmethod
    def _starting_uid(client: IMAPClient, info: dict, mailbox: Claimed) -> int:
        """The UID to read after, for a new mailbox or a new UIDVALIDITY (see the module's docstring)."""
        day = (mailbox.since - timedelta(days=1)).date()
        since = client.search(["SINCE", day])
        if since:
            return min(since) - 1
        if b"UIDNEXT" in info:
            return int(info[b"UIDNEXT"]) - 1
        return max(client.search(["ALL"]), default=0)


def _logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - the poll's outcome is decided; a failed goodbye changes nothing
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001
            pass


def _scrub(text: str, password: str | None) -> str:
    """`text` without the password, should a server or a library ever repeat it."""
    if password:
        text = text.replace(password, "***")
    return text
