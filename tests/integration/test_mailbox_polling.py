"""Mailbox polling against a real Dovecot (tests/support/dovecot.py): what is handed over, what is never
touched, UIDVALIDITY, failing and hanging mailboxes, two pollers, TLS before any password.

The poller is given a recording handler in place of coldmail.inbound.receive: these tests are about what
reaches the classifier, not what it makes of it.
"""

from __future__ import annotations

import email
import logging
import socket
import threading
import time
import uuid
from email.utils import formatdate

import pytest
from cryptography.fernet import Fernet

from coldmail.crypto import PasswordBox
from coldmail.db import database, mailboxes as mailbox_rows
from coldmail.mailbox.poller import MailboxPoller
from coldmail.stored_secrets import rotate
from tests.support.metrics import parse
from tests.support.tarpit import DripRelay
from tests.support.waiting import async_wait_for, wait_for

SECRET_KEY = Fernet.generate_key().decode()


def message(subject: str) -> bytes:
    return (f"From: Bob <bob@example.net>\r\nTo: alice@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@example.net>\r\nDate: {formatdate()}\r\n\r\nHello.\r\n").encode()


class Recorder:
    """A handler that records (account, sender id, subject) of each message it is handed."""

    def __init__(self, *, pause_s: float = 0.0) -> None:
        self.calls: list[tuple[str, str | None, str]] = []
        self.pause_s = pause_s
        self._lock = threading.Lock()

    def __call__(self, account: str, raw: bytes, *, sender_id: str | None = None) -> None:
        subject = email.message_from_bytes(raw)["Subject"]
        time.sleep(self.pause_s)
        with self._lock:
            self.calls.append((account, sender_id, subject))

    def subjects(self, sender_id: str | None = None) -> list[str]:
        with self._lock:
            return [s for _, sid, s in self.calls if sender_id is None or sid == sender_id]


@pytest.fixture
async def service(make_service):
    return await make_service(worker=False, scheduler=False, COLDMAIL_SECRET_KEY=SECRET_KEY,
                              IMAP_POLL_SECONDS="0.2")


@pytest.fixture
def client(service):
    return service.client


def imaps_url(dovecot, user: str, password: str | None) -> str:
    secret = f":{password}" if password else ""
    return f"imaps://{user}{secret}@127.0.0.1:{dovecot.tls_port}/INBOX"


async def put_mailbox(client, auth, sender: str, url: str | None, expect: int | None = None):
    resp = await client.put(f"/senders/{sender}", headers=auth, json={
        "fromAddress": f"{sender}@example.com", "hourlyLimit": 10, "imapUrl": url})
    body = await resp.json()
    assert resp.status in ((expect,) if expect else (200, 201)), body
    return body


def poll_now(poller: MailboxPoller) -> int:
    """Make every mailbox due, take them and poll them here, one after the other; the messages handed."""
    with database.connection_context():
        database.execute_sql("UPDATE mailboxes SET next_poll_at = now() WHERE lease_until IS NULL")
        claimed = mailbox_rows.claim(token=poller.token, lease_s=poller.lease_s, limit=100)
    return sum(poller.poll(mailbox) for mailbox in claimed)


@pytest.fixture
def make_poller(service, dovecot):
    made = []

    def make(handler, **kwargs) -> MailboxPoller:
        poller = MailboxPoller(service.settings, handler=handler, context=dovecot.client_context(), **kwargs)
        made.append(poller)
        return poller

    yield make
    for poller in made:
        poller.stop()


