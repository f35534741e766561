"""PUT and GET /senders/{senderId} on the running service: what a user sends, what comes back, what is
stored, and where the SMTP password never shows up.
"""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet

from tests.conftest import MARKER
from tests.support.db import sql
from tests.support.waiting import async_wait_for

SECRET_KEY = Fernet.generate_key().decode()
PASSWORD = "hunter2-S3cr3t"


def sender(**overrides) -> dict:
    body = {"fromAddress": "alice@example.com", "hourlyLimit": 50}
    body.update(overrides)
    return body


@pytest.fixture
async def keyed(make_service):
    """The service with COLDMAIL_SECRET_KEY set."""
    return (await make_service(COLDMAIL_SECRET_KEY=SECRET_KEY)).client


async def test_put_creates_then_replaces_and_get_shows_it_with_its_usage(client, auth):
    # When a sender is created
    resp = await client.put("/senders/alice", json=sender(), headers=auth)
    # Then 201 with what was stored, the defaults for what was not, and an empty window
    assert resp.status == 201
    body = await resp.json()
    assert body == {**body, "id": "alice", "fromAddress": "alice@example.com", "hourlyLimit": 50,
                    "smtpUrl": None, "hasPassword": False,
                    "usage": {"sentInWindow": 0, "windowSeconds": 3600, "sentToday": 0, "todayLimit": None}}
    assert body["createdAt"].endswith("Z") and body["updatedAt"].endswith("Z")
    # When it is replaced with a relay of its own (a URL as users write it: port, option, trailing slash)
    resp = await client.put("/senders/alice", json=sender(hourlyLimit=7, smtpUrl="smtp://relay.example.com:2525/"
                                                          "?starttls=require"), headers=auth)
    # Then 200, and GET shows the same
    assert resp.status == 200
    replaced = await resp.json()
    assert (replaced["hourlyLimit"], replaced["smtpUrl"]) == (7, "smtp://relay.example.com:2525?starttls=require")
    got = await (await client.get("/senders/alice", headers=auth)).json()
    assert got == replaced
    # And the address is normalized as for recipients
    resp = await client.put("/senders/alice", json=sender(fromAddress="Alice@EXAMPLE.com"), headers=auth)
    assert (await resp.json())["fromAddress"] == "Alice@example.com"


async def test_a_sender_first_seen_in_a_schedule_request_has_the_defaults(client, auth, service):
    # Given no sender "newcomer" yet
    assert (await client.get("/senders/newcomer", headers=auth)).status == 404
    # When an email is scheduled for it (far ahead: nothing is sent)
    resp = await client.post("/emails", json={"recipient": "u@example.com", "subject": "s", "body": "b",
                                              "senderId": "newcomer", "scheduledAt": "2099-01-01T00:00:00Z"},
                             headers=auth)
    assert resp.status == 201
    # Then GET shows it with the server's defaults
    resp = await client.get("/senders/newcomer", headers=auth)
    assert resp.status == 200
    body = await resp.json()
    assert (body["fromAddress"], body["hourlyLimit"], body["smtpUrl"], body["hasPassword"]) == (
        service.settings.default_from, service.settings.rate_limit_per_hour, None, False)


async def test_usage_counts_the_sends_of_the_window_even_after_redis_lost_them(client, auth, sink, redis_client):
    # Given a sender that sent 3 emails
    await client.put("/senders/busy", json=sender(hourlyLimit=10), headers=auth)
    for i in range(3):
        resp = await client.post("/emails", json={"recipient": "u@example.com", "subject": f"s{i}", "body": "b",
                                                  "senderId": "busy"}, headers=auth)
        assert resp.status == 201
    await async_wait_for(lambda: len(sink.arrivals) == 3, timeout_s=5, what="3 sends")
    # Then its usage says 3 (from the limiter's counters)
    await async_wait_for(lambda: sql("SELECT count(*) FROM emails WHERE status = 'SENT'") == [(3,)], timeout_s=3)
    usage = (await (await client.get("/senders/busy", headers=auth)).json())["usage"]
    assert usage == {"sentInWindow": 3, "windowSeconds": 3600, "sentToday": 3, "todayLimit": None}
    # When Redis loses everything
    redis_client.flushdb()
    redis_client.set(MARKER, "1")
    # Then the usage still says 3, counted in PostgreSQL
    usage = (await (await client.get("/senders/busy", headers=auth)).json())["usage"]
    assert (usage["sentInWindow"], usage["sentToday"]) == (3, 3)


