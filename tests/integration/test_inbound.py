"""POST /inbound on the running service (API, scheduler, an in-process worker sending to the aiosmtpd sink): each
kind of inbound message (tests/fixtures/inbound) about an email that was really sent, and what it changes: a
bounce (DSNs of Postfix, Exim, Gmail, Microsoft 365) fails it BOUNCED and suppresses the address, a delay notice
changes nothing, a complaint suppresses, an auto-reply lets the sequence go on, a reply (to the first email or to
a follow-up in its thread) cancels the sequence's PENDING follow-ups. The same message twice changes nothing the
second time, and another account's message matches nothing.
"""

from __future__ import annotations

from email import message_from_bytes
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.conftest import API_KEY
from tests.support.db import event_kinds, sql
from tests.support.payloads import email
from tests.support.waiting import async_wait_for

FIXTURES = Path(__file__).parent.parent / "fixtures" / "inbound"
FAR = "2099-01-01T00:00:00Z"
JANE = "jane@example.net"
FROM = "ann@example.org"
RFC822 = {"Content-Type": "message/rfc822"}
OTHER_KEY = "other-key-0123456789"


def fixture(name: str, **values: str) -> bytes:
    """A fixture with its {{NAME}}s filled in, with CRLF line ends as on the wire."""
    text = (FIXTURES / name).read_text()
    for key, value in values.items():
        text = text.replace("{{%s}}" % key, value)
    assert "{{" not in text, f"{name}: a placeholder was not given"
    return text.replace("\n", "\r\n").encode()


@pytest.fixture
async def svc(make_service):
    return await make_service(COLDMAIL_API_KEYS=f"{API_KEY},other:{OTHER_KEY}",
                              COLDMAIL_SECRET_KEY=Fernet.generate_key().decode())


@pytest.fixture
def client(svc):
    return svc.client


async def schedule(client, auth, *, expect: int = 201, **fields) -> int | dict:
    resp = await client.post("/emails", json=email(**{"recipient": JANE, "senderId": "ann", **fields}),
                             headers=auth)
    assert resp.status == expect, await resp.text()
    body = await resp.json()
    return body["jobId"] if expect == 201 else body


async def shown(client, auth, email_id: int) -> dict:
    resp = await client.get(f"/emails/{email_id}", headers=auth)
    assert resp.status == 200
    return await resp.json()


async def sent(client, auth, **fields) -> dict:
    """An email scheduled now and sent to the sink; the email as GET shows it."""
    email_id = await schedule(client, auth, **fields)

    async def done():
        row = await shown(client, auth, email_id)
        return row if row["status"] == "SENT" else None

    return await async_wait_for(done, timeout_s=15, what=f"email {email_id} SENT")


async def post_inbound(client, auth, raw: bytes, expect: int = 200) -> dict:
    resp = await client.post("/inbound", data=raw, headers={**auth, **RFC822})
    assert resp.status == expect, await resp.text()
    return await resp.json()


def about(row: dict, **more: str) -> dict[str, str]:
    return {"MESSAGE_ID": row["messageId"], "EMAIL_ID": str(row["id"]), "RECIPIENT": row["recipient"],
            "FROM": FROM, **more}


async def put_sender(client, auth) -> None:
    resp = await client.put("/senders/ann", json={"fromAddress": FROM, "hourlyLimit": 1000}, headers=auth)
    assert resp.status in (200, 201), await resp.text()


async def subscribe(client, auth, *events: str) -> None:
    resp = await client.post("/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": list(events)},
                             headers=auth)
    assert resp.status == 201, await resp.text()


def outbox_rows(email_id: int) -> list[tuple[str, dict]]:
    return sql("SELECT event_type, payload->'data' FROM webhook_deliveries "
               "WHERE (payload->'data'->'email'->>'id')::bigint = %s ORDER BY id", email_id)


def suppression(address: str) -> tuple | None:
    rows = sql("SELECT reason, email_id FROM suppressions WHERE address = %s", address)
    return rows[0] if rows else None


