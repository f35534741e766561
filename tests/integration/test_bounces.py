"""RCPT TO refusals from a real SMTP server (the aiosmtpd sink): a recipient that does not exist fails the
email and suppresses the address; a policy refusal fails it alone; a temporary one is retried. A sender with
maxBounceRate pauses itself when its hard bounces pass it, holds its emails PENDING, and sends them in order
once resumed."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from tests.support.db import sql
from tests.support.metrics import parse
from tests.support.payloads import email
from tests.support.waiting import async_wait_for

FAR = "2099-01-01T00:00:00Z"


async def schedule(client, auth, recipient: str, **overrides) -> int:
    resp = await client.post("/emails", json=email(recipient=recipient, **overrides), headers=auth)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["jobId"]


async def shown(client, auth, email_id: int) -> dict:
    return await (await client.get(f"/emails/{email_id}", headers=auth)).json()


async def kinds(client, auth, email_id: int) -> list[str]:
    events = (await (await client.get(f"/emails/{email_id}/events", headers=auth)).json())["events"]
    return [e["kind"] for e in events]


async def settled(client, auth, email_id: int, status: str, timeout_s: float = 15) -> dict:
    async def reached():
        row = await shown(client, auth, email_id)
        return row if row["status"] == status else None

    return await async_wait_for(reached, timeout_s=timeout_s, what=f"email {email_id} {status}")


async def metric(client, name: str) -> float:
    return parse(await (await client.get("/metrics")).text())(name)


async def suppressed(client, auth) -> dict[str, dict]:
    page = await (await client.get("/suppressions", headers=auth)).json()
    return {item["email"]: item for item in page["items"]}


async def test_an_unknown_mailbox_fails_the_email_and_suppresses_the_address(client, auth, sink):
    # Given a server that has no mailbox "nobody", and a later email to the same address
    sink.refuse_rcpt("nobody@example.com", "550 5.1.1 <nobody@example.com>: Recipient address rejected")
    later = await schedule(client, auth, "Nobody@example.com", scheduledAt=FAR)
    bounces = await metric(client, "coldmail_hard_bounces_total")
    # When an email to it is due
    email_id = await schedule(client, auth, "nobody@example.com")
    # Then it fails on its first attempt, with a failed and a bounced event
    row = await settled(client, auth, email_id, "FAILED")
    assert row["attempts"] == 1 and row["lastError"].startswith("550 5.1.1")
    assert (await kinds(client, auth, email_id))[-2:] == ["failed", "bounced"]
    # And the address is suppressed for the bounce, naming the sender and the email
    entry = (await suppressed(client, auth))["nobody@example.com"]
    assert (entry["reason"], entry["senderId"], entry["emailId"]) == ("bounced", "s1", email_id)
    # And the later email to it is SUPPRESSED, never to be sent
    assert (await shown(client, auth, later))["status"] == "SUPPRESSED"
    assert sink.arrivals == []
    assert await metric(client, "coldmail_hard_bounces_total") == bounces + 1


async def test_a_550_without_an_enhanced_code_is_a_hard_bounce_too(client, auth, sink):
    sink.refuse_rcpt("gone@example.com", "550 No such user here")
    email_id = await schedule(client, auth, "gone@example.com")
    await settled(client, auth, email_id, "FAILED")
    await async_wait_for(lambda: sql("SELECT reason FROM suppressions") == [("bounced",)], timeout_s=5)


async def test_a_policy_refusal_fails_the_email_and_suppresses_nothing(client, auth, sink):
    sink.refuse_rcpt("guarded@example.com", "550 5.7.1 Message rejected under policy")
    email_id = await schedule(client, auth, "guarded@example.com")
    row = await settled(client, auth, email_id, "FAILED")
    assert row["lastError"].startswith("550 5.7.1")
    assert "bounced" not in await kinds(client, auth, email_id)
    assert await suppressed(client, auth) == {}
    # And the next email to it is taken as usual
    assert (await (await client.post("/emails", json=email(recipient="guarded@example.com", scheduledAt=FAR),
                                     headers=auth)).json())["status"] == "PENDING"


async def test_a_temporary_refusal_is_retried_and_suppresses_nothing(client, auth, sink):
    # Given a server that answers 450 for a mailbox for now
    sink.refuse_rcpt("busy@example.com", "450 4.2.0 Mailbox busy")
    email_id = await schedule(client, auth, "busy@example.com")
    await async_wait_for(lambda: sql("SELECT attempts FROM emails WHERE id = %s", email_id) >= [(2,)], timeout_s=10)
    assert await suppressed(client, auth) == {}
    # When it takes the mailbox again, Then the email is sent on a later attempt
    sink.handler.rcpt_replies.clear()
    row = await settled(client, auth, email_id, "SENT")
    assert row["attempts"] >= 2
    assert "bounced" not in await kinds(client, auth, email_id)
    assert await suppressed(client, auth) == {}


async def test_a_refusal_at_data_is_no_bounce_of_the_address(client, auth, sink):
    # Given a relay that refuses the message itself with a 5.1.1-looking reply at DATA
    sink.fail_next("550 5.1.1 content refused")
    email_id = await schedule(client, auth, "fine@example.com")
    await settled(client, auth, email_id, "FAILED")
    assert await suppressed(client, auth) == {}


def sender(**overrides) -> dict:
    return {"fromAddress": "alice@example.com", "hourlyLimit": 1000, **overrides}


async def test_a_sender_pauses_itself_past_its_bounce_rate_and_resumes_its_emails_in_order(client, auth, sink):
    # Given a sender that pauses above 10 % hard bounces, with 18 good sends behind it
    resp = await client.put("/senders/s1", json=sender(maxBounceRate=0.1), headers=auth)
    body = await resp.json()
    assert (body["paused"], body["maxBounceRate"], body["bounceRate"]) == (False, 0.1, None)
    pauses = await metric(client, "coldmail_sender_pauses_total")
    for i in range(18):
        await schedule(client, auth, f"good{i}@example.com")
    await async_wait_for(lambda: len(sink.arrivals) == 18, timeout_s=20)
    # When three sends bounce hard, one after the other (2 in 20 is 10 %, not above; 3 in 21 is)
    for i in range(3):
        sink.refuse_rcpt(f"bad{i}@example.com", "550 5.1.1 no such user")
        bad = await schedule(client, auth, f"bad{i}@example.com")
        await settled(client, auth, bad, "FAILED")
    # Then the sender is paused, shows its rate, and the pause was counted once
    got = await (await client.get("/senders/s1", headers=auth)).json()
    assert (got["paused"], got["bounceRate"]) == (True, round(3 / 21, 4))
    assert await metric(client, "coldmail_sender_pauses_total") == pauses + 1
    # And its new emails, due now, stay PENDING with a deferred event, no attempt spent, nothing sent
    now = datetime.now(timezone.utc)
    held = [await schedule(client, auth, f"next{i}@example.com", subject=f"next {i}",
                           scheduledAt=(now + timedelta(milliseconds=100 * i)).isoformat()) for i in range(4)]
    await asyncio.sleep(2.0)
    assert len(sink.arrivals) == 18
    for email_id in held:
        row = await shown(client, auth, email_id)
        assert (row["status"], row["attempts"]) == ("PENDING", 0)
    assert sql("SELECT count(DISTINCT email_id) FROM email_events WHERE kind = 'deferred' "
               "AND detail->>'reason' = 'paused'") == [(4,)]
    # When the sender is resumed
    resp = await client.put("/senders/s1", json=sender(paused=False), headers=auth)
    assert (await resp.json())["paused"] is False
    # Then its held emails go, in their order, once each
    await async_wait_for(lambda: len(sink.arrivals) == 22, timeout_s=15)
    assert sink.subjects()[18:] == [f"next {i}" for i in range(4)]
    await asyncio.sleep(0.5)
    assert len(sink.arrivals) == 22


async def test_a_sender_paused_by_put_holds_everything_and_loses_nothing(client, auth, sink):
    resp = await client.put("/senders/s1", json=sender(paused=True), headers=auth)
    assert (await resp.json())["paused"] is True
    ids = [await schedule(client, auth, f"u{i}@example.com", subject=f"u{i}") for i in range(3)]
    await asyncio.sleep(1.5)
    assert sink.arrivals == []
    assert {(await shown(client, auth, i))["status"] for i in ids} == {"PENDING"}
    # A PUT that does not name `paused` leaves it paused
    resp = await client.put("/senders/s1", json=sender(hourlyLimit=999), headers=auth)
    assert (await resp.json())["paused"] is True
    resp = await client.put("/senders/s1", json=sender(paused=False), headers=auth)
    await async_wait_for(lambda: len(sink.arrivals) == 3, timeout_s=15)
    assert sorted(sink.subjects()) == ["u0", "u1", "u2"]


async def test_pause_fields_refuse_bad_values(client, auth):
    for bad in ({"paused": "yes"}, {"paused": 1}, {"maxBounceRate": 0}, {"maxBounceRate": 1.5},
                {"maxBounceRate": -0.1}, {"maxBounceRate": "lots"}):
        resp = await client.put("/senders/s1", json=sender(**bad), headers=auth)
        assert resp.status == 400, bad
    resp = await client.put("/senders/s1", json=sender(maxBounceRate=None), headers=auth)
    assert resp.status == 201 and (await resp.json())["maxBounceRate"] is None
