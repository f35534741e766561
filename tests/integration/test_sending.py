"""An email scheduled over HTTP arrives at a real SMTP server at its time, once."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from tests.support.clock import iso_in
from tests.support.payloads import email
from tests.support.waiting import async_wait_for


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


async def test_html_goes_out_as_multipart_alternative_with_plain_text(client, sink, auth):
    resp = await client.post("/emails", json=email(body="<h1>Hello</h1><p>Read <b>this</b></p>"), headers=auth)
    assert resp.status == 201
    await async_wait_for(lambda: sink.arrivals, timeout_s=10, what="the email at the sink")
    message = sink.arrivals[0].message
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Hello" in plain and "Read this" in plain and "<" not in plain
    assert "<h1>Hello</h1>" in html


async def test_plain_body_goes_out_as_text_plain(client, sink, auth):
    await client.post("/emails", json=email(body="Just text, 2 < 3"), headers=auth)
    await async_wait_for(lambda: sink.arrivals, timeout_s=10, what="the email at the sink")
    message = sink.arrivals[0].message
    assert message.get_content_type() == "text/plain"
    assert message.get_content().strip() == "Just text, 2 < 3"


async def test_without_smtp_url_the_message_is_written_to_the_outbox(make_service, auth, tmp_path):
    # Given no SMTP_URL
    service = await make_service(SMTP_URL=None, OUTBOX_DIR=str(tmp_path / "box"))
    # When an email comes due
    resp = await service.client.post("/emails", json=email(scheduledAt=iso_in(0.5)), headers=auth)
    job_id = (await resp.json())["jobId"]
    eml = tmp_path / "box" / f"{job_id}.eml"
    await async_wait_for(eml.exists, timeout_s=10, what=f"{eml}")
    # Then the file is the whole message, and the row is SENT
    text = eml.read_text()
    assert "Subject: Welcome!" in text and "Message-ID: <" in text and "Date: " in text
    row = await (await service.client.get(f"/emails/{job_id}", headers=auth)).json()
    assert row["status"] == "SENT"


async def test_events_record_the_path_of_a_send_oldest_first(client, sink, auth):
    resp = await client.post("/emails", json=email(), headers=auth)
    job_id = (await resp.json())["jobId"]
    await async_wait_for(lambda: sink.arrivals, timeout_s=10, what="the email at the sink")

    async def sent():
        row = await (await client.get(f"/emails/{job_id}", headers=auth)).json()
        return row["status"] == "SENT"

    await async_wait_for(sent, timeout_s=5, what="status SENT")
    events = (await (await client.get(f"/emails/{job_id}/events", headers=auth)).json())["events"]
    assert [e["kind"] for e in events] == ["created", "queued", "claimed", "sent"]
    assert events[-1]["detail"]["messageId"] == sink.arrivals[0].message["Message-ID"]
    assert events[-1]["detail"]["reply"].startswith("250")