# -- bounces ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dsn-postfix.eml", "dsn-exim.eml", "dsn-gmail.eml", "dsn-m365.eml"])
async def test_a_dsn_with_a_failed_recipient_bounces_the_email_and_suppresses_the_address(client, auth, name):
    # Given a sent email, a later one to the same address, and an endpoint subscribed to email.bounced
    await put_sender(client, auth)
    await subscribe(client, auth, "email.bounced")
    first = await sent(client, auth)
    later = await schedule(client, auth, scheduledAt=FAR)
    # When the relay's DSN for it is handed over
    answer = await post_inbound(client, auth, fixture(name, **about(first)))
    # Then it is a bounce of that email: BOUNCED, a bounced event naming the status, email.bounced written
    assert answer == {"kind": "bounce", "emailId": first["id"]}
    row = await shown(client, auth, first["id"])
    assert row["status"] == "BOUNCED" and row["lastError"].startswith("5.1.1")
    detail = sql("SELECT detail FROM email_events WHERE email_id = %s AND kind = 'bounced'", first["id"])[0][0]
    assert detail["status"] in ("5.1.1", "5.1.10") and detail["recipient"] == JANE
    assert [kind for kind, _ in outbox_rows(first["id"])] == ["email.bounced"]
    # And the address is suppressed for the bounce, which stops the later email
    assert suppression(JANE) == ("bounced", first["id"])
    assert (await shown(client, auth, later))["status"] == "SUPPRESSED"


async def test_an_exim_bounce_is_a_bounce_whatever_version_its_received_header_names(client, auth):
    # Given a sent email, and Exim's bounce for it from a relay whose Received header names Exim 4.97.1, and
    # whose report names the recipient's host 10.2.4.5: dotted numbers that look like a 4.x.x or 2.x.x status,
    # before the report's 5.1.1
    await put_sender(client, auth)
    first = await sent(client, auth)
    raw = fixture("dsn-exim.eml", **about(first)).replace(b"with local (Exim 4.97)", b"with local (Exim 4.97.1)", 1)
    raw = raw.replace(b"[192.0.2.25]", b"[10.2.4.5]")
    # When it is handed over
    answer = await post_inbound(client, auth, raw)
    # Then it is a bounce of that email with the report's status, and the address is suppressed
    assert answer == {"kind": "bounce", "emailId": first["id"]}
    assert (await shown(client, auth, first["id"]))["lastError"].startswith("5.1.1")
    assert suppression(JANE) == ("bounced", first["id"])


QMAIL_BOUNCE = """Return-Path: <>
Date: 4 Dec 2026 17:33:00 -0000
From: Syst\xe8me de messagerie <MAILER-DAEMON@relay.example.org>
To: {FROM}
Subject: failure notice
Message-ID: <20261204173300.qmail-1@relay.example.org>

Hi. This is the qmail-send program at relay.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<{RECIPIENT}>:
192.0.2.25 does not like recipient.
Remote host said: 550 5.1.1 <{RECIPIENT}>: Recipient address rejected: User unknown
Giving up on 192.0.2.25.

--- Below this line is a copy of the message.

Return-Path: <{FROM}>
From: {FROM}
To: {RECIPIENT}
Subject: Quick question
Message-ID: {MESSAGE_ID}
X-Coldmail-Id: {EMAIL_ID}

Hello
"""


async def test_a_qmail_bounce_whose_from_has_an_8bit_byte_is_a_bounce(client, auth):
    # Given a sent email, and qmail's bounce for it from a daemon whose From names it in raw Latin-1 (an 8-bit
    # byte, as a localized mail system writes it: the email package reads such a header as a Header object)
    await put_sender(client, auth)
    first = await sent(client, auth)
    raw = QMAIL_BOUNCE.format(**about(first)).replace("\n", "\r\n").encode("latin-1")
    # When it is handed over
    answer = await post_inbound(client, auth, raw)
    # Then it is a bounce of that email (flufl.bounce's detectors are given headers they can read)
    assert answer == {"kind": "bounce", "emailId": first["id"]}
    assert suppression(JANE) == ("bounced", first["id"])


