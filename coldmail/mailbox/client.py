"""Opening a sender's mailbox: imapclient, connected through the outbound guard, logged in only over TLS.

The host was resolved and checked by coldmail.net; the socket goes to the address
checked, never to the name again, while TLS still checks the certificate against
the name. Every read has `timeout_s`, and the whole poll a deadline (`watch`,
coldmail.mail.deadline) that cuts the connection: a server that answers a byte a
minute holds one poller thread for the deadline at most.
"""

from __future__ import annotations

import imaplib
import socket
import ssl

from imapclient import IMAPClient
from imapclient import tls as imap_tls

from .. import net
from ..mail.deadline import Watch
from .target import Target


class MailboxError(Exception):
    """The mailbox cannot be read as its URL says (no STARTTLS where a password needs it, …)."""


class LoginFailed(MailboxError):
    """The server refused the user and password."""


def _socket(destination: net.Destination, watch: Watch, timeout_s: float) -> socket.socket:
    remaining = watch.remaining()
    if remaining <= 0:
        raise socket.timeout("no time left to connect")
    sock = net.connect(destination, timeout=min(timeout_s, remaining))
    watch.attach(sock)
    return sock


class _Plain(imaplib.IMAP4):
    def __init__(self, destination: net.Destination, watch: Watch, timeout_s: float) -> None:
        self._destination, self._watch, self._timeout_s = destination, watch, timeout_s
        super().__init__(destination.host, destination.port, timeout=timeout_s)

    def _create_socket(self, timeout=None):
        return _socket(self._destination, self._watch, self._timeout_s)


class _Tls(imap_tls.IMAP4_TLS):
    def __init__(self, destination: net.Destination, watch: Watch, timeout_s: float,
                 context: ssl.SSLContext) -> None:
        self._destination, self._watch, self._timeout_s = destination, watch, timeout_s
        super().__init__(destination.host, destination.port, context, timeout_s)

    def _create_socket(self, timeout=None):
        sock = _socket(self._destination, self._watch, self._timeout_s)
        try:
            return imap_tls.wrap_socket(sock, self.ssl_context, self.host)
        except BaseException:
            sock.close()
            raise


class _GuardedClient(IMAPClient):
    """IMAPClient whose connection is made by _Plain or _Tls above."""

    def __init__(self, destination: net.Destination, *, implicit_tls: bool, context: ssl.SSLContext,
                 watch: Watch, timeout_s: float) -> None:
        self._destination, self._watch = destination, watch
        super().__init__(destination.host, port=destination.port, ssl=implicit_tls, ssl_context=context,
                         timeout=timeout_s)

    def _create_IMAP4(self):
        timeout_s = self._timeout.read
        if self.ssl:
            return _Tls(self._destination, self._watch, timeout_s, self.ssl_context)
        return _Plain(self._destination, self._watch, timeout_s)


def open_mailbox(target: Target, password: str, *, destination: net.Destination, context: ssl.SSLContext,
                 watch: Watch, timeout_s: float) -> IMAPClient:
    """A logged-in client, its folder not yet selected. LoginFailed for a refused login; MailboxError when the
    password would have to go in clear; OSError, ssl.SSLError or imapclient's errors for the rest."""
    client = _GuardedClient(destination, implicit_tls=target.implicit_tls, context=context, watch=watch,
                            timeout_s=timeout_s)
    try:
        if not target.implicit_tls and target.starttls != "never":
            if b"STARTTLS" in client.capabilities():
                client.starttls(context)
            elif target.require_starttls:
                raise MailboxError(f"{target.host}:{target.port} does not offer STARTTLS: the password is not "
                                   "sent without TLS (?starttls=never in the URL would allow it)")
        try:
            client.login(target.username, password)
        except imaplib.IMAP4.error as e:  # imapclient's LoginError is one
            raise LoginFailed(f"login refused: {_server_words(e)}") from None
        except UnicodeEncodeError:  # imaplib sends LOGIN's arguments as ASCII; its error would name a character
            raise LoginFailed("login not sent: IMAP LOGIN takes a user and password in ASCII only") from None
    except BaseException:
        try:
            client.shutdown()
        except OSError:  # a failed STARTTLS leaves the socket closed: the error to report is the one above
            pass
        raise
    return client


def _server_words(error: Exception) -> str:
    """What the server said, at most 200 characters (it never holds the password: imaplib does not echo it)."""
    return str(error).strip()[:200] or type(error).__name__