async def test_new_messages_are_handed_over_once_each_in_uid_order_and_keep_their_flags(
        client, auth, dovecot, imap_user, make_poller):
    # Given a sender whose mailbox holds three messages: one unread, one read and flagged, one unread
    user, password = imap_user
    await put_mailbox(client, auth, "alice", imaps_url(dovecot, user, password))
    dovecot.append(user, message("first"))
    dovecot.append(user, message("second"), flags=[b"\\Seen", b"\\Flagged"])
    dovecot.append(user, message("third"))
    before = dovecot.flags(user)
    recorder = Recorder()
    poller = make_poller(recorder)

    # When the mailbox is polled, then polled again, then a fourth message comes and it is polled once more
    first = poll_now(poller)
    again = poll_now(poller)
    dovecot.append(user, message("fourth"))
    last = poll_now(poller)

    # Then each message reached the handler once, in UID order, with its account and sender
    assert (first, again, last) == (3, 0, 1)
    assert recorder.calls == [("default", "alice", s) for s in ("first", "second", "third", "fourth")]
    # and the messages that were there keep their flags: nothing became \Seen, nothing moved or went
    after = dovecot.flags(user)
    assert {uid: after[uid] for uid in before} == before
    assert all(b"\\Seen" not in after[uid] for uid in after if uid != 2)
    # and GET says the mailbox is read
    body = await (await client.get("/senders/alice", headers=auth)).json()
    assert body["imapStatus"]["state"] == "ok" and body["imapStatus"]["failures"] == 0
    assert body["imapStatus"]["lastError"] is None and body["imapStatus"]["lastPolledAt"]


async def test_a_new_uidvalidity_reads_the_mailbox_again_from_the_last_complete_poll(
        client, auth, dovecot, imap_user, make_poller):
    # Given a mailbox of three messages, all handed over (its last UID is 3)
    user, password = imap_user
    await put_mailbox(client, auth, "alice", imaps_url(dovecot, user, password))
    for subject in ("one", "two", "three"):
        dovecot.append(user, message(subject))
    recorder = Recorder()
    poller = make_poller(recorder)
    assert poll_now(poller) == 3
    validity = dovecot.uidvalidity(user)

    # When the server renumbers the folder (a new UIDVALIDITY; one message left, at UID 1) and a new
    # message comes (UID 2: below the last UID seen before)
    time.sleep(1.1)  # Dovecot's UIDVALIDITY is a time in seconds
    dovecot.rebuild_inbox(user, keep=1)
    assert dovecot.uidvalidity(user) != validity
    dovecot.append(user, message("four"))
    handed = poll_now(poller)

    # Then the new message is handed over (the old one again too: the classifier takes it as seen before),
    # rather than skipped as below the old numbering's last UID
    assert handed == 2
    assert recorder.subjects() == ["one", "two", "three", "one", "four"]
    assert poll_now(poller) == 0


async def test_a_mailbox_set_after_its_mail_came_reads_from_a_day_before_it_was_set_and_no_older(
        client, auth, dovecot, imap_user, make_poller):
    # Given a mailbox holding a message from last week and one from today, before the sender names it
    user, password = imap_user
    with dovecot.client(user) as imap:
        imap.append("INBOX", message("last week"), msg_time=_days_ago(7))
    dovecot.append(user, message("today"))
    await put_mailbox(client, auth, "alice", imaps_url(dovecot, user, password))
    recorder = Recorder()

    # When it is first polled
    poll_now(make_poller(recorder))

    # Then today's message is read, last week's is not (a new mailbox is not read from its beginning)
    assert recorder.subjects() == ["today"]


def _days_ago(days: int):
    from datetime import datetime, timedelta, timezone

    return datetime.now(timezone.utc) - timedelta(days=days)