async def test_a_dsn_for_a_delayed_recipient_is_not_a_bounce(client, auth):
    first = await sent(client, auth)
    answer = await post_inbound(client, auth, fixture("dsn-postfix-delayed.eml", **about(first)))
    assert answer == {"kind": "unmatched", "emailId": None}
    assert (await shown(client, auth, first["id"]))["status"] == "SENT"
    assert suppression(JANE) is None and "bounced" not in event_kinds(first["id"])


# -- complaints and auto-replies -------------------------------------------------------------------------------

async def test_an_arf_report_records_a_complaint_and_suppresses_the_address(client, auth):
    await put_sender(client, auth)
    await subscribe(client, auth, "email.complained")
    first = await sent(client, auth)
    answer = await post_inbound(client, auth, fixture("arf.eml", **about(first)))
    assert answer == {"kind": "complaint", "emailId": first["id"]}
    assert event_kinds(first["id"])[-1] == "complained"
    assert (await shown(client, auth, first["id"]))["status"] == "SENT"
    assert suppression(JANE) == ("complained", first["id"])
    [(kind, data)] = outbox_rows(first["id"])
    assert kind == "email.complained" and data["feedbackType"] == "abuse"


@pytest.mark.parametrize("name", ["auto-reply-rfc3834.eml", "auto-reply-exchange.eml", "auto-reply-x-autoreply.eml"])
async def test_an_auto_reply_is_recorded_and_the_sequence_goes_on(client, auth, name):
    await put_sender(client, auth)
    first = await sent(client, auth, sequence="intro")
    follow_up = await schedule(client, auth, sequence="intro", inReplyTo=first["id"], scheduledAt=FAR)
    answer = await post_inbound(client, auth, fixture(name, **about(first)))
    assert answer == {"kind": "auto_reply", "emailId": first["id"]}
    assert event_kinds(first["id"])[-1] == "auto_replied"
    assert (await shown(client, auth, first["id"]))["repliedAt"] is None
    assert (await shown(client, auth, follow_up))["status"] == "PENDING"


# -- replies ---------------------------------------------------------------------------------------------------

async def test_a_reply_to_the_first_email_cancels_the_pending_follow_ups_of_its_sequence_and_sender(client, auth):
    # Given a sent first email of sequence "intro", two follow-ups in its thread, and emails a reply must not stop
    await put_sender(client, auth)
    await subscribe(client, auth, "email.replied", "email.cancelled")
    first = await sent(client, auth, sequence="intro")
    follow_ups = [await schedule(client, auth, sequence="intro", inReplyTo=first["id"], scheduledAt=FAR)
                  for _ in range(2)]
    other_sequence = await schedule(client, auth, sequence="newsletter", scheduledAt=FAR)
    other_sender = await schedule(client, auth, sequence="intro", senderId="bob", scheduledAt=FAR)
    keeps_going = await schedule(client, auth, sequence="intro", stopOnReply=False, scheduledAt=FAR)
    other_recipient = await schedule(client, auth, sequence="intro", recipient="joe@example.net", scheduledAt=FAR)
    # When Jane replies to the first email
    answer = await post_inbound(client, auth, fixture("reply-first.eml", **about(first)))
    # Then it is a reply to it, shown with when it came
    assert answer == {"kind": "reply", "emailId": first["id"]}
    replied = await shown(client, auth, first["id"])
    assert replied["repliedAt"] is not None and replied["status"] == "SENT"
    assert event_kinds(first["id"])[-1] == "replied"
    assert [kind for kind, _ in outbox_rows(first["id"])] == ["email.replied"]
    # And both follow-ups are CANCELLED for the reply, each with its email.cancelled
    for follow_up in follow_ups:
        assert (await shown(client, auth, follow_up))["status"] == "CANCELLED"
        detail = sql("SELECT detail FROM email_events WHERE email_id = %s AND kind = 'cancelled'", follow_up)[0][0]
        assert detail == {"reason": "replied", "replyTo": first["id"]}
        [(kind, data)] = outbox_rows(follow_up)
        assert kind == "email.cancelled" and data["reason"] == "replied"
    # And nothing else stopped
    for email_id in (other_sequence, other_sender, keeps_going, other_recipient):
        assert (await shown(client, auth, email_id))["status"] == "PENDING"


