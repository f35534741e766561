"""Webhooks on the running service (API, scheduler and an in-process worker) with a real receiver on
loopback: events written with the email's state change, signed (verified with the `standardwebhooks`
package), retried with the same webhook-id, kept while the receiver is down or Redis forgets, and never
posted to an address the outbound guard refuses."""

from __future__ import annotations

import asyncio
import socket

import pytest
import redis
from cryptography.fernet import Fernet
from standardwebhooks.webhooks import Webhook

from coldmail import net, stored_secrets
from coldmail.db import database
from coldmail.db.emails import sending
from coldmail.crypto import PasswordBox
from tests.support.db import sql
from tests.support.metrics import parse
from tests.support.payloads import email
from tests.support.receiver import Receiver
from tests.support.waiting import async_wait_for

SECRET_KEY = Fernet.generate_key().decode()
FAST_WEBHOOKS = {"COLDMAIL_SECRET_KEY": SECRET_KEY, "WEBHOOK_RETRY_BACKOFF_SECONDS": "0.2"}


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


async def register(client, auth, url: str, events=("email.sent",)) -> dict:
    resp = await client.post("/webhooks", json={"url": url, "events": list(events)}, headers=auth)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def schedule(client, auth, subject: str = "Hi", **fields) -> int:
    resp = await client.post("/emails", json=email(subject, **fields), headers=auth)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["jobId"]


def verified(secret: str, received) -> dict:
    """The payload, once the standardwebhooks package has checked its signature (it raises if it is wrong)."""
    return Webhook(secret).verify(received.body, {k.lower(): v for k, v in received.headers.items()})


async def test_a_sent_email_is_posted_signed_and_listed_as_delivered(make_service, auth, receiver):
    client = (await make_service(**FAST_WEBHOOKS)).client
    hook = await register(client, auth, receiver.url)
    assert hook["secret"].startswith("whsec_") and hook["events"] == ["email.sent"]
    # the secret is shown once: never in the listing
    listed = await (await client.get("/webhooks", headers=auth)).json()
    assert listed == {"webhooks": [{k: v for k, v in hook.items() if k != "secret"}]}
    assert hook["secret"] not in str(sql("SELECT * FROM webhooks"))  # stored sealed

    email_id = await schedule(client, auth, "Signed")
    await async_wait_for(lambda: receiver.received, timeout_s=15, what="the email.sent delivery")
    payload = verified(hook["secret"], receiver.received[0])
    assert payload["type"] == "email.sent" and payload["timestamp"].endswith("Z")
    assert payload["data"]["email"] == {**payload["data"]["email"], "id": email_id, "subject": "Signed",
                                        "status": "SENT", "recipient": "user@example.com", "senderId": "s1"}
    assert payload["data"]["email"]["messageId"] and payload["data"]["reply"]
    # a wrong secret does not verify
    with pytest.raises(Exception):
        verified("whsec_" + "A" * 43 + "=", receiver.received[0])

    async def delivered():
        resp = await client.get(f"/webhooks/{hook['id']}/deliveries", headers=auth)
        rows = (await resp.json())["deliveries"]
        return rows if rows and rows[0]["status"] == "delivered" else None

    rows = await async_wait_for(delivered, timeout_s=10, what="the delivery recorded")
    assert rows[0] == {**rows[0], "event": "email.sent", "attempts": 1, "lastStatusCode": 200,
                       "nextAttemptAt": None, "webhookId": receiver.received[0].headers["webhook-id"]}


async def test_a_receiver_failing_twice_gets_the_same_webhook_id_three_times(make_service, auth, receiver):
    client = (await make_service(**FAST_WEBHOOKS)).client
    hook = await register(client, auth, receiver.url)
    receiver.answers = [500, 503]
    await schedule(client, auth)
    await async_wait_for(lambda: len(receiver.received) >= 3, timeout_s=20, what="three attempts")
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(receiver.received) == 3 and len(ids) == 1
    for r in receiver.received:  # each attempt signed anew (its own timestamp), each verifies
        verified(hook["secret"], r)
    rows = sql("SELECT status, attempts, last_status_code FROM webhook_deliveries")
    await async_wait_for(lambda: sql("SELECT status FROM webhook_deliveries") == [("delivered",)],
                         timeout_s=5, what="recorded delivered")
    assert sql("SELECT attempts, last_status_code FROM webhook_deliveries") == [(3, 200)], rows


