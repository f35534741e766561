"""DKIM on the running service: PUT a sender with a key, schedule, and verify what the SMTP sink received
with dkimpy against the public key served by a test DNS function; the key never shown, logged or in events;
bad keys refused; a key no configured Fernet key opens holds the email; the EHLO name the sink was given.
"""

from __future__ import annotations

import logging

import dkim
import pytest
from cryptography.fernet import Fernet

from tests.support import payloads
from tests.support.db import event_kinds, sql
from tests.support.dkim import dns_serving, folded_inside_a_name, rsa_pem, signed_headers
from tests.support.helo import is_literal_or_fqdn
from tests.support.waiting import async_wait_for

K1, K2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
REQUIRED = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type"}
HELO = "mail.coldmail-test.example"


def sender(**overrides) -> dict:
    body = {"fromAddress": "ann@example.com", "hourlyLimit": 100,
            "dkim": {"domain": "example.com", "selector": "s1", "privateKey": rsa_pem()}}
    body.update(overrides)
    return body


async def put(client, auth, body: dict, sender_id: str = "ann"):
    return await client.put(f"/senders/{sender_id}", json=body, headers=auth)


async def schedule(client, auth, subject: str, sender_id: str = "ann", **fields) -> int:
    resp = await client.post("/emails", json=payloads.email(subject, senderId=sender_id, **fields), headers=auth)
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["jobId"])


def key_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM key: none may show up anywhere."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


async def test_what_the_relay_received_verifies_and_fails_once_its_body_changes(make_service, sink, auth, caplog):
    caplog.set_level(logging.DEBUG)
    service = await make_service(COLDMAIL_SECRET_KEY=K1, SMTP_HELO_NAME=HELO)
    client = service.client
    # Given a sender with a DKIM key
    resp = await put(client, auth, sender())
    assert resp.status == 201, await resp.text()
    # When it sends an email
    email_id = await schedule(client, auth, "Signed, sealed, delivered",
                              body="<p>Hello</p><p>" + "a long line of the body " * 20 + "</p>")
    await async_wait_for(lambda: len(sink.arrivals) == 1, timeout_s=10, what="the send")
    raw = sink.arrivals[0].raw
    # Then the bytes the relay received verify with the key published under s1._domainkey.example.com
    dns = dns_serving("example.com", "s1", rsa_pem())
    assert raw.startswith(b"DKIM-Signature: ")
    assert dkim.verify(raw, dnsfunc=dns)
    # and a changed body, or another key under that name, does not
    assert not dkim.verify(raw.replace(b"Hello", b"Hallo", 1), dnsfunc=dns)
    assert not dkim.verify(raw, dnsfunc=dns_serving("example.com", "s1", rsa_pem(label="other")))
    # And it covers the headers a receiver checks, folded only between names
    assert REQUIRED <= set(signed_headers(raw))
    assert not folded_inside_a_name(raw)
    # And the EHLO the relay was given is SMTP_HELO_NAME
    assert sink.arrivals[0].helo == HELO
    # And the key shows up in no event and no log line
    events = sql("SELECT detail::text FROM email_events WHERE email_id = %s", email_id)
    for line in key_lines(rsa_pem()):
        assert line not in caplog.text and all(line not in detail for (detail,) in events)


async def test_get_shows_domain_selector_and_has_key_never_the_key(make_service, auth, caplog):
    caplog.set_level(logging.DEBUG)
    client = (await make_service(COLDMAIL_SECRET_KEY=K1)).client
    resp = await put(client, auth, sender())
    put_body = await resp.json()
    got = await (await client.get("/senders/ann", headers=auth)).json()
    for body in (put_body, got):
        assert body["dkim"] == {"domain": "example.com", "selector": "s1", "hasKey": True}
        assert body["secretReadable"] is True
    # Stored sealed with K1, never as it was given
    [(domain, selector, sealed)] = sql("SELECT dkim_domain, dkim_selector, dkim_key_enc FROM senders")
    assert (domain, selector) == ("example.com", "s1")
    assert "PRIVATE KEY" not in sealed and Fernet(K1).decrypt(sealed.encode()).decode() == rsa_pem()
    for line in key_lines(rsa_pem()):
        assert line not in caplog.text and line not in str(put_body) and line not in str(got)


async def test_a_round_trip_without_the_key_keeps_it_and_null_removes_it(make_service, auth):
    client = (await make_service(COLDMAIL_SECRET_KEY=K1)).client
    await put(client, auth, sender())
    [(sealed,)] = sql("SELECT dkim_key_enc FROM senders")
    # When the GET's dkim comes back without the key (and another selector)
    resp = await put(client, auth, sender(dkim={"domain": "example.com", "selector": "s2"}))
    # Then the stored key stays
    assert resp.status == 200 and (await resp.json())["dkim"] == {"domain": "example.com", "selector": "s2",
                                                                    "hasKey": True}
    assert sql("SELECT dkim_key_enc FROM senders") == [(sealed,)]
    # When dkim is null (or left out), DKIM is removed
    for body in (sender(dkim=None), {"fromAddress": "ann@example.com", "hourlyLimit": 100}):
        await put(client, auth, sender())
        resp = await put(client, auth, body)
        assert resp.status == 200 and (await resp.json())["dkim"] is None
        assert sql("SELECT dkim_domain, dkim_selector, dkim_key_enc FROM senders") == [(None, None, None)]
    # And dkim without a key for a sender that stores none is a 400
    resp = await put(client, auth, sender(dkim={"domain": "example.com", "selector": "s1"}))
    assert resp.status == 400 and "dkim.privateKey" in (await resp.json())["message"]