async def test_a_reply_to_a_follow_up_in_the_thread_stops_the_rest_of_the_sequence(client, auth, sink):
    # Given a first email and a follow-up, both sent, the follow-up in the first's thread
    await put_sender(client, auth)
    first = await sent(client, auth, sequence="intro", subject="Quick question")
    second = await sent(client, auth, sequence="intro", inReplyTo=first["id"], subject="Re: Quick question")
    third = await schedule(client, auth, sequence="intro", inReplyTo=second["id"], scheduledAt=FAR)
    [on_wire] = [a.message for a in sink.arrivals if a.message["Message-ID"] == second["messageId"]]
    assert on_wire["In-Reply-To"] == first["messageId"] and on_wire["References"] == first["messageId"]
    # When Jane replies to the follow-up (her References name both)
    answer = await post_inbound(client, auth, fixture(
        "reply-followup.eml", **about(first, FOLLOWUP_MESSAGE_ID=second["messageId"])))
    # Then the reply is to the follow-up, and the third email of the sequence is cancelled
    assert answer == {"kind": "reply", "emailId": second["id"]}
    assert (await shown(client, auth, third))["status"] == "CANCELLED"
    assert (await shown(client, auth, first["id"]))["repliedAt"] is None


async def test_a_third_email_continues_the_whole_thread(client, auth, sink):
    await put_sender(client, auth)
    first = await sent(client, auth, sequence="intro")
    second = await schedule(client, auth, sequence="intro", inReplyTo=first["id"], scheduledAt=FAR)
    # the second is not sent yet: the third names the Message-ID it will be sent with
    third = await sent(client, auth, sequence="intro", inReplyTo=second)
    [on_wire] = [a.message for a in sink.arrivals if a.message["Message-ID"] == third["messageId"]]
    second_id = on_wire["In-Reply-To"]
    assert second_id.startswith(f"<{second}.") and second_id.endswith(".coldmail@example.org>")
    assert on_wire["References"].split() == [first["messageId"], second_id]


async def test_a_human_reply_with_an_away_subject_is_a_reply(client, auth):
    await put_sender(client, auth)
    first = await sent(client, auth, sequence="intro")
    follow_up = await schedule(client, auth, sequence="intro", inReplyTo=first["id"], scheduledAt=FAR)
    answer = await post_inbound(client, auth, fixture("reply-away-subject.eml", **about(first)))
    assert answer == {"kind": "reply", "emailId": first["id"]}
    assert (await shown(client, auth, follow_up))["status"] == "CANCELLED"


async def test_a_message_that_names_none_of_our_emails_is_unmatched(client, auth):
    await put_sender(client, auth)
    first = await sent(client, auth, sequence="intro")
    assert await post_inbound(client, auth, fixture("unrelated.eml", FROM=FROM)) == {"kind": "unmatched",
                                                                                     "emailId": None}
    stranger = fixture("reply-first.eml", **about(first, MESSAGE_ID="<somebody-else@example.com>"))
    assert await post_inbound(client, auth, stranger) == {"kind": "unmatched", "emailId": None}
    assert event_kinds(first["id"])[-1] == "sent"


# -- once, and one account's ---------------------------------------------------------------------------------

async def test_the_same_message_twice_changes_nothing_the_second_time(client, auth):
    await put_sender(client, auth)
    await subscribe(client, auth, "email.replied", "email.cancelled")
    first = await sent(client, auth, sequence="intro")
    await schedule(client, auth, sequence="intro", inReplyTo=first["id"], scheduledAt=FAR)
    reply = fixture("reply-first.eml", **about(first))
    answers = [await post_inbound(client, auth, reply) for _ in range(2)]
    assert answers == [{"kind": "reply", "emailId": first["id"]}] * 2
    assert event_kinds(first["id"]).count("replied") == 1
    assert sql("SELECT count(*) FROM webhook_deliveries")[0][0] == 2  # one email.replied, one email.cancelled
    # a message without a Message-ID is known by its bytes
    bare = b"\r\n".join(line for line in reply.split(b"\r\n") if not line.startswith(b"Message-ID:"))
    bare = bare.replace(b"Subject: Re:", b"Subject: Re: (again)")
    assert (await post_inbound(client, auth, bare))["kind"] == "reply"
    assert (await post_inbound(client, auth, bare))["kind"] == "reply"
    assert event_kinds(first["id"]).count("replied") == 2
    assert sql("SELECT count(*) FROM inbound_messages")[0][0] == 2


