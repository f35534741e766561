"""A real SMTP server (aiosmtpd) on a free loopback port that records what arrived.

It can be told to answer DATA with an error for the next N messages (451 twice,
then 250) or for every message (550), and be stopped and started again on the
same port (SMTP down for a few seconds), and refuse RCPT TO for given addresses. It can take AUTH (any password) and
offer STARTTLS with a certificate, and records each AUTH it saw and whether it
came over TLS.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.support.net import free_port


@dataclass
class Arrival:
    at: float
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    #: the MAIL FROM parameters (SMTPUTF8, BODY=8BITMIME)
    mail_options: list[str] = field(default_factory=list)
    #: the name the client gave in EHLO (or HELO) on the connection the message came on
    helo: str | None = None


@dataclass
class RecordingHandler:
    arrivals: list[Arrival] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    fail_all: str | None = None
    #: seconds between taking a message and answering 250 (a slow relay; a sender killed then never hears it)
    reply_delay_s: float = 0.0
    connections: int = 0
    #: (login, over TLS) of each AUTH the sink was sent
    auths: list[tuple[str, bool]] = field(default_factory=list)
    #: (login, password) of each AUTH, and the one password taken (None: any)
    logins: list[tuple[str, str]] = field(default_factory=list)
    password: str | None = None
    #: how RCPT TO is answered for these addresses (lower-case): a refusal, as a mailbox provider's
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        with self.lock:
            self.auths.append((auth_data.login.decode(), session.ssl is not None))
            self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=self.password is None or auth_data.password == self.password.encode())

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            reply = self.rcpt_replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.fail_all:
                return self.fail_all
            if self.failures:
                return self.failures.pop(0)
            raw = envelope.original_content or envelope.content
            self.arrivals.append(Arrival(
                at=time.time(), mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
                message=message_from_bytes(raw, policy=policy.default), raw=raw,
                mail_options=list(envelope.mail_options), helo=session.host_name))
            delay = self.reply_delay_s
        if delay:
            await asyncio.sleep(delay)
        return "250 OK queued"


class SmtpSink:
    def __init__(self, *, auth: bool = False, password: str | None = None,
                 tls_context: ssl.SSLContext | None = None, smtputf8: bool = False) -> None:
        """`auth`: offer AUTH, over plain connections too (a relay that would take a password in clear);
        `password`: require a login with this password before taking a message; `tls_context`: offer
        STARTTLS with its certificate; `smtputf8`: offer SMTPUTF8 in EHLO (aiosmtpd's default: not)."""
        self.port = free_port()
        self.handler = RecordingHandler(password=password)
        #: whether EHLO offers SMTPUTF8
        self.smtputf8 = smtputf8
        self._options: dict = {"enable_SMTPUTF8": smtputf8}
        if auth or password is not None:
            self._options.update(authenticator=self.handler.authenticate, auth_require_tls=False,
                                 auth_required=password is not None)
        if tls_context is not None:
            self._options.update(tls_context=tls_context)
        self._controller: Controller | None = None

    @property
    def logins(self) -> list[tuple[str, str]]:
        return self.handler.logins

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SmtpSink:
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **self._options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def arrivals(self) -> list[Arrival]:
        with self.handler.lock:
            return list(self.handler.arrivals)

    @property
    def auths(self) -> list[tuple[str, bool]]:
        with self.handler.lock:
            return list(self.handler.auths)

    def subjects(self) -> list[str]:
        return [a.message["Subject"] for a in self.arrivals]

    def fail_next(self, *replies: str) -> None:
        with self.handler.lock:
            self.handler.failures.extend(replies)

    def fail_always(self, reply: str | None) -> None:
        with self.handler.lock:
            self.handler.fail_all = reply

    def refuse_rcpt(self, address: str, reply: str) -> None:
        """Answer RCPT TO for `address` with `reply` ("550 5.1.1 no such user"), as a recipient's server
        does for a mailbox it does not have."""
        with self.handler.lock:
            self.handler.rcpt_replies[address.lower()] = reply

    def slow(self, reply_delay_s: float) -> None:
        """Answer each accepted message this much later (it is recorded as arrived at once)."""
        with self.handler.lock:
            self.handler.reply_delay_s = reply_delay_s

    def reset(self) -> None:
        with self.handler.lock:
            self.handler.arrivals.clear()
            self.handler.failures.clear()
            self.handler.fail_all = None
            self.handler.connections = 0