async def test_a_wrong_password_is_reported_and_the_other_mailboxes_are_still_read(
        client, auth, dovecot, imap_user, make_poller, caplog):
    caplog.set_level(logging.DEBUG)
    # Given two senders: one with a wrong password, one right
    user, password = imap_user
    other = f"other-{uuid.uuid4().hex[:8]}"
    dovecot.add_user(other, "right-pass-4321")
    wrong = "Wr0ng-pass-1234"
    await put_mailbox(client, auth, "bad", imaps_url(dovecot, other, wrong))
    await put_mailbox(client, auth, "good", imaps_url(dovecot, user, password))
    dovecot.append(user, message("for good"))
    recorder = Recorder()
    poller = make_poller(recorder)
    metrics_before = parse(await (await client.get("/metrics")).text())

    # When the poller's scheduler job runs
    poller.tick()

    # Then the good mailbox is read and the bad one reported: state, failures, the server's words, a backoff
    await async_wait_for(lambda: recorder.subjects("good") == ["for good"], timeout_s=10, what="good mailbox read")
    status = await async_wait_for(lambda: _status(client, auth, "bad", "failing"), timeout_s=10,
                                  what="the bad mailbox reported")
    assert status["failures"] == 1 and "login refused" in status["lastError"]
    assert "AUTHENTICATIONFAILED" in status["lastError"] or "Authentication failed" in status["lastError"]
    with database.connection_context():
        wait_s = database.execute_sql("SELECT extract(epoch FROM next_poll_at - last_polled_at) FROM mailboxes "
                                      "WHERE sender_id = 'bad'").fetchone()[0]
    assert 0.3 <= wait_s <= 0.5  # backed off: twice IMAP_POLL_SECONDS (0.2), give or take 20 %
    metrics_after = parse(await (await client.get("/metrics")).text())
    assert metrics_after("coldmail_mailbox_polls_total", outcome="login_failed") == \
        metrics_before("coldmail_mailbox_polls_total", outcome="login_failed") + 1
    assert metrics_after("coldmail_mailboxes", state="failing") == 1
    assert metrics_after("coldmail_mailboxes", state="ok") == 1
    # and one log line says so, without the password; GET never shows it either
    lines = [r.getMessage() for r in caplog.records if "poll failed" in r.getMessage()]
    assert len(lines) == 1 and "'bad'" in lines[0]
    body = await (await client.get("/senders/bad", headers=auth)).text()
    assert wrong not in caplog.text and wrong not in body and password not in caplog.text

    # When the password is put right (PUT with it), the mailbox is tried again at once and read
    dovecot.append(other, message("for bad"))
    await put_mailbox(client, auth, "bad", imaps_url(dovecot, other, "right-pass-4321"))
    poller.tick()
    await async_wait_for(lambda: recorder.subjects("bad") == ["for bad"], timeout_s=10, what="fixed mailbox read")
    await async_wait_for(lambda: _status(client, auth, "bad", "ok"), timeout_s=10, what="state ok")


async def test_a_password_imap_login_cannot_send_is_reported_as_failing_and_never_shown(
        client, auth, dovecot, imap_user, make_poller, caplog):
    caplog.set_level(logging.DEBUG)
    # Given a sender whose mailbox password is not ASCII (IMAP LOGIN sends ASCII only), and a good mailbox
    user, password = imap_user
    await put_mailbox(client, auth, "umlaut", imaps_url(dovecot, user, "p%C3%A4ssw%C3%B6rd-9876"))
    await put_mailbox(client, auth, "good", imaps_url(dovecot, user, password))
    dovecot.append(user, message("for good"))
    recorder = Recorder()
    poller = make_poller(recorder)

    # When both are polled
    poll_now(poller)

    # Then the good one is read, and the other is reported failing with a backoff, its lease let go
    assert recorder.subjects("good") == ["for good"]
    status = await _status(client, auth, "umlaut", "failing")
    assert status is not None and status["failures"] == 1 and "ASCII" in status["lastError"]
    with database.connection_context():
        assert database.execute_sql("SELECT leased_by FROM mailboxes WHERE sender_id = 'umlaut'").fetchone() == (None,)
    # and the password is in no log line nor in GET
    body = await (await client.get("/senders/umlaut", headers=auth)).text()
    assert "pässwörd" not in caplog.text and "pässwörd" not in body


async def _status(client, auth, sender: str, state: str):
    body = await (await client.get(f"/senders/{sender}", headers=auth)).json()
    return body["imapStatus"] if body["imapStatus"]["state"] == state else None


async def test_a_hanging_mailbox_does_not_delay_the_others_and_is_cut_at_its_deadline(
        client, auth, dovecot, imap_user, make_poller):
    # Given a sender whose IMAP server greets one byte at a time, for ever, and a sender whose server answers
    tarpit = DripRelay(drip_s=0.1).start()
    try:
        user, password = imap_user
        await put_mailbox(client, auth, "slow", f"imap://u:p@127.0.0.1:{tarpit.port}/INBOX?starttls=never")
        await put_mailbox(client, auth, "good", imaps_url(dovecot, user, password))
        dovecot.append(user, message("hello"))
        recorder = Recorder()
        poller = make_poller(recorder, deadline_s=2.0, timeout_s=1.0)

        # When the poller's job runs
        started = time.monotonic()
        poller.tick()

        # Then the good mailbox is read while the slow one still hangs
        await async_wait_for(lambda: recorder.subjects("good") == ["hello"], timeout_s=5, what="good mailbox")
        assert time.monotonic() - started < 1.9
        assert tarpit.visits and tarpit.visits[0].closed_at is None
        # and the slow one is cut at its deadline, and reported
        status = await async_wait_for(lambda: _status(client, auth, "slow", "failing"), timeout_s=10,
                                      what="slow mailbox reported")
        assert "cut off" in status["lastError"]
        assert tarpit.visits[0].closed_at is not None
        assert tarpit.visits[0].closed_at - tarpit.visits[0].accepted_at < 3.5
    finally:
        tarpit.stop()