async def test_another_accounts_message_matches_nothing(client, auth):
    await put_sender(client, auth)
    first = await sent(client, auth, sequence="intro")
    follow_up = await schedule(client, auth, sequence="intro", inReplyTo=first["id"], scheduledAt=FAR)
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    for name in ("reply-first.eml", "dsn-postfix.eml", "arf.eml"):
        assert await post_inbound(client, other, fixture(name, **about(first))) == {
            "kind": {"reply-first.eml": "unmatched", "dsn-postfix.eml": "bounce", "arf.eml": "complaint"}[name],
            "emailId": None}
    assert (await shown(client, auth, first["id"]))["status"] == "SENT"
    assert (await shown(client, auth, follow_up))["status"] == "PENDING"
    assert sql("SELECT count(*) FROM suppressions")[0][0] == 0
    # and the account's own delivery of the same reply still counts: the dedupe is per account
    assert (await post_inbound(client, auth, fixture("reply-first.eml", **about(first))))["kind"] == "reply"


async def test_a_message_read_from_a_senders_mailbox_matches_that_senders_emails_only(client, auth):
    # Given Jane's reply to an email of sender ann
    await put_sender(client, auth)
    first = await sent(client, auth, sequence="intro")
    raw = fixture("reply-first.eml", **about(first))
    # When the mailbox poller of sender bob hands it over, it matches nothing; ann's poller matches it
    from coldmail.inbound import receive
    assert (receive("default", raw, sender_id="bob").kind, receive("other", raw).kind) == ("unmatched", "unmatched")
    received = receive("default", raw.replace(b"Message-ID: <CAJx", b"Message-ID: <again-CAJx"), sender_id="ann")
    assert (received.kind, received.email_id) == ("reply", first["id"])


async def test_a_reply_read_first_from_another_senders_mailbox_still_stops_the_sequence(client, auth):
    # Given senders ann and bob reading one shared mailbox, and ann's sent email with a pending follow-up
    await put_sender(client, auth)
    first = await sent(client, auth, sequence="intro")
    follow_up = await schedule(client, auth, sequence="intro", inReplyTo=first["id"], scheduledAt=FAR)
    raw = fixture("reply-first.eml", **about(first))
    from coldmail.inbound import receive
    # When bob's poller reads Jane's reply first (it names none of bob's emails), then ann's poller reads it
    assert receive("default", raw, sender_id="bob").kind == "unmatched"
    received = receive("default", raw, sender_id="ann")
    # Then it is a reply to ann's email, and the follow-up is cancelled
    assert (received.kind, received.email_id) == ("reply", first["id"])
    assert (await shown(client, auth, follow_up))["status"] == "CANCELLED"
    # And once it found its email, the same message again changes nothing
    again = receive("default", raw, sender_id="ann")
    assert (again.kind, again.email_id) == ("reply", first["id"])
    assert event_kinds(first["id"]).count("replied") == 1
    assert sql("SELECT count(*) FROM inbound_messages")[0][0] == 1


# -- bad input -------------------------------------------------------------------------------------------------

