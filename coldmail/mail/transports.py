"""Where a message goes: the Transport protocol, an SMTP relay (connections kept per thread), the outbox folder.

A transport says what kind of failure it met, and coldmail.delivery.retry
decides what becomes of the email. SMTP replies are sorted here, and nowhere
else, by their class: TransientSendError (4xx, timeouts, refused or dropped
connections: it may work later) and PermanentSendError (5xx: it never will).

A relay an API user chose is resolved and checked by the outbound guard
(coldmail.net) at each connection, and connected to at the address checked;
the operator's SMTP_URL is trusted. A password goes only over TLS unless the
URL says `?starttls=never`, and one send, connection included, has a total
deadline (coldmail.mail.deadline).
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

from .. import net
from ..errors import BadRequest, ConfigError, PermanentSendError, TransientSendError
from .deadline import Watch, Watchdog
from .helo import address_literal
from .message import Outgoing

log = logging.getLogger(__name__)


STARTTLS_OPTIONS = ("auto", "require", "never")


@dataclass(frozen=True)
class Relay:
    """One SMTP relay and how to log in to it."""

    host: str
    port: int
    implicit_tls: bool = False
    #: `?starttls=`: auto (when offered; required with a user), require, or never (a password may go in clear)
    starttls: str = "auto"
    username: str | None = None
    password: str | None = None
    #: the operator's own SMTP_URL, connected to without the outbound guard; a sender's relay is not
    trusted: bool = False

    @property
    def require_starttls(self) -> bool:
        """Whether a plain connection must become TLS before going on: asked for, or a password to send."""
        return not self.implicit_tls and (
            self.starttls == "require" or (self.username is not None and self.starttls != "never"))

    @classmethod
    def from_url(cls, url: str, *, password: str | None = None, trusted: bool = False) -> Relay:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError("not an SMTP URL: scheme must be smtp:// or smtps:// with a host")
        query = parse_qs(parts.query)
        starttls = query.get("starttls", ["auto"])[-1].lower()
        if starttls not in STARTTLS_OPTIONS:
            raise ConfigError(f"SMTP URL option starttls must be one of {', '.join(STARTTLS_OPTIONS)}")
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=net.port_of(parts),
            implicit_tls=implicit,
            starttls=starttls,
            username=unquote(parts.username) if parts.username else None,
            password=password if password is not None else (unquote(parts.password) if parts.password else None),
            trusted=trusted,
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


def _classify(error: smtplib.SMTPResponseException | tuple[int, bytes], *, at_rcpt: bool = False) -> Exception:
    """The relay's reply as a send error by its class; `at_rcpt`: it answered RCPT TO (the retry rules tell
    a hard bounce by it)."""
    if isinstance(error, tuple):
        code, text = error
    else:
        code, text = error.smtp_code, error.smtp_error
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    message = f"{code} {text}".strip()
    if 500 <= code < 600:
        return PermanentSendError(message, code=code, at_rcpt=at_rcpt)
    return TransientSendError(message, code=code, at_rcpt=at_rcpt)


#: open connections a worker thread keeps, to as many relays (senders may each have their own)
MAX_RELAYS_PER_THREAD = 8


class SmtpTransport:
    """Sends through SMTP, keeping one open connection per relay and thread between sends."""

    def __init__(self, *, timeout_s: float, idle_s: float, allow_private: bool = False,
                 local_hostname: str | None = None) -> None:
        #: the total deadline of one send (SMTP_TIMEOUT_SECONDS), and the timeout of each read within it
        self.timeout_s = timeout_s
        self.idle_s = idle_s
        #: ALLOW_PRIVATE_NETWORKS: senders' relays may be on loopback, private and link-local addresses
        self.allow_private = allow_private
        #: the EHLO name (coldmail.mail.helo); None: each connection's own address, as a literal
        self.local_hostname = local_hostname
        # Once, not per connection: a TLS context loads the system's CA certificates (tens of ms of CPU).
        self.tls = ssl.create_default_context()
        self._watchdog = Watchdog()
        self._local = threading.local()

    def _pool(self) -> dict[Relay, tuple[smtplib.SMTP, float]]:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        return pool

    def _connect(self, relay: Relay, watch: Watch) -> smtplib.SMTP:
        """A new connection, greeted, in TLS when it must be, logged in; cut off by `watch`'s deadline."""
        try:
            destination = net.resolve(relay.host, relay.port, allow_private=self.allow_private or relay.trusted)
        except BadRequest as e:  # refused by the guard, or no such host: DNS may answer otherwise later
            raise TransientSendError(f"relay not connected to: {e}") from None
        # a name given (even empty) keeps smtplib from looking up the machine's own, once per connection
        name = self.local_hostname or ""
        if relay.implicit_tls:
            conn: smtplib.SMTP = _SMTP_SSL(local_hostname=name, timeout=self.timeout_s, context=self.tls)
        else:
            conn = _SMTP(local_hostname=name, timeout=self.timeout_s)
        conn.destination, conn.watch = destination, watch
        try:
            code, reply = conn.connect(relay.host, relay.port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, reply)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not name:
                conn.local_hostname = address_literal(conn.sock)
            conn.ehlo()
            if not relay.implicit_tls and relay.starttls != "never":
                if conn.has_extn("starttls"):
                    conn.starttls(context=self.tls)
                    conn.ehlo()
                elif relay.require_starttls:
                    raise TransientSendError(_no_starttls(relay))
            if relay.username:
                conn.login(relay.username, relay.password or "")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self, relay: Relay, watch: Watch) -> smtplib.SMTP:
        pool = self._pool()
        now = time.monotonic()
        for other in [r for r, (_, used) in pool.items() if r != relay and now - used > self.idle_s]:
            _drop(pool.pop(other)[0])  # idle too long: the relay may be gone, so no QUIT to wait on
        held = pool.pop(relay, None)
        if held is not None:
            conn, last_used = held
            watch.attach(conn.sock)
            idle = time.monotonic() - last_used
            if idle <= self.idle_s:
                if idle < 1.0:
                    return conn
                try:  # the relay may have dropped a connection idle this long
                    if conn.noop()[0] == 250:
                        return conn
                except (smtplib.SMTPException, OSError):
                    _drop(conn)
                    return self._connect(relay, watch)
            _quietly_close(conn)
        return self._connect(relay, watch)

    def send(self, message: Outgoing, *, relay: Relay, email_id: int) -> str:
        """Send `message`; return the relay's reply to DATA. The whole of it, connecting included, is cut
        off at SMTP_TIMEOUT_SECONDS.

        After any error the connection is dropped, not reused: its state is unknown.
        """
        watch = self._watchdog.watch(self.timeout_s)
        conn: smtplib.SMTP | None = None
        try:
            conn = self._connection(relay, watch)
            options: tuple[str, ...] = ()
            if message.smtputf8:
                if not conn.has_extn("smtputf8"):
                    raise PermanentSendError(f"{relay.host}:{relay.port} does not offer SMTPUTF8, which "
                                             "an internationalised address needs")
                options = ("SMTPUTF8", "BODY=8BITMIME")
            refused = conn.sendmail(message.sender, [message.recipient], message.data, mail_options=options)
            if refused:
                raise _classify(next(iter(refused.values())), at_rcpt=True)
            code, text = conn.last_reply
            if self.idle_s <= 0:
                _quietly_close(conn)
        except (smtplib.SMTPException, OSError, PermanentSendError, TransientSendError) as e:
            cut = watch.end()
            _drop(conn)
            raise (TransientSendError(_cut_off(relay, self.timeout_s)) if cut else _send_error(e)) from None
        except BaseException:
            watch.end()
            _drop(conn)
            raise
        if watch.end():  # accepted, but the connection was shut down right after
            _drop(conn)
        elif self.idle_s > 0:
            pool = self._pool()
            pool[relay] = (conn, time.monotonic())
            if len(pool) > MAX_RELAYS_PER_THREAD:  # senders with relays of their own: keep the recent ones
                _drop(pool.pop(min(pool, key=lambda r: pool[r][1]))[0])
        return _reply_text(code, text)

    def close(self) -> None:
        """Close this thread's connections, each QUIT within the deadline of a send."""
        pool = self._pool()
        if not pool:
            return
        watch = self._watchdog.watch(self.timeout_s)
        while pool:
            _, (conn, _) = pool.popitem()
            watch.attach(conn.sock)
            _quietly_close(conn)
        watch.end()