async def test_a_receiver_down_while_three_emails_are_sent_gets_all_three_when_it_comes_back(
        make_service, auth, receiver):
    client = (await make_service(**FAST_WEBHOOKS)).client
    await register(client, auth, receiver.url)
    port = receiver.port
    receiver.stop()
    ids = [await schedule(client, auth, f"down {i}") for i in range(3)]
    await async_wait_for(lambda: sql("SELECT count(*) FROM webhook_deliveries WHERE attempts >= 2")[0][0] == 3,
                         timeout_s=20, what="each delivery tried and refused")
    back = Receiver().start(port=port)
    try:
        await async_wait_for(lambda: len(back.events("email.sent")) == 3, timeout_s=30,
                             what="all three delivered once it is back")
        assert sorted(r.json["data"]["email"]["id"] for r in back.received) == ids
    finally:
        back.stop()


async def test_a_delivery_whose_message_redis_lost_is_handed_over_again(make_service, auth, receiver, redis_url):
    # Given a delivery handed over to Redis while no worker runs
    scheduler_only = await make_service(**FAST_WEBHOOKS, worker=False)
    client = scheduler_only.client
    await register(client, auth, receiver.url, events=["email.cancelled"])
    later = await schedule(client, auth, scheduledAt="2099-01-01T00:00:00Z")
    assert (await client.post(f"/emails/{later}/cancel", headers=auth)).status == 200
    r = redis.Redis.from_url(redis_url)
    await async_wait_for(lambda: r.llen("dramatiq:coldmail.webhooks") == 1, timeout_s=10, what="the message")
    # When Redis is flushed, then a worker starts
    r.flushdb()
    await make_service(**FAST_WEBHOOKS, scheduler=False)
    # Then the delivery is handed over again and arrives
    await async_wait_for(lambda: receiver.received, timeout_s=20, what="delivered after the flush")
    assert receiver.received[0].json["data"]["email"]["id"] == later


async def test_only_subscribed_types_of_the_accounts_own_emails_are_written(make_service, auth, receiver):
    client = (await make_service(**FAST_WEBHOOKS)).client
    await register(client, auth, receiver.url, events=["email.cancelled"])
    later = await schedule(client, auth, scheduledAt="2099-01-01T00:00:00Z")
    await schedule(client, auth, "sent, not subscribed")
    assert (await client.post(f"/emails/{later}/cancel", headers=auth)).status == 200
    await async_wait_for(lambda: receiver.received, timeout_s=15, what="the email.cancelled delivery")
    await async_wait_for(lambda: sql("SELECT count(*) FROM emails WHERE status = 'SENT'")[0][0] == 1,
                         timeout_s=15, what="the other email sent")
    assert [r.json["type"] for r in receiver.received] == ["email.cancelled"]
    assert sql("SELECT event_type FROM webhook_deliveries") == [("email.cancelled",)]


async def test_registration_validates_and_another_accounts_webhook_is_404(make_service, auth):
    client = (await make_service(**FAST_WEBHOOKS, COLDMAIL_API_KEYS="key-one-1,other:key-two-2")).client
    a = {"Authorization": "Bearer key-one-1"}
    b = {"Authorization": "Bearer key-two-2"}
    for body, field in (({"url": "ftp://example.com/x", "events": ["email.sent"]}, "url"),
                        ({"url": "https://example.com/x", "events": ["email.opened"]}, "events"),
                        ({"url": "https://example.com/x", "events": []}, "events"),
                        ({"url": "https://example.com/x"}, "events")):
        resp = await client.post("/webhooks", json=body, headers=a)
        assert resp.status == 400 and field in (await resp.json())["fields"], body
    hook = await register(client, a, "http://127.0.0.1:9/hook")
    for method, path in (("DELETE", f"/webhooks/{hook['id']}"), ("GET", f"/webhooks/{hook['id']}/deliveries"),
                         ("POST", f"/webhooks/{hook['id']}/test"), ("DELETE", "/webhooks/abc")):
        assert (await client.request(method, path, headers=b)).status == 404, path
    assert (await (await client.get("/webhooks", headers=b)).json()) == {"webhooks": []}
    assert (await client.delete(f"/webhooks/{hook['id']}", headers=a)).status == 204
    assert (await client.delete(f"/webhooks/{hook['id']}", headers=a)).status == 404


async def test_registration_needs_the_secret_key(make_service, auth):
    client = (await make_service()).client
    resp = await client.post("/webhooks", json={"url": "http://127.0.0.1:9/", "events": ["email.sent"]},
                             headers=auth)
    assert resp.status == 400 and "COLDMAIL_SECRET_KEY" in (await resp.json())["message"]


async def test_private_and_plain_http_urls_are_refused_without_allow_private_networks(make_service, auth):
    client = (await make_service(**FAST_WEBHOOKS, ALLOW_PRIVATE_NETWORKS="false", SMTP_URL=None)).client
    for url in ("https://127.0.0.1/hook", "https://10.1.2.3/hook", "https://169.254.169.254/latest",
                "https://localhost/hook", "https://2130706433/hook", "http://example.com/hook"):
        resp = await client.post("/webhooks", json={"url": url, "events": ["email.sent"]}, headers=auth)
        assert resp.status == 400, url
        assert "url" in (await resp.json())["fields"], url
    assert sql("SELECT count(*) FROM webhooks") == [(0,)]


