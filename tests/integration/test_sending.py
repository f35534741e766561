"""An email scheduled over HTTP arrives at a real SMTP server at its time, once."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from tests.support.waiting import async_wait_for


def iso_in(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def email(**overrides) -> dict:
    payload = {"recipient": "user@example.com", "subject": "Welcome!", "body": "Hello there",
               "senderId": "sender_123"}
    payload.update(overrides)
    return payload


async def test_email_arrives_at_its_time_once_with_message_id_and_date(client, sink, auth):
    # Given an email scheduled 1.5 s ahead
    due = datetime.now(timezone.utc) + timedelta(seconds=1.5)
    resp = await client.post("/schedule-email", json=email(scheduledAt=due.isoformat()), headers=auth)
    assert resp.status == 201
    body = await resp.json()
    assert body["message"] == "Email scheduled" and body["status"] == "PENDING"
    # When it comes due
    await async_wait_for(lambda: sink.arrivals, timeout_s=10, what="the email at the sink")
    # Then it arrived once, not early, with a Message-ID and a Date
    time.sleep(0.5)
    arrivals = sink.arrivals
    assert len(arrivals) == 1
    arrival = arrivals[0]
    assert arrival.at >= due.timestamp() - 0.005
    assert arrival.at - due.timestamp() < 1.0, "more than a second late"
    assert arrival.rcpt_tos == ["user@example.com"]
    assert arrival.message["Message-ID"].startswith(f"<{body['jobId']}.")
    assert abs(parsedate_to_datetime(arrival.message["Date"]).timestamp() - arrival.at) < 5
    # And the row says SENT with the same Message-ID
    row = await (await client.get(f"/emails/{body['jobId']}", headers=auth)).json()
    assert row["status"] == "SENT" and row["attempts"] == 1
    assert row["messageId"] == arrival.message["Message-ID"]
