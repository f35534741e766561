"""Rotating COLDMAIL_SECRET_KEY on the running service: K1 → "K2,K1" → "K2" (a secret sealed with K1 only
holds its email) → "K2,K1" again (it goes), and `python run.py rotate-secrets`.

Each phase is the service restarted with other keys (API, scheduler and worker in this process), sending
through a relay that wants the sender's password, so a send proves the password was opened.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet, InvalidToken

from coldmail.db import database
from coldmail.db.emails import sending
from tests.support import payloads
from tests.support.db import event_kinds, sql
from tests.support.metrics import parse
from tests.support.processes import ROOT
from tests.support.sink import SmtpSink
from tests.support.waiting import async_wait_for

K1, K2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
PASSWORD = "rotate-Me-7x"
#: a hold's first delay: far longer than the test, so an email held and then sent was let go by the start-up
LONG_HOLD = {"RETRY_BACKOFF_SECONDS": "60", "RETRY_BACKOFF_MAX_SECONDS": "120"}


@pytest.fixture
def login_sink():
    """A relay that takes a message only after a login with PASSWORD, and records the logins."""
    sink = SmtpSink(password=PASSWORD).start()
    yield sink
    sink.stop()


def relay_url(sink: SmtpSink) -> str:
    return f"smtp://user%40example.com:{PASSWORD}@127.0.0.1:{sink.port}?starttls=never"


async def put_sender(client, auth, sender_id: str, sink: SmtpSink) -> dict:
    resp = await client.put(f"/senders/{sender_id}", json={"fromAddress": f"{sender_id}@example.com",
                                                           "hourlyLimit": 100, "smtpUrl": relay_url(sink)},
                            headers=auth)
    assert resp.status in (200, 201), await resp.text()
    return await resp.json()


async def sender(client, auth, sender_id: str) -> dict:
    resp = await client.get(f"/senders/{sender_id}", headers=auth)
    assert resp.status == 200
    return await resp.json()


async def schedule(client, auth, subject: str, sender_id: str) -> int:
    resp = await client.post("/emails", json=payloads.email(subject, senderId=sender_id), headers=auth)
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["jobId"])


async def held_metric(client) -> float:
    text = await (await client.get("/metrics")).text()
    return parse(text)("coldmail_emails_held_total", reason="secret_unreadable")


def sealed_of(sender_id: str) -> str:
    [(sealed,)] = sql("SELECT smtp_password_enc FROM senders WHERE id = %s", sender_id)
    return sealed


def opens_with(key: str, sealed: str) -> bool:
    try:
        Fernet(key).decrypt(sealed.encode())
    except InvalidToken:
        return False
    return True


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_a_rotated_key_holds_what_it_cannot_open_and_sends_it_once_the_key_is_back(
        make_service, login_sink, auth, caplog):
    caplog.set_level(logging.INFO)
    # Given the service with K1, and a sender whose password is sealed with it
    service = await make_service(COLDMAIL_SECRET_KEY=K1)
    await put_sender(service.client, auth, "old", login_sink)
    assert opens_with(K1, sealed_of("old"))
    await service.client.close()

    # When K2 comes first and K1 stays after it
    service = await make_service(COLDMAIL_SECRET_KEY=f"{K2},{K1}")
    client = service.client
    # Then a new password is sealed with K2, the old one still opens, and both senders' emails go
    await put_sender(client, auth, "new", login_sink)
    assert opens_with(K2, sealed_of("new")) and not opens_with(K1, sealed_of("new"))
    assert (await sender(client, auth, "old"))["secretReadable"] is True
    assert (await sender(client, auth, "new"))["secretReadable"] is True
    for sender_id in ("old", "new"):
        await schedule(client, auth, f"from {sender_id} under K2,K1", sender_id)
    await async_wait_for(lambda: len(login_sink.arrivals) == 2, timeout_s=10, what="both sends under K2,K1")
    assert set(login_sink.logins) == {("user@example.com", PASSWORD)}
    await client.close()

    # When K1 is dropped while "old"'s password is still sealed with it only
    caplog.clear()
    service = await make_service(COLDMAIL_SECRET_KEY=K2, **LONG_HOLD)
    client = service.client
    # Then the start-up check names "old" (its id, never the secret), and only "old"
    unreadable_lines = [r.getMessage() for r in caplog.records
                        if "no key of COLDMAIL_SECRET_KEY opens" in r.getMessage()]
    assert len(unreadable_lines) == 1 and "'old'" in unreadable_lines[0] and "'new'" not in unreadable_lines[0]
    assert any("1 of 2 open with no configured key" in r.getMessage() for r in caplog.records)
    # And GET flags "old" and not "new"
    assert (await sender(client, auth, "old"))["secretReadable"] is False
    assert (await sender(client, auth, "new"))["secretReadable"] is True
    held_before = await held_metric(client)
    # When each sends an email
    held_id = await schedule(client, auth, "from old under K2", "old")
    await schedule(client, auth, "from new under K2", "new")
    # Then "new"'s goes, and "old"'s is held: PENDING, no attempt spent, a `held` event that says why
    await async_wait_for(lambda: "held" in event_kinds(held_id), timeout_s=10, what="the hold")
    await async_wait_for(lambda: len(login_sink.arrivals) == 3, timeout_s=10, what="new's send under K2")
    assert login_sink.subjects()[-1] == "from new under K2"
    [(status, attempts, last_error)] = sql("SELECT status, attempts, last_error FROM emails WHERE id = %s", held_id)
    assert (status, attempts) == ("PENDING", 0) and "COLDMAIL_SECRET_KEY" in last_error
    [(detail,)] = sql("SELECT detail FROM email_events WHERE email_id = %s AND kind = 'held'", held_id)
    assert detail["reason"] == "secret_unreadable"
    body = await (await client.get(f"/emails/{held_id}", headers=auth)).json()
    assert body["status"] == "PENDING" and body["attempts"] == 0
    # And held for the first backoff (60 s here), not failed nor retried in a loop
    [(wait_s,)] = sql("SELECT extract(epoch FROM next_attempt_at - now()) FROM emails WHERE id = %s", held_id)
    assert 50 < wait_s <= 60
    # And counted, and logged with the email's id
    assert await held_metric(client) == held_before + 1
    assert any(f"email {held_id}: held" in r.getMessage() for r in caplog.records)
    # And the password is in no event, response or log line
    assert not sql("SELECT 1 FROM email_events WHERE detail::text LIKE %s", f"%{PASSWORD}%")
    assert PASSWORD not in caplog.text and PASSWORD not in str(body)
    await client.close()

    # When K1 is back (after K2) and the service restarts
    service = await make_service(COLDMAIL_SECRET_KEY=f"{K2},{K1}", **LONG_HOLD)
    # Then the held email goes now (the start-up let it go: its hold had nearly a minute to run), once
    await async_wait_for(lambda: len(login_sink.arrivals) == 4, timeout_s=10, what="the held email's send")
    assert login_sink.subjects()[-1] == "from old under K2"
    assert sql("SELECT status, attempts FROM emails WHERE id = %s", held_id) == [("SENT", 1)]
    kinds = event_kinds(held_id)
    assert kinds.index("held") < kinds.index("resumed") < kinds.index("sent")
    assert (await sender(service.client, auth, "old"))["secretReadable"] is True
    assert set(login_sink.logins) == {("user@example.com", PASSWORD)}


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_rotate_secrets_reseals_with_the_first_key_so_the_old_one_can_go(
        make_service, base_env, login_sink, auth):
    # Given senders whose passwords are sealed with K1, and one with a key nobody has any more
    service = await make_service(COLDMAIL_SECRET_KEY=K1)
    for sender_id in ("a", "b"):
        await put_sender(service.client, auth, sender_id, login_sink)
    await service.client.close()
    service = await make_service(COLDMAIL_SECRET_KEY=Fernet.generate_key().decode())
    await put_sender(service.client, auth, "lost", login_sink)
    lost = sealed_of("lost")
    await service.client.close()
    # When `python run.py rotate-secrets` runs with "K2,K1"
    env = {**os.environ, **base_env, "COLDMAIL_NO_BOOTSTRAP": "1", "COLDMAIL_SECRET_KEY": f"{K2},{K1}"}
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "rotate-secrets"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    # Then it reports the two it re-sealed and names the one it could not open (exit 1), leaving that as it was
    assert "re-sealed 2 stored secret(s)" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 1 and "'lost'" in done.stderr and PASSWORD not in done.stdout + done.stderr
    assert sealed_of("lost") == lost
    assert all(opens_with(K2, sealed_of(s)) and not opens_with(K1, sealed_of(s)) for s in ("a", "b"))
    # And with K2 alone, their emails go
    service = await make_service(COLDMAIL_SECRET_KEY=K2)
    assert (await sender(service.client, auth, "a"))["secretReadable"] is True
    await schedule(service.client, auth, "after rotation", "a")
    await async_wait_for(lambda: login_sink.subjects() == ["after rotation"], timeout_s=10, what="the send")


def test_a_hold_doubles_up_to_its_bound_and_needs_the_claim(base_env):
    [(email_id,)] = sql("INSERT INTO emails (recipient, subject, body, sender_id, scheduled_at, next_attempt_at, "
                        "status) VALUES ('u@example.com', 's', 'b', 'x', now(), now(), 'SENDING') RETURNING id")

    def hold() -> bool:
        with database.connection_context():
            return sending.hold(email_id, claim=0, reason="secret_unreadable", error="no key", base_s=10, max_s=25)

    def waits_s() -> float:
        [(wait,)] = sql("SELECT extract(epoch FROM next_attempt_at - now()) FROM emails WHERE id = %s", email_id)
        return wait

    waits = []
    for _ in range(3):
        sql("UPDATE emails SET status = 'SENDING' WHERE id = %s RETURNING id", email_id)
        assert hold()
        waits.append(waits_s())
    # Then 10 s, 20 s, then 25 s (the bound), with no attempt spent
    assert [round(w) for w in waits] == [10, 20, 25]
    assert sql("SELECT status, attempts FROM emails WHERE id = %s", email_id) == [("PENDING", 0)]
    # And a hold without the claim (the email is PENDING) changes nothing and writes no event
    assert not hold()
    assert event_kinds(email_id).count("held") == 3