@pytest.mark.parametrize("dkim_field, field, says", [
    ({"domain": "example.com", "selector": "s1", "privateKey": "-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                                               "-----END PRIVATE KEY-----"},
     "privateKey", "not a readable PEM private key"),
    ({"domain": "example.com", "selector": "s1", "privateKey": ""}, "privateKey", "Length must be between"),
    ({"domain": "example.com", "selector": "s1", "privateKey": 42}, "privateKey", "Not a valid string"),
    ({"domain": "localhost", "selector": "s1", "privateKey": "x"}, "domain", "Not a domain name"),
    ({"domain": "example.com", "selector": "s 1", "privateKey": "x"}, "selector", "Not a DKIM selector"),
    ({"domain": "example.com", "selector": "s1", "privateKey": "x", "algo": "ed25519"}, "algo", "Unknown field"),
    ({"selector": "s1", "privateKey": "x"}, "domain", "Missing data"),
])
async def test_a_bad_dkim_field_is_a_400_naming_it(make_service, auth, dkim_field, field, says):
    client = (await make_service(COLDMAIL_SECRET_KEY=K1)).client
    resp = await put(client, auth, sender(dkim=dkim_field))
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "validation_error", body
    assert says in " ".join(body["fields"]["dkim"][field]), body
    assert sql("SELECT count(*) FROM senders") == [(0,)]


async def test_a_key_is_not_stored_without_a_secret_key(make_service, auth):
    client = (await make_service()).client
    resp = await put(client, auth, sender())
    assert resp.status == 400
    body = await resp.json()
    assert "COLDMAIL_SECRET_KEY" in body["message"] and "DKIM key" in body["message"]
    assert sql("SELECT count(*) FROM senders") == [(0,)]


async def test_a_key_no_configured_key_opens_holds_the_email_until_it_is_back(make_service, sink, auth):
    # Given a sender whose DKIM key was sealed with K1
    service = await make_service(COLDMAIL_SECRET_KEY=K1)
    await put(service.client, auth, sender())
    await service.client.close()
    # When the service runs with K2 only and the sender sends
    service = await make_service(COLDMAIL_SECRET_KEY=K2, RETRY_BACKOFF_SECONDS="60", RETRY_BACKOFF_MAX_SECONDS="120")
    client = service.client
    assert (await (await client.get("/senders/ann", headers=auth)).json())["secretReadable"] is False
    held_id = await schedule(client, auth, "not unsigned")
    # Then the email is held: PENDING, no attempt spent, nothing sent (never sent unsigned)
    await async_wait_for(lambda: "held" in event_kinds(held_id), timeout_s=10, what="the hold")
    [(status, attempts, last_error)] = sql("SELECT status, attempts, last_error FROM emails WHERE id = %s", held_id)
    assert (status, attempts) == ("PENDING", 0) and "DKIM key" in last_error
    assert sink.arrivals == []
    await client.close()
    # When K1 is back (after K2) and the service restarts, the held email goes at once, signed
    client = (await make_service(COLDMAIL_SECRET_KEY=f"{K2},{K1}", RETRY_BACKOFF_SECONDS="60",
                                 RETRY_BACKOFF_MAX_SECONDS="120")).client
    await async_wait_for(lambda: len(sink.arrivals) == 1, timeout_s=10, what="the send once K1 is back")
    assert dkim.verify(sink.arrivals[0].raw, dnsfunc=dns_serving("example.com", "s1", rsa_pem()))


async def test_without_smtp_helo_name_ehlo_is_never_localhost(make_service, sink, auth):
    client = (await make_service()).client
    await schedule(client, auth, "who is calling", sender_id="s1")
    await async_wait_for(lambda: len(sink.arrivals) == 1, timeout_s=10, what="the send")
    helo = sink.arrivals[0].helo
    assert helo and "localhost" not in helo.lower() and is_literal_or_fqdn(helo), helo


async def test_rotate_secrets_reseals_the_dkim_key_and_the_password_and_the_check_sees_both(make_service, auth):
    from coldmail.crypto import PasswordBox
    from coldmail.stored_secrets import check_at_start, rotate

    # Given a sender with a password and a DKIM key sealed with K1, and one with a DKIM key only
    client = (await make_service(COLDMAIL_SECRET_KEY=K1)).client
    resp = await put(client, auth, sender(smtpUrl="smtp://ann:pw@127.0.0.1:2525?starttls=never"))
    assert resp.status == 201, await resp.text()
    await put(client, auth, sender(), sender_id="bea")
    # Then under K2 alone both are unreadable: a DKIM key no key opens counts as a password does
    assert set(check_at_start(PasswordBox((K2,))).unreadable) == {("default", "ann"), ("default", "bea")}
    # When the secrets are rotated to K2 (K1 still configured)
    rotation = rotate(PasswordBox((K2, K1)))
    # Then all three are sealed with K2, each still the same secret
    assert rotation.resealed == 3 and rotation.unreadable == []
    [(password, ann_key)] = sql("SELECT smtp_password_enc, dkim_key_enc FROM senders WHERE id = 'ann'")
    [(bea_key,)] = sql("SELECT dkim_key_enc FROM senders WHERE id = 'bea'")
    assert Fernet(K2).decrypt(password.encode()) == b"pw"
    assert Fernet(K2).decrypt(ann_key.encode()).decode() == Fernet(K2).decrypt(bea_key.encode()).decode() == rsa_pem()
    assert check_at_start(PasswordBox((K2,))).unreadable == []