def _send_error(e: Exception) -> Exception:
    """What a failed send comes to: the relay's reply sorted by its class, any other failure transient."""
    if isinstance(e, (PermanentSendError, TransientSendError)):
        return e
    if isinstance(e, smtplib.SMTPRecipientsRefused):
        return _classify(next(iter(e.recipients.values())), at_rcpt=True)
    if isinstance(e, smtplib.SMTPResponseException):
        return _classify(e)
    if isinstance(e, smtplib.SMTPNotSupportedError):
        return PermanentSendError(f"relay refused a needed extension: {e}")
    return TransientSendError(f"{type(e).__name__}: {e or 'connection failed'}")


def _no_starttls(relay: Relay) -> str:
    where = f"{relay.host}:{relay.port} does not offer STARTTLS"
    if relay.starttls == "require":
        return f"{where}, and the URL requires it (?starttls=require)"
    return f"{where}: the password is not sent without TLS (?starttls=never in the URL would allow it)"


def _cut_off(relay: Relay, timeout_s: float) -> str:
    return (f"{relay.host}:{relay.port} timed out: the send did not finish within SMTP_TIMEOUT_SECONDS "
            f"({timeout_s:g}s), so its connection was cut off")


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


class _Guarded:
    """Connects to the address the outbound guard checked, never to the name again, and hands the socket
    to the send's watch before a byte is read; TLS still checks the certificate against the name."""

    destination: net.Destination
    watch: Watch

    def connect(self, host="localhost", port=0, source_address=None):
        # smtplib sets the name TLS checks the certificate against only when __init__ connects; we connect later
        self._host = host
        return super().connect(host, port, source_address)

    def _get_socket(self, host, port, timeout):
        remaining = self.watch.remaining()
        if remaining <= 0:
            raise socket.timeout("no time left to connect")
        sock = net.connect(self.destination, timeout=min(timeout, remaining))
        self.watch.attach(sock)
        if not isinstance(self, smtplib.SMTP_SSL):
            return sock
        try:
            return self.context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise


class _SMTP(_Guarded, _KeepsDataReply, smtplib.SMTP):
    pass


class _SMTP_SSL(_Guarded, _KeepsDataReply, smtplib.SMTP_SSL):
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
