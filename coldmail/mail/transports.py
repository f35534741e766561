"""Where a message goes: the Transport protocol, an SMTP relay (connections kept per thread), the outbox folder.

A transport says what kind of failure it met, and coldmail.delivery.retry
decides what becomes of the email. SMTP replies are sorted here, and nowhere
else, by their class: TransientSendError (4xx, timeouts, refused or dropped
connections: it may work later) and PermanentSendError (5xx: it never will).
"""

from __future__ import annotations

import logging
import os
import smtplib
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigError, PermanentSendError, TransientSendError
from .message import Outgoing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Relay:
    """One SMTP relay and how to log in to it."""

    host: str
    port: int
    implicit_tls: bool = False
    require_starttls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str, *, password: str | None = None) -> Relay:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError("not an SMTP URL: scheme must be smtp:// or smtps:// with a host")
        query = parse_qs(parts.query)
        starttls = query.get("starttls", ["auto"])[-1].lower()
        if starttls not in ("auto", "require"):
            raise ConfigError("SMTP URL option starttls must be 'auto' or 'require'")
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 25),
            implicit_tls=implicit,
            require_starttls=starttls == "require",
            username=unquote(parts.username) if parts.username else None,
            password=password if password is not None else (unquote(parts.password) if parts.password else None),
        )

    def __repr__(self) -> str:
        return f"Relay({self.host}:{self.port}, user={self.username!r})"


class Transport(Protocol):
    """Hands a message to whatever carries it; shared by a worker's threads."""

    def send(self, message: Outgoing, *, relay: Relay | None, email_id: int) -> str:
        """Send `message` through `relay` (None for transports that need none); return the reply to log.
        Raises TransientSendError or PermanentSendError."""
        ...

    def close(self) -> None:
        """Close the calling thread's connections."""
        ...


def _classify(error: smtplib.SMTPResponseException | tuple[int, bytes]) -> Exception:
    if isinstance(error, tuple):
        code, text = error
    else:
        code, text = error.smtp_code, error.smtp_error
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    message = f"{code} {text}".strip()
    if 500 <= code < 600:
        return PermanentSendError(message, code=code)
    return TransientSendError(message, code=code)


#: open connections a worker thread keeps, to as many relays (senders may each have their own)
MAX_RELAYS_PER_THREAD = 8