async def test_two_pollers_never_read_one_mailbox_at_the_same_time(client, auth, dovecot, make_poller):
    # Given three mailboxes with messages coming in, and two pollers (as two API processes' schedulers) ticking
    users = []
    for n in range(3):
        user = f"race-{uuid.uuid4().hex[:8]}"
        dovecot.add_user(user, "pass-word-99")
        await put_mailbox(client, auth, f"s{n}", imaps_url(dovecot, user, "pass-word-99"))
        users.append(user)
    active: dict[str, set] = {}
    overlaps = []
    guard = threading.Lock()

    class Watching(Recorder):
        """Records which poller holds each sender's mailbox while it hands a message over."""

        def __init__(self, name):
            super().__init__(pause_s=0.02)
            self.name = name

        def __call__(self, account, raw, *, sender_id=None):
            with guard:
                holders = active.setdefault(sender_id, set())
                if holders:
                    overlaps.append((sender_id, set(holders), self.name))
                holders.add(self.name)
            try:
                super().__call__(account, raw, sender_id=sender_id)
            finally:
                with guard:
                    active[sender_id].discard(self.name)

    one, two = Watching("one"), Watching("two")
    pollers = [make_poller(one), make_poller(two)]
    stop = threading.Event()

    def tick_often(poller):
        while not stop.is_set():
            poller.tick()
            time.sleep(0.01)

    tickers = [threading.Thread(target=tick_often, args=(p,)) for p in pollers]
    for t in tickers:
        t.start()
    try:
        # When messages arrive in every mailbox for a while
        sent = []
        for round_ in range(6):
            for n, user in enumerate(users):
                subject = f"s{n}-{round_}"
                dovecot.append(user, message(subject))
                sent.append(subject)
            time.sleep(0.15)
        # Then each message is handed over exactly once, and never by both pollers at once
        wait_for(lambda: len(one.subjects()) + len(two.subjects()) >= len(sent), timeout_s=20, what="all read")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in tickers:
            t.join()
    assert sorted(one.subjects() + two.subjects()) == sorted(sent)
    assert overlaps == []
    assert one.subjects() and two.subjects()  # both took part


async def test_imap_with_starttls_and_with_starttls_never(client, auth, dovecot, imap_user, make_poller):
    # Given the same mailbox through imap:// (STARTTLS) and imap://…?starttls=never (plain text, as asked)
    user, password = imap_user
    dovecot.append(user, message("hi"))
    for sender, query in (("tls", ""), ("plain", "?starttls=never")):
        await put_mailbox(client, auth, sender, f"imap://{user}:{password}@127.0.0.1:{dovecot.port}/INBOX{query}")
    recorder = Recorder()

    # When both are polled
    poll_now(make_poller(recorder))

    # Then both read the message
    assert sorted(recorder.calls) == [("default", "plain", "hi"), ("default", "tls", "hi")]


