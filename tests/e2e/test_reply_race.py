"""Replies racing real worker processes: `run.py api` and a Dramatiq worker process send follow-ups at their
time while POST /inbound hands over the recipient's reply at that same moment. Whatever the order, a follow-up
is either cancelled for the reply (and never reaches the relay) or was claimed before the reply's cancel
committed; none is claimed after /inbound has answered."""

from __future__ import annotations

import json
import random
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import API_KEY
from tests.support.db import sql
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

ROUNDS = 60
SPACING_S = 0.25


def post_inbound(base_url: str, raw: bytes) -> dict:
    req = urllib.request.Request(base_url + "/inbound", data=raw, method="POST", headers={
        "Content-Type": "message/rfc822", "Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def reply(n: int, message_id: str) -> bytes:
    return (f"From: person{n}@example.net\r\nTo: ann@example.org\r\nSubject: Re: hello\r\n"
            f"Message-ID: <race-reply-{n}@example.net>\r\nIn-Reply-To: {message_id}\r\n"
            f"References: {message_id}\r\nDate: Fri, 04 Dec 2026 18:10:00 +0000\r\n\r\nYes.\r\n").encode()


def batch(http, emails: list[dict]) -> list[int]:
    status, body = http.post("/emails/batch", {"emails": emails})
    assert status == 201, body
    return body["jobIds"]


def test_a_follow_up_due_as_the_reply_comes_is_cancelled_or_was_claimed_before(api_and_worker, http, sink):
    # Given first emails of a sequence to ROUNDS recipients, sent
    assert http.request("PUT", "/senders/ann", {"fromAddress": "ann@example.org", "hourlyLimit": 100000})[0] in (
        200, 201)
    firsts = batch(http, [{"recipient": f"person{n}@example.net", "subject": "hello", "body": "Hi",
                           "senderId": "ann", "sequence": "intro"} for n in range(ROUNDS)])
    wait_for(lambda: sql("SELECT count(*) FROM emails WHERE status = 'SENT'")[0][0] == ROUNDS, timeout_s=30,
             what="first emails sent")
    message_ids = dict(sql("SELECT id, message_id FROM emails WHERE id = ANY(%s)", firsts))
    # And a follow-up to each, due one after the other
    start = datetime.now(timezone.utc) + timedelta(seconds=3)
    due = [start + timedelta(seconds=n * SPACING_S) for n in range(ROUNDS)]
    follow_ups = batch(http, [{"recipient": f"person{n}@example.net", "subject": "bump", "body": "Hi again",
                               "senderId": "ann", "sequence": "intro", "inReplyTo": firsts[n],
                               "scheduledAt": due[n].isoformat()} for n in range(ROUNDS)])
    # When each recipient's reply is handed over at about the moment their follow-up is due
    answered: list[float] = []
    for n in range(ROUNDS):
        time.sleep(max(0.0, due[n].timestamp() + random.uniform(-0.06, 0.02) - time.time()))
        assert post_inbound(http.base_url, reply(n, message_ids[firsts[n]])) == {"kind": "reply",
                                                                                 "emailId": firsts[n]}
        answered.append(time.time())
    wait_for(lambda: sql("SELECT count(*) FROM emails WHERE id = ANY(%s) AND status IN ('SENT', 'CANCELLED')",
                         follow_ups)[0][0] == ROUNDS, timeout_s=20, what="follow-ups settled")
    time.sleep(1.0)
    # Then each follow-up was cancelled and never sent, or claimed before the reply was answered, and sent
    arrived = {int(a.message["X-Coldmail-Id"]) for a in sink.arrivals}
    status = dict(sql("SELECT id, status FROM emails WHERE id = ANY(%s)", follow_ups))
    claimed_at = dict(sql("SELECT email_id, extract(epoch FROM min(created_at))::float FROM email_events "
                          "WHERE email_id = ANY(%s) AND kind = 'claimed' GROUP BY email_id", follow_ups))
    cancelled = [f for f in follow_ups if status[f] == "CANCELLED"]
    for n, follow_up in enumerate(follow_ups):
        if status[follow_up] == "CANCELLED":
            assert follow_up not in arrived and follow_up not in claimed_at, n
        else:
            assert status[follow_up] == "SENT" and follow_up in arrived, n
            assert claimed_at[follow_up] <= answered[n], (n, claimed_at[follow_up], answered[n])
    print(f"{ROUNDS} rounds: {len(cancelled)} cancelled, {ROUNDS - len(cancelled)} claimed first and sent")
    assert cancelled
