"""What reaches a real SMTP server (aiosmtpd) or the outbox folder for emails scheduled over HTTP: addresses
with an internationalised domain, subjects too long to fold at a space, and files only their owner reads."""

from __future__ import annotations

import stat

import pytest

from tests.support.payloads import email
from tests.support.sink import SmtpSink
from tests.support.waiting import async_wait_for


async def status_of(client, auth, job_id: int) -> dict:
    return await (await client.get(f"/emails/{job_id}", headers=auth)).json()


async def settled(client, auth, job_id: int) -> dict:
    """The email once it is SENT or FAILED."""
    async def done():
        return (await status_of(client, auth, job_id))["status"] in ("SENT", "FAILED")

    await async_wait_for(done, timeout_s=10, what=f"email {job_id} sent or failed")
    return await status_of(client, auth, job_id)


@pytest.fixture
def utf8_sink():
    sink = SmtpSink(smtputf8=True).start()
    yield sink
    sink.stop()


async def test_an_idn_domain_goes_out_as_a_labels_to_a_relay_without_smtputf8(client, sink, auth):
    # Given a relay that does not offer SMTPUTF8 (aiosmtpd's default)
    assert not sink.smtputf8
    # When an email to a domain with non-ASCII letters is sent
    resp = await client.post("/emails", json=email("idn", recipient="kunde@bücher.de"), headers=auth)
    assert resp.status == 201, await resp.text()
    job_id = (await resp.json())["jobId"]
    # Then it arrived, addressed in A-labels on the envelope and in To:, without the SMTPUTF8 option
    assert (await settled(client, auth, job_id))["status"] == "SENT"
    arrival = sink.arrivals[0]
    assert arrival.rcpt_tos == ["kunde@xn--bcher-kva.de"]
    assert "SMTPUTF8" not in [o.upper() for o in arrival.mail_options]
    assert arrival.message["To"] == "kunde@xn--bcher-kva.de" and arrival.raw.isascii()
    # And the API still shows the address as it was given
    assert (await status_of(client, auth, job_id))["recipient"] == "kunde@bücher.de"


async def test_a_non_ascii_local_part_still_needs_smtputf8(make_service, sink, utf8_sink, auth):
    # Given a relay without SMTPUTF8: an address whose local part is not ASCII fails there, naming why
    service = await make_service()
    resp = await service.client.post("/emails", json=email("utf8", recipient="jörg@bücher.de"), headers=auth)
    row = await settled(service.client, auth, (await resp.json())["jobId"])
    assert row["status"] == "FAILED" and "SMTPUTF8" in row["lastError"]
    assert sink.arrivals == []
    # And through a relay that offers it, the message goes with the SMTPUTF8 option and the address as it is
    service = await make_service(SMTP_URL=utf8_sink.url)
    resp = await service.client.post("/emails", json=email("utf8", recipient="jörg@bücher.de"), headers=auth)
    assert (await settled(service.client, auth, (await resp.json())["jobId"]))["status"] == "SENT"
    arrival = utf8_sink.arrivals[0]
    assert arrival.rcpt_tos == ["jörg@bücher.de"]
    assert "SMTPUTF8" in [o.upper() for o in arrival.mail_options]


@pytest.mark.parametrize("subject", ["x" * 998, "Hi " + "y" * 995, "é" * 998])
async def test_a_998_character_subject_arrives_within_the_line_limits_and_whole(client, sink, auth, subject):
    resp = await client.post("/emails", json=email(subject), headers=auth)
    assert resp.status == 201, await resp.text()
    assert (await settled(client, auth, (await resp.json())["jobId"]))["status"] == "SENT"
    arrival = sink.arrivals[0]
    head = arrival.raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in arrival.raw else arrival.raw.split(b"\n\n", 1)[0]
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    # RFC 5322: at most 998 octets a line; and these fold to the 78 it recommends
    assert max(len(line) for line in lines) <= 78, max(lines, key=len)
    assert arrival.message["Subject"] == subject


async def test_the_outbox_keeps_messages_private_and_its_reply_names_no_folder(make_service, auth, tmp_path):
    # Given no SMTP_URL, and an outbox folder that does not exist yet
    folder = tmp_path / "var" / "outbox"
    service = await make_service(SMTP_URL=None, OUTBOX_DIR=str(folder))
    # When an email is sent
    resp = await service.client.post("/emails", json=email("private"), headers=auth)
    job_id = (await resp.json())["jobId"]
    assert (await settled(service.client, auth, job_id))["status"] == "SENT"
    # Then its file is readable by the worker's user alone, in a folder only that user can list
    eml = folder / f"{job_id}.eml"
    assert stat.S_IMODE(eml.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # And the sent event tells the file's name, not where the folder is on the server's disk
    events = (await (await service.client.get(f"/emails/{job_id}/events", headers=auth)).json())["events"]
    reply = [e for e in events if e["kind"] == "sent"][0]["detail"]["reply"]
    assert reply == f"written to the outbox as {job_id}.eml"
    assert str(tmp_path) not in str(events)