class NoStartTls:
    """An IMAP server that offers no STARTTLS and records every line it is sent."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
            for line in conn.makefile("rb"):
                self.received.append(line)
                tag = line.split(b" ", 1)[0]
                if b"CAPABILITY" in line.upper():
                    conn.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
                else:
                    conn.sendall(tag + b" OK done\r\n")

    def close(self) -> None:
        self.server.close()


async def test_no_password_goes_to_a_server_that_offers_no_starttls(client, auth, make_poller):
    # Given a sender whose imap:// server offers no STARTTLS
    server = NoStartTls()
    try:
        await put_mailbox(client, auth, "alice", f"imap://alice:S3cret-pw@127.0.0.1:{server.port}/INBOX")

        # When it is polled
        poll_now(make_poller(Recorder()))

        # Then the poll fails and says why; the password never left
        status = await _status(client, auth, "alice", "failing")
        assert status is not None and "STARTTLS" in status["lastError"]
        assert not any(b"S3cret-pw" in line or b"LOGIN" in line.upper() for line in server.received)
    finally:
        server.close()


@pytest.mark.parametrize("url, why", [
    ("pop3://u:p@mail.example.com/INBOX", "scheme"),
    ("imaps://u:p@/INBOX", "no host"),
    ("imaps://mail.example.com/INBOX", "no user"),
    ("imaps://u:p@mail.example.com:99999/INBOX", "port"),
    ("imaps://u:p@mail.example.com/INBOX?starttls=sometimes", "option"),
    ("imaps://u:p@mail.example.com/IN%0D%0ABOX", "control characters in the folder"),
    ("imaps://u:p@mail.example.com/INBOX#x", "fragment"),
    ("imaps://u:p@mail.example.com/" + "x" * 300, "folder too long"),
    (42, "not a string"),
])
async def test_bad_imap_urls_are_400_naming_the_field(client, auth, url, why):
    resp = await client.put("/senders/alice", headers=auth, json={
        "fromAddress": "alice@example.com", "hourlyLimit": 10, "imapUrl": url})
    body = await resp.json()
    assert resp.status == 400, why
    assert "imapUrl" in body["fields"], why
    assert "p@" not in str(body["fields"]), "the message never repeats the URL (it holds a password)"


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost", "10.1.2.3", "169.254.169.254"])
async def test_a_private_host_is_refused_without_allow_private_networks(make_service, auth, host):
    service = await make_service(worker=False, scheduler=False, COLDMAIL_SECRET_KEY=SECRET_KEY,
                                 ALLOW_PRIVATE_NETWORKS="false")
    resp = await service.client.put("/senders/alice", headers=auth, json={
        "fromAddress": "alice@example.com", "hourlyLimit": 10, "imapUrl": f"imaps://u:pw-123@{host}/INBOX"})
    body = await resp.json()
    assert resp.status == 400 and "imapUrl" in body["fields"] and "pw-123" not in str(body)


async def test_the_poller_checks_the_host_again_when_it_connects(make_service, auth, dovecot, imap_user):
    # Given a mailbox saved while private addresses were allowed, read by a server that no longer allows them
    user, password = imap_user
    service = await make_service(worker=False, scheduler=False, COLDMAIL_SECRET_KEY=SECRET_KEY)
    await put_mailbox(service.client, auth, "alice", imaps_url(dovecot, user, password))
    strict = service.settings.replace(allow_private_networks=False)
    poller = MailboxPoller(strict, handler=Recorder(), context=dovecot.client_context())
    try:
        poll_now(poller)
    finally:
        poller.stop()
    status = await _status(service.client, auth, "alice", "failing")
    assert status is not None and "loopback" in status["lastError"]


async def test_the_password_is_sealed_never_shown_kept_on_a_round_trip_and_removed_with_null(
        client, auth, dovecot, imap_user, caplog):
    caplog.set_level(logging.DEBUG)
    user, password = imap_user
    # When a sender is PUT with a mailbox
    body = await put_mailbox(client, auth, "alice", imaps_url(dovecot, user, password))
    # Then GET shows the URL without the password, that one is stored, and polling has not begun
    shown = imaps_url(dovecot, user, None)
    assert body["imapUrl"] == shown and body["hasImapPassword"] is True
    assert body["imapStatus"]["state"] == "never" and body["imapStatus"]["lastPolledAt"] is None
    with database.connection_context():
        sealed = database.execute_sql("SELECT imap_password_enc FROM senders WHERE id = 'alice'").fetchone()[0]
    assert password not in sealed and Fernet(SECRET_KEY).decrypt(sealed.encode()).decode() == password
    # and the URL as GET shows it keeps the password (a GET-edit-PUT round trip)
    body = await put_mailbox(client, auth, "alice", shown)
    assert body["hasImapPassword"] is True
    # and another URL without a password is refused: there is none for it
    body = await put_mailbox(client, auth, "alice", shown.replace("/INBOX", "/Archive"), expect=400)
    assert "imapUrl" in body["fields"]
    # and null removes the mailbox and its state
    body = await put_mailbox(client, auth, "alice", None)
    assert body["imapUrl"] is None and body["hasImapPassword"] is False and body["imapStatus"] is None
    with database.connection_context():
        assert database.execute_sql("SELECT count(*) FROM mailboxes").fetchone()[0] == 0
    assert password not in caplog.text


async def test_a_mailbox_password_needs_a_secret_key(make_service, auth, dovecot, imap_user):
    service = await make_service(worker=False, scheduler=False)
    user, password = imap_user
    resp = await service.client.put("/senders/alice", headers=auth, json={
        "fromAddress": "alice@example.com", "hourlyLimit": 10, "imapUrl": imaps_url(dovecot, user, password)})
    body = await resp.json()
    assert resp.status == 400 and "COLDMAIL_SECRET_KEY" in body["message"] and password not in str(body)


async def test_rotate_secrets_reseals_mailbox_passwords(make_service, auth, dovecot, imap_user):
    # Given a mailbox password sealed with an old key
    user, password = imap_user
    service = await make_service(worker=False, scheduler=False, COLDMAIL_SECRET_KEY=SECRET_KEY)
    await put_mailbox(service.client, auth, "alice", imaps_url(dovecot, user, password))
    new_key = Fernet.generate_key().decode()

    # When the secrets are rotated to a new key (the old one after it)
    with database.connection_context():
        rotation = rotate(PasswordBox((new_key, SECRET_KEY)))
        sealed = database.execute_sql("SELECT imap_password_enc FROM senders WHERE id = 'alice'").fetchone()[0]

    # Then the password opens with the new key alone
    assert rotation.resealed == 1
    assert Fernet(new_key).decrypt(sealed.encode()).decode() == password


async def test_the_scheduler_of_the_api_process_polls_every_imap_poll_seconds(
        make_service, auth, dovecot, imap_user, monkeypatch):
    # Given the API process's scheduler, its handler recording (in place of coldmail.inbound.receive)
    recorder = Recorder()
    monkeypatch.setattr("coldmail.mailbox.poller.default_handler", recorder)
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.ca.ca_file))  # the poller's TLS trusts the tests' CA
    service = await make_service(worker=False, scheduler=True, COLDMAIL_SECRET_KEY=SECRET_KEY,
                                 IMAP_POLL_SECONDS="0.3")
    user, password = imap_user
    await put_mailbox(service.client, auth, "alice", imaps_url(dovecot, user, password))

    # When messages come, one after the other
    dovecot.append(user, message("one"))
    await async_wait_for(lambda: recorder.subjects() == ["one"], timeout_s=5, what="first message")
    dovecot.append(user, message("two"))

    # Then each reaches the handler within a few poll intervals
    await async_wait_for(lambda: recorder.subjects() == ["one", "two"], timeout_s=5, what="second message")


async def test_a_reply_appended_to_the_mailbox_stops_the_sequence_within_a_few_poll_intervals(
        make_service, auth, dovecot, imap_user, monkeypatch):
    # Given the whole service (API, scheduler, worker) with the real classifier, a sender whose mailbox it
    # reads every 0.3 s, a first email of sequence "intro" sent, and two follow-ups waiting
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.ca.ca_file))
    service = await make_service(COLDMAIL_SECRET_KEY=SECRET_KEY, IMAP_POLL_SECONDS="0.3")
    client = service.client
    user, password = imap_user
    resp = await client.put("/senders/ann", headers=auth, json={
        "fromAddress": "ann@example.org", "hourlyLimit": 100, "imapUrl": imaps_url(dovecot, user, password)})
    assert resp.status == 201, await resp.text()
    first = await _send(client, auth, sequence="intro", subject="Quick question")
    follow_ups = [await _schedule(client, auth, sequence="intro", inReplyTo=first["id"],
                                  scheduledAt="2099-01-01T00:00:00Z") for _ in range(2)]

    # When Jane's reply lands in the sender's mailbox
    dovecot.append(user, (
        "From: Jane <jane@example.net>\r\nTo: ann@example.org\r\nSubject: Re: Quick question\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example.net>\r\nDate: {formatdate()}\r\n"
        f"In-Reply-To: {first['messageId']}\r\nReferences: {first['messageId']}\r\n\r\n"
        "Sounds good, let's talk.\r\n").encode())

    # Then within a few poll intervals the follow-ups are CANCELLED, and the first email shows the reply
    async def stopped():
        rows = [await (await client.get(f"/emails/{i}", headers=auth)).json() for i in follow_ups]
        return all(row["status"] == "CANCELLED" for row in rows)

    started = time.monotonic()
    await async_wait_for(stopped, timeout_s=5, what="the sequence stopped by the reply")
    assert time.monotonic() - started < 5
    shown = await (await client.get(f"/emails/{first['id']}", headers=auth)).json()
    assert shown["repliedAt"] is not None and shown["status"] == "SENT"
    # and the mailbox was only read: the reply is not marked \Seen
    assert all(b"\\Seen" not in flags for flags in dovecot.flags(user).values())


async def _schedule(client, auth, **fields) -> int:
    from tests.support.payloads import email as payload

    resp = await client.post("/emails", headers=auth, json=payload(
        **{"recipient": "jane@example.net", "senderId": "ann", **fields}))
    assert resp.status == 201, await resp.text()
    return (await resp.json())["jobId"]


async def _send(client, auth, **fields) -> dict:
    email_id = await _schedule(client, auth, **fields)

    async def sent():
        row = await (await client.get(f"/emails/{email_id}", headers=auth)).json()
        return row if row["status"] == "SENT" else None

    return await async_wait_for(sent, timeout_s=15, what=f"email {email_id} SENT")


async def test_stopping_the_poller_cuts_a_hanging_poll_at_once_and_leaves_the_mailbox_due(
        client, auth, make_poller):
    # Given a poll hanging on a server that never finishes its greeting (deadline: two minutes)
    tarpit = DripRelay(drip_s=0.1).start()
    try:
        await put_mailbox(client, auth, "slow", f"imap://u:p@127.0.0.1:{tarpit.port}/INBOX?starttls=never")
        poller = make_poller(Recorder())
        poller.tick()
        wait_for(lambda: tarpit.visits, timeout_s=5, what="the poll connected")

        # When the poller stops (the API process is shutting down)
        started = time.monotonic()
        poller.stop()

        # Then it stops at once, the connection cut, and the mailbox is due again, not counted as failing
        assert time.monotonic() - started < 2
        assert tarpit.visits[0].closed_at is not None
        with database.connection_context():
            row = database.execute_sql("SELECT status, failures, leased_by, next_poll_at <= now() FROM mailboxes "
                                       "WHERE sender_id = 'slow'").fetchone()
        assert row == ("never", 0, None, True)
    finally:
        tarpit.stop()


async def test_a_poll_hands_over_a_bounded_batch_and_the_next_polls_the_rest(
        client, auth, dovecot, imap_user, make_poller):
    # Given five new messages and a poller that hands over two per poll
    user, password = imap_user
    await put_mailbox(client, auth, "alice", imaps_url(dovecot, user, password))
    for n in range(5):
        dovecot.append(user, message(f"m{n}"))
    recorder = Recorder()
    poller = make_poller(recorder, batch=2)

    # When it polls three times, then a fourth
    counts = [poll_now(poller) for _ in range(4)]

    # Then the messages come two at a time, in order, each once
    assert counts == [2, 2, 1, 0]
    assert recorder.subjects() == [f"m{n}" for n in range(5)]


async def test_a_certificate_the_poller_does_not_trust_gets_no_password(client, auth, dovecot, imap_user,
                                                                       service):
    # Given mailboxes whose server's certificate is signed by a CA the poller does not know (imaps and STARTTLS)
    user, password = imap_user
    await put_mailbox(client, auth, "implicit", imaps_url(dovecot, user, password))
    await put_mailbox(client, auth, "starttls", f"imap://{user}:{password}@127.0.0.1:{dovecot.port}/INBOX")
    poller = MailboxPoller(service.settings, handler=Recorder())  # the system's CAs only
    try:
        # When they are polled
        poll_now(poller)
    finally:
        poller.stop()

    # Then both fail on the certificate, before any login
    for sender in ("implicit", "starttls"):
        status = await _status(client, auth, sender, "failing")
        assert status is not None and "CERTIFICATE_VERIFY_FAILED" in status["lastError"], sender
    log = (dovecot.root / "dovecot.log").read_text()
    assert f"Login: user=<{user}>" not in log