async def test_the_smtp_password_is_stored_encrypted_and_never_shown_or_logged(keyed, auth, caplog):
    caplog.set_level(logging.DEBUG)
    responses = []
    # When a sender is stored with a password in its relay URL
    url = f"smtp://alice%40example.com:{PASSWORD}@relay.example.com:587"
    resp = await keyed.put("/senders/secretive", json=sender(smtpUrl=url), headers=auth)
    responses.append(await resp.text())
    assert resp.status == 201
    body = await resp.json()
    # Then the response shows the URL without it, and says one is stored
    assert body["smtpUrl"] == "smtp://alice%40example.com@relay.example.com:587" and body["hasPassword"] is True
    # And the row holds the URL without it, and the password only encrypted with the server's key
    [(stored_url, sealed)] = sql("SELECT smtp_url, smtp_password_enc FROM senders WHERE id = 'secretive'")
    assert PASSWORD not in stored_url and PASSWORD not in sealed
    assert Fernet(SECRET_KEY).decrypt(sealed.encode()).decode() == PASSWORD
    # When the URL is sent back as GET shows it (say, to change the limit)
    resp = await keyed.put("/senders/secretive", json=sender(hourlyLimit=9, smtpUrl=body["smtpUrl"]), headers=auth)
    responses.append(await resp.text())
    # Then the stored password is kept
    assert (await resp.json())["hasPassword"] is True
    assert sql("SELECT smtp_password_enc FROM senders WHERE id = 'secretive'") == [(sealed,)]
    # When it moves to another relay without a password, the old one is dropped
    resp = await keyed.put("/senders/secretive", json=sender(smtpUrl="smtp://other.example.com"), headers=auth)
    responses.append(await resp.text())
    assert (await resp.json())["hasPassword"] is False
    assert sql("SELECT smtp_password_enc FROM senders WHERE id = 'secretive'") == [(None,)]
    # And a bad URL with a password in it is refused without repeating it
    resp = await keyed.put("/senders/secretive", json=sender(smtpUrl=f"http://u:{PASSWORD}@h"), headers=auth)
    responses.append(await resp.text())
    assert resp.status == 400
    responses.append(await (await keyed.get("/senders/secretive", headers=auth)).text())
    # And the password was in no response, and in no log line
    assert not [r for r in responses if PASSWORD in r]
    assert PASSWORD not in caplog.text
    assert not [r for r in caplog.records if PASSWORD in repr(r.args) or PASSWORD in str(r.msg)]


async def test_storing_a_password_without_a_secret_key_is_a_clear_400(client, auth):
    # When a password is sent to a server without COLDMAIL_SECRET_KEY
    resp = await client.put("/senders/nokey", json=sender(smtpUrl=f"smtp://u:{PASSWORD}@relay.example.com"),
                            headers=auth)
    # Then it is refused with a message that says why, and nothing is stored
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "bad_request" and "COLDMAIL_SECRET_KEY" in body["message"]
    assert sql("SELECT count(*) FROM senders WHERE id = 'nokey'") == [(0,)]
    # While a relay without a password is fine
    resp = await client.put("/senders/nokey", json=sender(smtpUrl="smtp://u@relay.example.com"), headers=auth)
    assert resp.status == 201