async def test_inbound_refuses_what_is_not_one_message(client, auth):
    resp = await client.post("/inbound", data=b"From: a@example.com\r\n\r\nhi", headers={
        **auth, "Content-Type": "text/plain"})
    assert resp.status == 415 and (await resp.json())["error"] == "unsupported_media_type"
    for junk in (b"", b"   \r\n", b"just some words\r\nand more", b"\x00\x01\x02"):
        body = await post_inbound(client, auth, junk, expect=400)
        assert body["error"] == "bad_request"
    resp = await client.post("/inbound", data=b"Subject: x\r\n\r\n" + b"a" * (10 * 2**20), headers={**auth, **RFC822})
    assert resp.status == 413 and (await resp.json())["error"] == "payload_too_large"
    resp = await client.post("/inbound", data=fixture("unrelated.eml", FROM=FROM), headers=RFC822)
    assert resp.status == 401


async def test_in_reply_to_must_be_an_earlier_email_of_the_account_to_the_same_recipient(client, auth):
    first = await schedule(client, auth, scheduledAt=FAR)
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    theirs = (await (await client.post("/emails", json=email(recipient=JANE, scheduledAt=FAR),
                                       headers=other)).json())["jobId"]
    for fields, message in (({"inReplyTo": 999999}, "no email with id 999999"),
                            ({"inReplyTo": theirs}, f"no email with id {theirs}"),
                            ({"inReplyTo": first, "recipient": "joe@example.net"}, "another recipient")):
        body = await schedule(client, auth, expect=400, **fields)
        assert message in body["fields"]["inReplyTo"][0]
    for bad in ({"inReplyTo": "1"}, {"inReplyTo": 0}, {"sequence": ""}, {"sequence": "x" * 129},
                {"sequence": "a\nb"}, {"stopOnReply": "yes"}):
        body = await schedule(client, auth, expect=400, **bad)
        assert set(body["fields"]) == set(bad)
    body = await schedule(client, auth, expect=400, stopOnReply=True)
    assert "needs a sequence" in body["fields"]["stopOnReply"][0]
    # a batch names the index
    resp = await client.post("/emails/batch", json={"emails": [
        email(recipient=JANE, inReplyTo=first), email(recipient="joe@example.net", inReplyTo=first)]}, headers=auth)
    assert resp.status == 400
    assert list((await resp.json())["fields"]["emails"]) == ["1"]
    assert sql("SELECT count(*) FROM emails")[0][0] == 2


