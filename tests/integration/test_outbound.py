"""Connections made for API users: the outbound guard at save and at connect time, TLS before any password,
and one total deadline per send, against real relays on loopback (aiosmtpd sinks, a tarpit).

The base env sets ALLOW_PRIVATE_NETWORKS=true (most tests relay through the loopback sink); the tests of
the guard here run without it.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
from cryptography.fernet import Fernet

from coldmail.errors import TransientSendError
from coldmail.mail.message import build_message
from coldmail.mail.transports import Relay, SmtpTransport
from tests.support.clock import iso, iso_in
from tests.support.payloads import email
from tests.support.sink import SmtpSink
from tests.support.tarpit import DripRelay
from tests.support.tls import make_ca
from tests.support.waiting import async_wait_for

PRIVATE_HOSTS = ["127.0.0.1", "[::1]", "2130706433", "localhost", "10.1.2.3", "169.254.169.254"]
PASSWORD = "hunter2-S3cr3t"


def message(subject: str = "hello"):
    return build_message(email_id=1, created_at=datetime.now(timezone.utc), from_address="a@example.com",
                         recipient="b@example.com", subject=subject, body="hi")


@pytest.fixture
def resolver(monkeypatch):
    """Names of the test (`*.test`) resolve to what the test says; every other name as usual. Records the
    names looked up."""
    real = socket.getaddrinfo
    names: dict[str, str] = {}
    asked: list[str] = []

    def fake(host, *args, **kwargs):
        asked.append(host)
        return real(names.get(host, host), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    fake.names, fake.asked = names, asked
    return fake


@pytest.fixture
def auth_sink():
    """A plaintext relay that would take a password: it offers AUTH without STARTTLS."""
    sink = SmtpSink(auth=True).start()
    yield sink
    sink.stop()


# -- the guard at save time ------------------------------------------------------------------------

@pytest.mark.parametrize("host", PRIVATE_HOSTS)
async def test_put_refuses_a_relay_on_a_non_public_address_in_any_spelling(make_service, auth, host):
    client = (await make_service(ALLOW_PRIVATE_NETWORKS="false", COLDMAIL_SECRET_KEY=Fernet.generate_key().decode())
              ).client
    # When a sender is given a relay on a loopback, private or link-local address (with a password in it)
    url = f"smtp://alice:{PASSWORD}@{host}:587"
    resp = await client.put("/senders/alice", json={"fromAddress": "a@example.com", "hourlyLimit": 5,
                                                    "smtpUrl": url}, headers=auth)
    # Then 400 naming smtpUrl, saying why, without the password; and nothing is stored
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "validation_error" and list(body["fields"]) == ["smtpUrl"]
    assert "ALLOW_PRIVATE_NETWORKS" in body["fields"]["smtpUrl"][0]
    assert PASSWORD not in await resp.text()
    assert (await client.get("/senders/alice", headers=auth)).status == 404


async def test_put_takes_a_public_relay_and_any_relay_with_allow_private_networks(make_service, auth, resolver):
    resolver.names["relay.test"] = "8.8.8.8"
    guarded = (await make_service(ALLOW_PRIVATE_NETWORKS="false")).client
    for url in ("smtp://8.8.8.8:587", "smtp://relay.test:2525?starttls=require", "smtps://[2606:4700:4700::1111]"):
        resp = await guarded.put("/senders/alice", json={"fromAddress": "a@example.com", "hourlyLimit": 5,
                                                         "smtpUrl": url}, headers=auth)
        assert resp.status in (200, 201), await resp.text()
    # And a name that does not resolve cannot be checked: refused too
    resp = await guarded.put("/senders/alice", json={"fromAddress": "a@example.com", "hourlyLimit": 5,
                                                     "smtpUrl": "smtp://no-such-host.invalid"}, headers=auth)
    assert resp.status == 400 and "smtpUrl" in (await resp.json())["fields"]


async def test_with_allow_private_networks_a_loopback_relay_is_taken(make_service, auth):
    client = (await make_service(ALLOW_PRIVATE_NETWORKS="true")).client
    resp = await client.put("/senders/alice", json={"fromAddress": "a@example.com", "hourlyLimit": 5,
                                                    "smtpUrl": "smtp://127.0.0.1:2525"}, headers=auth)
    assert resp.status == 201


# -- the guard at connect time ---------------------------------------------------------------------

@pytest.mark.parametrize("host", PRIVATE_HOSTS)
def test_the_transport_refuses_a_senders_relay_on_a_non_public_address(host, sink):
    smtp = SmtpTransport(timeout_s=2, idle_s=0)
    started = time.monotonic()
    with pytest.raises(TransientSendError, match="ALLOW_PRIVATE_NETWORKS"):
        smtp.send(message(), relay=Relay.from_url(f"smtp://{host}:{sink.port}"), email_id=1)
    assert time.monotonic() - started < 1  # refused before any connection (10.1.2.3 would hang)
    assert sink.handler.connections == 0


def test_a_name_that_resolves_to_loopback_at_connect_time_is_refused_and_smtp_url_is_trusted(sink, resolver):
    # Given a relay name that now resolves to 127.0.0.1, where a relay listens
    resolver.names["relay.test"] = "127.0.0.1"
    smtp = SmtpTransport(timeout_s=2, idle_s=0)
    # Then a sender's relay by that name is refused, and nothing connects to the relay
    with pytest.raises(TransientSendError, match="relay.test' resolves to a loopback address") as refused:
        smtp.send(message(), relay=Relay.from_url(f"smtp://relay.test:{sink.port}"), email_id=1)
    assert "127.0.0.1" not in str(refused.value)  # the kind of address, not what internal DNS answers
    assert sink.handler.connections == 0 and sink.arrivals == []
    # And the operator's SMTP_URL by the same name is trusted
    smtp.send(message("trusted"), relay=Relay.from_url(f"smtp://relay.test:{sink.port}", trusted=True), email_id=2)
    assert sink.subjects() == ["trusted"]


async def test_a_senders_relay_that_turns_private_after_the_put_fails_its_attempts_and_is_retried(
        make_service, auth, sink, resolver):
    service = await make_service(ALLOW_PRIVATE_NETWORKS="false", MAX_ATTEMPTS="8")
    client = service.client
    # Given a sender saved with a relay name that resolved to a public address
    resolver.names["relay.test"] = "8.8.8.8"
    resp = await client.put("/senders/rebind", json={"fromAddress": "a@example.com", "hourlyLimit": 50,
                                                     "smtpUrl": f"smtp://relay.test:{sink.port}"}, headers=auth)
    assert resp.status == 201
    # When the name now resolves to loopback (where the sink listens), and an email of it comes due
    resolver.names["relay.test"] = "127.0.0.1"
    resp = await client.post("/emails", json=email("rebound", senderId="rebind"), headers=auth)
    job_id = (await resp.json())["jobId"]

    async def failed_attempt():
        row = await (await client.get(f"/emails/{job_id}", headers=auth)).json()
        return row if row["lastError"] else None

    row = await async_wait_for(failed_attempt, timeout_s=10, what="a failed attempt")
    # Then the attempt failed, saying why, and is retried (DNS may change back); nothing reached the relay
    assert "loopback" in row["lastError"] and "127.0.0.1" not in row["lastError"]
    assert row["status"] != "FAILED"
    assert sink.handler.connections == 0
    # And another sender's email, through the operator's SMTP_URL on the same loopback, goes
    resp = await client.post("/emails", json=email("through SMTP_URL", senderId="plain"), headers=auth)
    await async_wait_for(lambda: sink.subjects() == ["through SMTP_URL"], timeout_s=10, what="the trusted relay")


# -- TLS for passwords -----------------------------------------------------------------------------

@pytest.mark.parametrize("trusted", [False, True], ids=["sender's relay", "SMTP_URL"])
def test_a_plaintext_relay_never_sees_the_password(auth_sink, trusted):
    smtp = SmtpTransport(timeout_s=2, idle_s=0, allow_private=True)
    # Given a relay that offers AUTH but not STARTTLS, and a URL with a password (STARTTLS by default: auto)
    for url in (f"smtp://alice:{PASSWORD}@127.0.0.1:{auth_sink.port}",
                f"smtp://alice:{PASSWORD}@127.0.0.1:{auth_sink.port}?starttls=auto",
                f"smtp://alice:{PASSWORD}@127.0.0.1:{auth_sink.port}?starttls=require"):
        # Then the attempt fails as transient, saying why, and the relay never got an AUTH nor the message
        with pytest.raises(TransientSendError, match="STARTTLS"):
            smtp.send(message(), relay=Relay.from_url(url, trusted=trusted), email_id=1)
    assert auth_sink.handler.connections == 3
    assert auth_sink.auths == [] and auth_sink.arrivals == []
    # When the URL says ?starttls=never, the password goes in clear, as asked
    relay = Relay.from_url(f"smtp://alice:{PASSWORD}@127.0.0.1:{auth_sink.port}?starttls=never", trusted=trusted)
    smtp.send(message("in clear"), relay=relay, email_id=2)
    assert auth_sink.auths == [("alice", False)] and auth_sink.subjects() == ["in clear"]


def test_starttls_without_a_password_is_used_when_offered_and_required_only_when_asked(auth_sink):
    smtp = SmtpTransport(timeout_s=2, idle_s=0, allow_private=True)
    smtp.send(message("no password"), relay=Relay.from_url(f"smtp://127.0.0.1:{auth_sink.port}"), email_id=1)
    with pytest.raises(TransientSendError, match="requires it"):
        smtp.send(message(), relay=Relay.from_url(f"smtp://127.0.0.1:{auth_sink.port}?starttls=require"), email_id=2)
    assert auth_sink.subjects() == ["no password"]


@pytest.fixture
def tls_sink(tmp_path):
    """A relay offering STARTTLS with a certificate for relay.test only, signed by a test CA, and AUTH."""
    ca = make_ca(tmp_path / "ca", names=["relay.test"])
    sink = SmtpSink(auth=True, tls_context=ca.server_context()).start()
    sink.ca = ca
    yield sink
    sink.stop()


def test_the_password_goes_after_starttls_to_a_certificate_verified_against_the_name(
        tls_sink, resolver, monkeypatch):
    resolver.names["relay.test"] = "127.0.0.1"
    relay = Relay.from_url(f"smtp://alice:{PASSWORD}@relay.test:{tls_sink.port}")
    # Given a transport that does not trust the relay's CA: the attempt fails before AUTH
    untrusting = SmtpTransport(timeout_s=2, idle_s=0, allow_private=True)
    with pytest.raises(TransientSendError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.send(message(), relay=relay, email_id=1)
    assert tls_sink.auths == [] and tls_sink.arrivals == []
    # Given one that trusts it (SSL_CERT_FILE, as an operator would set it)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_sink.ca.ca_file))
    smtp = SmtpTransport(timeout_s=2, idle_s=5, allow_private=True)
    # Then the password goes over TLS to the checked address, the certificate matched against relay.test
    resolver.asked.clear()
    smtp.send(message("over TLS"), relay=relay, email_id=2)
    assert tls_sink.auths == [("alice", True)] and tls_sink.subjects() == ["over TLS"]
    assert resolver.asked == ["relay.test", "127.0.0.1"]  # the name once, then the address checked
    # And the TLS connection is kept for the next send (watched by that send's deadline too)
    ehlos = tls_sink.handler.connections
    smtp.send(message("same connection"), relay=relay, email_id=3)
    assert tls_sink.handler.connections == ehlos and len(tls_sink.auths) == 1
    assert tls_sink.subjects() == ["over TLS", "same connection"]
    # And the same relay by its address fails: the certificate does not name 127.0.0.1
    by_address = Relay.from_url(f"smtp://alice:{PASSWORD}@127.0.0.1:{tls_sink.port}")
    with pytest.raises(TransientSendError, match="CERTIFICATE_VERIFY_FAILED"):
        smtp.send(message(), relay=by_address, email_id=3)
    assert len(tls_sink.auths) == 1


# -- the total deadline ----------------------------------------------------------------------------

@pytest.fixture
def tarpit():
    relay = DripRelay(drip_s=0.2).start()
    yield relay
    relay.stop()


def test_a_dripping_relay_is_cut_at_the_deadline(tarpit):
    # Given a relay that sends a byte every 0.2 s, never finishing its greeting (each read gets a byte
    # long before the 1 s timeout of a read)
    smtp = SmtpTransport(timeout_s=1, idle_s=0, allow_private=True)
    started = time.time()
    with ThreadPoolExecutor(1) as pool:  # a missing deadline fails the test, rather than hanging it
        send = pool.submit(smtp.send, message(), relay=Relay.from_url(tarpit.url), email_id=1)
        try:
            error = send.exception(timeout=5)
            took = time.time() - started
        finally:
            tarpit.stop()  # lets a send that was never cut end
    # Then the send fails as transient at the deadline, and the connection is closed then
    assert isinstance(error, TransientSendError) and "timed out" in str(error)
    assert 0.9 <= took <= 1.5
    closed_at = tarpit.visits[0].closed_at
    assert closed_at is not None and closed_at - started <= 1.5


async def test_a_dripping_relay_is_cut_at_the_deadline_while_another_senders_email_goes_on_time(
        make_service, auth, sink, tarpit):
    service = await make_service()  # SMTP_TIMEOUT_SECONDS=2, four worker threads
    client = service.client
    timeout_s = service.settings.smtp_timeout_s
    # Given a sender whose relay is a tarpit
    resp = await client.put("/senders/tarpit", json={"fromAddress": "t@example.com", "hourlyLimit": 50,
                                                     "smtpUrl": tarpit.url}, headers=auth)
    assert resp.status == 201
    # When its email comes due, and another sender's (on the healthy relay) a second later
    resp = await client.post("/emails", json=email("stuck", senderId="tarpit", scheduledAt=iso_in(0.3)),
                             headers=auth)
    stuck_id = (await resp.json())["jobId"]
    healthy_at = time.time() + 1.3
    resp = await client.post("/emails", json=email("on time", senderId="healthy",
                                                   scheduledAt=iso(datetime.fromtimestamp(healthy_at, timezone.utc))),
                             headers=auth)
    assert resp.status == 201

    async def cut():
        row = await (await client.get(f"/emails/{stuck_id}", headers=auth)).json()
        return row if row["lastError"] else None

    row = await async_wait_for(cut, timeout_s=timeout_s + 8, what="the tarpit's attempt to be cut")
    # Then the tarpit's send was cut at the deadline, as a timeout, to be retried
    assert "timed out" in row["lastError"] and row["status"] != "FAILED"
    visit = tarpit.visits[0]
    assert visit.closed_at is not None and visit.closed_at - visit.accepted_at <= timeout_s + 0.6
    # And the other email went on time, while the tarpit still held a worker thread
    [arrival] = sink.arrivals
    assert arrival.message["Subject"] == "on time"
    assert arrival.at - healthy_at < 0.5
    assert arrival.at < visit.closed_at