@pytest.mark.parametrize("body,field", [
    ({"hourlyLimit": 5}, "fromAddress"),
    (sender(fromAddress="not-an-address"), "fromAddress"),
    (sender(fromAddress="a@example.com\r\nBcc: x@example.com"), "fromAddress"),
    (sender(fromAddress=5), "fromAddress"),
    ({"fromAddress": "a@example.com"}, "hourlyLimit"),
    (sender(hourlyLimit=0), "hourlyLimit"),
    (sender(hourlyLimit=-3), "hourlyLimit"),
    (sender(hourlyLimit="5"), "hourlyLimit"),
    (sender(hourlyLimit=1.5), "hourlyLimit"),
    (sender(hourlyLimit=True), "hourlyLimit"),
    (sender(hourlyLimit=None), "hourlyLimit"),
    (sender(hourlyLimit=10**12), "hourlyLimit"),
    (sender(smtpUrl="http://relay.example.com"), "smtpUrl"),
    (sender(smtpUrl="relay.example.com:25"), "smtpUrl"),
    (sender(smtpUrl="smtp://"), "smtpUrl"),
    (sender(smtpUrl="smtp://relay.example.com:notaport"), "smtpUrl"),
    (sender(smtpUrl="smtp://relay.example.com:99999"), "smtpUrl"),
    (sender(smtpUrl="smtp://relay.example.com/path"), "smtpUrl"),
    (sender(smtpUrl="smtp://relay.example.com?starttls=maybe"), "smtpUrl"),
    (sender(smtpUrl="smtp://relay.example.com?tls=1"), "smtpUrl"),
    (sender(smtpUrl="smtp://:pw@relay.example.com"), "smtpUrl"),
    (sender(smtpUrl="smtp://relay example.com"), "smtpUrl"),
    (sender(smtpUrl=25), "smtpUrl"),
    (sender(extra="x"), "extra"),
])
async def test_bad_fields_are_400_naming_the_field(client, auth, body, field):
    resp = await client.put("/senders/alice", json=body, headers=auth)
    assert resp.status == 400
    error = await resp.json()
    assert error["error"] == "validation_error" and list(error["fields"]) == [field]
    assert sql("SELECT count(*) FROM senders") == [(0,)]


async def test_requests_that_are_not_a_sender_are_refused_like_everywhere_else(client, auth):
    # A bad sender id in the path
    resp = await client.put("/senders/bad%20id", json=sender(), headers=auth)
    assert resp.status == 400 and list((await resp.json())["fields"]) == ["senderId"]
    # Not JSON, bad JSON, not an object
    resp = await client.put("/senders/alice", data="fromAddress=a", headers=auth)
    assert resp.status == 415
    resp = await client.put("/senders/alice", data="{", headers={**auth, "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_json"
    resp = await client.put("/senders/alice", json=[sender()], headers=auth)
    assert resp.status == 400
    # No key, a wrong key
    assert (await client.put("/senders/alice", json=sender())).status == 401
    assert (await client.get("/senders/alice", headers={"Authorization": "Bearer wrong-key-123"})).status == 401
    # Another method
    resp = await client.delete("/senders/alice", headers=auth)
    assert resp.status == 405 and (await resp.json())["error"] == "method_not_allowed"
    # An unknown sender
    resp = await client.get("/senders/nobody", headers=auth)
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    assert sql("SELECT count(*) FROM senders") == [(0,)]


async def test_a_new_limit_is_the_cap_from_the_next_send(make_service, auth, sink):
    # Given a sender capped at 1 per window, that just sent one email
    service = await make_service(RATE_LIMIT_WINDOW_SECONDS="30")
    client = service.client
    await client.put("/senders/raised", json=sender(hourlyLimit=1), headers=auth)
    email = {"recipient": "u@example.com", "body": "b", "senderId": "raised"}
    assert (await client.post("/emails", json={**email, "subject": "first"}, headers=auth)).status == 201
    await async_wait_for(lambda: len(sink.arrivals) == 1, timeout_s=5, what="the first send")
    # When its limit is raised to 2, and another email is due now
    await client.put("/senders/raised", json=sender(hourlyLimit=2), headers=auth)
    assert (await client.post("/emails", json={**email, "subject": "second"}, headers=auth)).status == 201
    # Then it goes now, not a window later
    await async_wait_for(lambda: len(sink.arrivals) == 2, timeout_s=5, what="the second send")
    assert (await (await client.get("/senders/raised", headers=auth)).json())["usage"]["sentInWindow"] == 2