async def test_a_sequence_is_shown_and_listed_a_page_at_a_time(client, auth):
    first = await schedule(client, auth, sequence="intro", scheduledAt=FAR)
    ids = [first] + [await schedule(client, auth, sequence="intro", inReplyTo=first, scheduledAt=FAR)
                     for _ in range(4)]
    await schedule(client, auth, sequence="other", scheduledAt=FAR)
    plain_id = await schedule(client, auth, scheduledAt=FAR)
    batch = await client.post("/emails/batch", json={"emails": [
        email(recipient=JANE, sequence="intro", inReplyTo=first, stopOnReply=False, scheduledAt=FAR)]}, headers=auth)
    assert batch.status == 201
    ids.append((await batch.json())["jobIds"][0])
    row = await shown(client, auth, ids[1])
    assert (row["sequence"], row["stopOnReply"], row["inReplyTo"], row["repliedAt"]) == ("intro", True, first, None)
    assert (await shown(client, auth, ids[-1]))["stopOnReply"] is False
    plain = await shown(client, auth, plain_id)
    assert plain["sequence"] is None and plain["stopOnReply"] is False
    seen, after = [], None
    while True:
        query = "/emails?sequence=intro&limit=4" + (f"&after={after}" if after else "")
        page = await (await client.get(query, headers=auth)).json()
        seen += [item["id"] for item in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert seen == sorted(ids, reverse=True)
    resp = await client.get("/emails?sequence=", headers=auth)
    assert resp.status == 400 and "sequence" in (await resp.json())["fields"]


async def test_a_one_click_unsubscribe_writes_email_unsubscribed(client, auth, sink):
    await put_sender(client, auth)
    await subscribe(client, auth, "email.unsubscribed")
    first = await sent(client, auth)
    [on_wire] = [a.message for a in sink.arrivals if a.message["Message-ID"] == first["messageId"]]
    path = "/u/" + on_wire["List-Unsubscribe"].strip("<> \r\n\t").rsplit("/u/", 1)[1]
    for _ in range(2):  # posted twice, written once
        resp = await client.post(path, data="List-Unsubscribe=One-Click",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status == 200, await resp.text()
    [(kind, data)] = outbox_rows(first["id"])
    assert kind == "email.unsubscribed" and data["suppressionReason"] == "unsubscribed"
    assert data["email"]["id"] == first["id"]


def test_fixtures_are_messages_the_email_package_reads_without_defects():
    for path in FIXTURES.glob("*.eml"):
        message = message_from_bytes(path.read_bytes())
        assert message["From"] and not message.defects, path.name


async def test_inbound_answers_400_or_200_never_500_to_odd_header_bytes(client, auth):
    # Given messages whose Message-ID holds a byte that is no ASCII, or a NUL, as a broken mailer may send
    odd = [b"From: a@example.com\r\nMessage-ID: <ab\xffc@example.com>\r\nSubject: hi\r\n\r\nbody",
           b"From: a@example.com\r\nMessage-ID: <ab\x00c@example.com>\r\nSubject: hi\r\n\r\nbody",
           b"From: a@example.com\r\nMessage-ID: <abc@example.com>\r\nIn-Reply-To: <x\x00y@example.com>\r\n"
           b"Subject: h\x00i\r\n\r\nbody"]
    for raw in odd:
        # When each is handed over
        resp = await client.post("/inbound", data=raw, headers={**auth, **RFC822})
        # Then the answer is a JSON 200 or 400, not a 500
        assert resp.status in (200, 400), await resp.text()


async def test_a_message_nested_too_deep_to_read_is_a_400_not_a_500(client, auth):
    # Given a message of 3000 multiparts one inside the other (100 KB; the email package recurses per level)
    depth = 3000
    raw = (b"From: a@example.com\r\nMessage-ID: <deep@example.com>\r\n"
           + b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth))
           + b"Content-Type: text/plain\r\n\r\nhi\r\n"
           + b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth))))
    # When it is handed over
    body = await post_inbound(client, auth, raw, expect=400)
    # Then it is refused as a message that cannot be read (the mailbox poller skips such a one), not a 500
    assert body["error"] == "bad_request" and "deep" in body["message"]


async def test_a_message_id_too_long_for_an_index_is_still_taken_once(client, auth):
    # Given a message whose Message-ID is 8000 characters of random text (no limit but the line's; a btree
    # index entry takes about 2.7 KB at most)
    import secrets
    long_id = f"<{secrets.token_hex(4000)}@example.com>"
    raw = f"From: a@example.com\r\nMessage-ID: {long_id}\r\nSubject: hi\r\n\r\nbody".encode()
    # When it is handed over twice
    answers = [await post_inbound(client, auth, raw) for _ in range(2)]
    # Then it is taken (unmatched) both times, and recorded once
    assert answers == [{"kind": "unmatched", "emailId": None}] * 2
    assert sql("SELECT count(*) FROM inbound_messages")[0][0] == 1


async def test_a_returned_x_coldmail_id_that_is_no_ascii_number_matches_nothing_and_is_no_500(client, auth):
    # Given a DSN whose returned headers (text/rfc822-headers, base64) name X-Coldmail-Id "²", a character
    # Python's str.isdigit() takes but int() does not
    import base64
    headers = base64.b64encode("Message-ID: <nobody@example.com>\r\nX-Coldmail-Id: ²\r\n".encode()).decode()
    raw = ("From: MAILER-DAEMON@relay.example.org\r\nMessage-ID: <dsn-1@relay.example.org>\r\n"
           "Content-Type: multipart/report; report-type=delivery-status; boundary=BB\r\n\r\n"
           "--BB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example.org\r\n\r\n"
           "Final-Recipient: rfc822; jane@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
           "--BB\r\nContent-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           f"{headers}\r\n--BB--\r\n").encode()
    # When it is handed over
    answer = await post_inbound(client, auth, raw)
    # Then it is a bounce of none of the account's emails, not a 500
    assert answer == {"kind": "bounce", "emailId": None}