async def test_the_test_event_is_signed_and_reports_the_answer(make_service, auth, receiver):
    client = (await make_service(**FAST_WEBHOOKS)).client
    hook = await register(client, auth, receiver.url)
    receiver.answers = [418]
    resp = await client.post(f"/webhooks/{hook['id']}/test", headers=auth)
    assert resp.status == 200
    assert await resp.json() == {**await resp.json(), "delivered": False, "statusCode": 418, "error": "HTTP 418"}
    resp = await client.post(f"/webhooks/{hook['id']}/test", headers=auth)
    assert (await resp.json())["delivered"] is True
    assert verified(hook["secret"], receiver.received[-1])["type"] == "webhook.test"


async def test_a_public_name_resolving_to_a_private_address_is_refused_at_delivery(
        make_service, auth, receiver, monkeypatch):
    # Given an endpoint registered while its name resolved to a public address
    service = await make_service(**FAST_WEBHOOKS, ALLOW_PRIVATE_NETWORKS="false", SMTP_URL=None)
    real = socket.getaddrinfo
    answer = {"hooks.example.com": "93.184.216.34"}

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host in answer:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(net.socket, "getaddrinfo", fake_getaddrinfo)
    hook = await register(service.client, auth, f"https://hooks.example.com:{receiver.port}/hook")
    # When DNS now answers with loopback (where the receiver listens) and an event is written
    answer["hooks.example.com"] = "127.0.0.1"
    resp = await service.client.post(f"/webhooks/{hook['id']}/test", headers=auth)
    body = await resp.json()
    assert body["delivered"] is False and "loopback" in body["error"]
    sql("INSERT INTO webhook_deliveries (account, webhook_id, event_type, payload) "
        "VALUES ('default', %s, 'email.sent', '{\"type\": \"email.sent\"}')", hook["id"])
    # Then the worker refuses to connect, and records why
    await async_wait_for(lambda: sql("SELECT last_error FROM webhook_deliveries WHERE attempts >= 1"),
                         timeout_s=15, what="an attempt")
    assert "loopback" in sql("SELECT last_error FROM webhook_deliveries")[0][0]
    assert receiver.received == []


async def test_failed_and_deferred_emails_are_reported(make_service, auth, receiver, sink):
    client = (await make_service(**FAST_WEBHOOKS)).client
    hook = await register(client, auth, receiver.url, events=["email.failed", "email.deferred"])
    sink.fail_next("451 4.3.0 try later", "550 5.1.1 no such user")
    email_id = await schedule(client, auth)
    await async_wait_for(lambda: len(receiver.received) == 2, timeout_s=20, what="deferred, then failed")
    deferred, failed = (verified(hook["secret"], r) for r in receiver.received)
    assert deferred["type"] == "email.deferred" and deferred["data"]["reason"] == "attempt_failed"
    assert deferred["data"]["email"]["id"] == email_id and deferred["data"]["code"] == 451
    assert failed["type"] == "email.failed" and failed["data"]["email"]["status"] == "FAILED"
    assert failed["data"]["code"] == 550 and "no such user" in failed["data"]["error"]
    # two events, two webhook-ids
    assert receiver.received[0].headers["webhook-id"] != receiver.received[1].headers["webhook-id"]


async def test_a_delivery_failing_past_its_window_is_failed_and_counted(make_service, auth, receiver):
    service = await make_service(**FAST_WEBHOOKS, WEBHOOK_RETRY_WINDOW_SECONDS="1")
    client = service.client
    hook = await register(client, auth, receiver.url)
    receiver.answers = [500] * 100

    async def page():
        return parse((await (await client.get("/metrics")).read()).decode())

    before = await page()  # the counters are this test process's: compared with what they were
    await schedule(client, auth)
    await async_wait_for(lambda: len(receiver.received) >= 1, timeout_s=15, what="a first attempt")
    assert (await page())("coldmail_webhook_oldest_pending_seconds") > 0
    await async_wait_for(lambda: sql("SELECT status FROM webhook_deliveries") == [("failed",)], timeout_s=15,
                         what="failed once an attempt fails a second after the event")
    attempts = sql("SELECT attempts FROM webhook_deliveries")[0][0]
    assert attempts == len(receiver.received) >= 2
    samples = await page()
    for outcome, count in (("failed", 1), ("retry", attempts - 1)):
        counted = samples("coldmail_webhook_deliveries_total", outcome=outcome)
        assert counted - before("coldmail_webhook_deliveries_total", outcome=outcome) == count, outcome
    assert samples("coldmail_webhook_oldest_pending_seconds") == 0
    rows = (await (await client.get(f"/webhooks/{hook['id']}/deliveries", headers=auth)).json())["deliveries"]
    assert rows[0] == {**rows[0], "status": "failed", "lastStatusCode": 500, "lastError": "HTTP 500",
                       "nextAttemptAt": None}