class SmtpTransport:
    """Sends through SMTP, keeping one open connection per relay and thread between sends."""

    def __init__(self, *, timeout_s: float, idle_s: float, local_hostname: str | None = None) -> None:
        self.timeout_s = timeout_s
        self.idle_s = idle_s
        # Both once, not per connection: smtplib would look the name up for each, and a TLS context
        # loads the system's CA certificates (tens of ms of CPU).
        self.local_hostname = local_hostname or socket.getfqdn()
        self.tls = ssl.create_default_context()
        self._local = threading.local()

    def _pool(self) -> dict[Relay, tuple[smtplib.SMTP, float]]:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        return pool

    def _connect(self, relay: Relay) -> smtplib.SMTP:
        context = self.tls
        if relay.implicit_tls:
            conn = _SMTP_SSL(relay.host, relay.port, timeout=self.timeout_s,
                             local_hostname=self.local_hostname, context=context)
        else:
            conn = _SMTP(relay.host, relay.port, timeout=self.timeout_s, local_hostname=self.local_hostname)
        try:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.ehlo()
            if not relay.implicit_tls:
                if conn.has_extn("starttls"):
                    conn.starttls(context=context)
                    conn.ehlo()
                elif relay.require_starttls:
                    raise PermanentSendError(f"{relay.host}:{relay.port} does not offer STARTTLS, and the URL requires it")
            if relay.username:
                conn.login(relay.username, relay.password or "")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self, relay: Relay) -> smtplib.SMTP:
        pool = self._pool()
        now = time.monotonic()
        for other in [r for r, (_, used) in pool.items() if r != relay and now - used > self.idle_s]:
            _drop(pool.pop(other)[0])  # idle too long: the relay may be gone, so no QUIT to wait on
        held = pool.pop(relay, None)
        if held is not None:
            conn, last_used = held
            idle = time.monotonic() - last_used
            if idle <= self.idle_s:
                if idle < 1.0:
                    return conn
                try:  # the relay may have dropped a connection idle this long
                    if conn.noop()[0] == 250:
                        return conn
                except (smtplib.SMTPException, OSError):
                    _drop(conn)
                    return self._connect(relay)
            _quietly_close(conn)
        return self._connect(relay)

    def send(self, message: Outgoing, *, relay: Relay, email_id: int) -> str:
        """Send `message`; return the relay's reply to DATA.

        After any error the connection is dropped, not reused: its state is unknown.
        """
        conn: smtplib.SMTP | None = None
        try:
            conn = self._connection(relay)
            options: tuple[str, ...] = ()
            if message.smtputf8:
                if not conn.has_extn("smtputf8"):
                    raise PermanentSendError(f"{relay.host}:{relay.port} does not offer SMTPUTF8, which "
                                             "an internationalised address needs")
                options = ("SMTPUTF8", "BODY=8BITMIME")
            refused = conn.sendmail(message.sender, [message.recipient], message.data, mail_options=options)
            if refused:
                raise _classify(next(iter(refused.values())))
            code, text = conn.last_reply
        except smtplib.SMTPRecipientsRefused as e:
            _drop(conn)
            raise _classify(next(iter(e.recipients.values()))) from None
        except smtplib.SMTPResponseException as e:
            _drop(conn)
            raise _classify(e) from None
        except (PermanentSendError, TransientSendError):
            _drop(conn)
            raise
        except smtplib.SMTPNotSupportedError as e:
            _drop(conn)
            raise PermanentSendError(f"relay refused a needed extension: {e}") from None
        except (smtplib.SMTPException, OSError) as e:
            _drop(conn)
            raise TransientSendError(f"{type(e).__name__}: {e or 'connection failed'}") from None
        if self.idle_s > 0:
            pool = self._pool()
            pool[relay] = (conn, time.monotonic())
            if len(pool) > MAX_RELAYS_PER_THREAD:  # senders with relays of their own: keep the recent ones
                _drop(pool.pop(min(pool, key=lambda r: pool[r][1]))[0])
        else:
            _quietly_close(conn)
        return _reply_text(code, text)

    def close(self) -> None:
        """Close this thread's connections."""
        pool = self._pool()
        while pool:
            _, (conn, _) = pool.popitem()
            _quietly_close(conn)


def _reply_text(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


def _drop(conn: smtplib.SMTP | None) -> None:
    """Close a connection in an unknown state without a QUIT, which could wait a whole timeout."""
    if conn is not None:
        conn.close()


def _quietly_close(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (smtplib.SMTPException, OSError):
        conn.close()


class _KeepsDataReply:
    """smtplib returns the reply to DATA from data() but sendmail drops it; keep it."""

    last_reply: tuple[int, bytes] = (250, b"")

    def data(self, msg):
        self.last_reply = super().data(msg)
        return self.last_reply


class _SMTP(_KeepsDataReply, smtplib.SMTP):
    pass


class _SMTP_SSL(_KeepsDataReply, smtplib.SMTP_SSL):
    pass


class OutboxTransport:
    """Writes each message to OUTBOX_DIR/<id>.eml (the first-run default, and for development).

    Messages are private: each file is readable by the worker's user alone (0600), in a folder only that
    user can list (0700). The reply and errors name the file, not where the folder is on the disk: they are
    shown to API users.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def _make_private(self) -> None:
        """Create the folder 0700, or take the others' rights away from one that exists (made by an older
        coldmail, or by hand)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_mode & 0o077:
            os.chmod(self.directory, 0o700)
            log.warning("outbox folder %s was open to other users: now 0700", self.directory)

    def send(self, message: Outgoing, *, relay: Relay | None, email_id: int) -> str:
        name = f"{email_id}.eml"
        try:
            self._make_private()
            # mkstemp makes the file 0600, whatever the umask
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{email_id}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(message.data)
            os.replace(tmp, self.directory / name)
        except OSError as e:
            log.error("cannot write %s to the outbox %s: %s", name, self.directory, e)
            raise TransientSendError(f"cannot write {name} to the outbox ({e.strerror or 'write failed'})") from None
        return f"written to the outbox as {name}"

    def close(self) -> None:
        pass