async def test_rotate_secrets_reseals_webhook_secrets_so_the_old_key_can_go(make_service, auth, receiver):
    # Given an endpoint registered under K1
    k2 = Fernet.generate_key().decode()
    client = (await make_service(**FAST_WEBHOOKS)).client
    hook = await register(client, auth, receiver.url)
    await client.close()
    # When the secrets are re-sealed with "K2,K1" and the server then runs with K2 alone
    done = stored_secrets.rotate(PasswordBox((k2, SECRET_KEY)))
    assert done.resealed == 1 and done.unreadable_webhooks == []
    client = (await make_service(**{**FAST_WEBHOOKS, "COLDMAIL_SECRET_KEY": k2})).client
    # Then its deliveries are still signed with the same secret
    resp = await client.post(f"/webhooks/{hook['id']}/test", headers=auth)
    assert (await resp.json())["delivered"] is True
    verified(hook["secret"], receiver.received[-1])


async def test_a_receiver_that_never_answers_does_not_hold_back_email(make_service, auth, receiver):
    # Given two worker threads, at most one of which may post webhooks, and a receiver that never answers
    client = (await make_service(**FAST_WEBHOOKS, WORKER_THREADS="2", WEBHOOK_CONCURRENCY="1")).client
    await register(client, auth, receiver.url)
    receiver.hang = True
    for i in range(2):  # two deliveries, each of which would hold a thread for 10 s
        await schedule(client, auth, f"first {i}")
    await async_wait_for(lambda: receiver.received, timeout_s=10, what="a post that hangs")
    await asyncio.sleep(1)  # time for the other delivery to be handed over (and put back: no slot is free)
    # When twenty more emails are due
    for i in range(20):
        await schedule(client, auth, f"more {i}")
    # Then they are all sent while one thread waits on the receiver (its timeout is 10 s)
    await async_wait_for(lambda: sql("SELECT count(*) FROM emails WHERE status = 'SENT'")[0][0] == 22,
                         timeout_s=6, what="every email sent while the receiver hangs")
    assert len(receiver.received) == 1
    assert sql("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'") == [(22,)]


async def test_an_email_stopped_by_the_suppression_list_is_reported_wherever_it_stops(make_service, auth, receiver):
    # Given an endpoint for email.suppressed
    client = (await make_service(**FAST_WEBHOOKS)).client
    hook = await register(client, auth, receiver.url, events=["email.suppressed"])
    # When an email waits PENDING and its address is then suppressed (stopped at the list's statement),
    later = await schedule(client, auth, "later", recipient="later@example.com", scheduledAt="2099-01-01T00:00:00Z")
    resp = await client.post("/suppressions", json={"email": "later@example.com", "reason": "manual"}, headers=auth)
    assert resp.status == 201
    # and an email to an already suppressed address is accepted (stored SUPPRESSED),
    at_once = await schedule(client, auth, "at once", recipient="later@example.com")
    # and one whose address was listed behind the list's back is stopped by the worker's claim
    sql("INSERT INTO emails (account, recipient, recipient_key, subject, body, sender_id, scheduled_at, "
        "next_attempt_at) VALUES ('default', 'raced@example.com', 'raced@example.com', 'raced', 'b', 's1', "
        "now(), now())")
    [(raced,)] = sql("SELECT id FROM emails WHERE subject = 'raced'")
    sql("INSERT INTO suppressions (account, address, reason) VALUES ('default', 'raced@example.com', 'bounced')")
    with database.connection_context():
        assert sending.claim([raced], lease_s=5) == []
    # Then each is posted once, signed, with the email as it is now and the entry's reason
    await async_wait_for(lambda: len(receiver.received) >= 3, timeout_s=15, what="three email.suppressed")
    payloads = {p["data"]["email"]["id"]: p for p in (verified(hook["secret"], r) for r in receiver.received)}
    assert set(payloads) == {later, at_once, raced} and len(receiver.received) == 3
    assert {p["type"] for p in payloads.values()} == {"email.suppressed"}
    assert {i: (p["data"]["email"]["status"], p["data"]["reason"]) for i, p in payloads.items()} == {
        later: ("SUPPRESSED", "manual"), at_once: ("SUPPRESSED", "manual"), raced: ("SUPPRESSED", "bounced")}
    assert payloads[at_once]["data"]["email"]["subject"] == "at once"
    assert payloads[at_once]["data"]["email"]["recipient"] == "later@example.com"
