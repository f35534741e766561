"""Retries that understand SMTP: 4xx, timeouts and refused connections are tried again with backoff and
counted once per real attempt in the row; 5xx fails at once; Dramatiq never retries behind the row's back.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from datetime import datetime

from tests.support.payloads import email
from tests.support.waiting import async_wait_for


async def schedule(client, auth, **overrides) -> int:
    resp = await client.post("/emails", json=email("Retry me", **overrides), headers=auth)
    assert resp.status == 201
    return (await resp.json())["jobId"]


async def row_of(client, auth, job_id: int) -> dict:
    return await (await client.get(f"/emails/{job_id}", headers=auth)).json()


async def events_of(client, auth, job_id: int) -> list[dict]:
    return (await (await client.get(f"/emails/{job_id}/events", headers=auth)).json())["events"]


async def wait_status(client, auth, job_id: int, status: str, *, timeout_s: float = 15) -> dict:
    async def reached():
        row = await row_of(client, auth, job_id)
        return row if row["status"] == status else None

    return await async_wait_for(reached, timeout_s=timeout_s, what=f"email {job_id} {status}")


def at(event: dict) -> float:
    return datetime.fromisoformat(event["createdAt"].replace("Z", "+00:00")).timestamp()


async def test_451_twice_then_250_is_sent_on_the_third_attempt(client, sink, auth):
    # Given a relay that answers the next two messages with 451
    sink.fail_next("451 4.3.0 Mailbox busy, try later", "451 4.3.0 Mailbox busy, try later")
    # When an email is due now
    job_id = await schedule(client, auth)
    # Then it is sent on the third attempt, once
    row = await wait_status(client, auth, job_id, "SENT")
    assert row["attempts"] == 3 and row["lastError"] is None
    await asyncio.sleep(0.5)
    assert sink.subjects() == ["Retry me"]
    # And its audit log shows each failed attempt with the reply's code and text, oldest first
    events = await events_of(client, auth, job_id)
    assert [e["kind"] for e in events] == [
        "created", "queued", "claimed", "attempt_failed", "queued", "claimed", "attempt_failed",
        "queued", "claimed", "sent"]
    failures = [e for e in events if e["kind"] == "attempt_failed"]
    assert [f["detail"]["code"] for f in failures] == [451, 451]
    assert all("Mailbox busy, try later" in f["detail"]["error"] for f in failures)
    # And each retry waited out its backoff (RETRY_BACKOFF_SECONDS=0.3, doubling, ±20 %): the next
    # attempt's outcome comes no sooner than that after the failure
    waits = [f["detail"]["retryInSeconds"] for f in failures]
    assert 0.3 * 0.8 <= waits[0] <= 0.3 * 1.2 and 0.6 * 0.8 <= waits[1] <= 0.6 * 1.2
    assert at(failures[1]) - at(failures[0]) >= waits[0] - 0.005
    assert at(events[-1]) - at(failures[1]) >= waits[1] - 0.005
    assert [e["detail"]["attempt"] for e in events if e["kind"] == "claimed"] == [1, 2, 3]


async def test_550_fails_at_once_with_the_reply_in_last_error(client, sink, auth):
    # Given a relay that refuses every message for good
    sink.fail_always("550 5.1.1 No such user here")
    # When an email is due now
    job_id = await schedule(client, auth)
    # Then it is FAILED after one attempt, the reply in lastError
    row = await wait_status(client, auth, job_id, "FAILED")
    assert row["attempts"] == 1
    assert "550" in row["lastError"] and "No such user here" in row["lastError"]
    # And nothing retries it: not the row, not Dramatiq
    await asyncio.sleep(1)
    events = await events_of(client, auth, job_id)
    assert [e["kind"] for e in events] == ["created", "queued", "claimed", "failed"]
    assert events[-1]["detail"]["code"] == 550
    assert (await row_of(client, auth, job_id))["attempts"] == 1
    assert sink.arrivals == []


async def test_relay_down_for_a_few_seconds_the_email_goes_out_when_it_is_back(make_service, sink, auth):
    # Given a relay that is down (connections refused), and attempts enough to outlast it
    service = await make_service(MAX_ATTEMPTS=10)
    client = service.client
    sink.stop()
    # When an email comes due, and the relay comes back on the same port 2.5 s later
    job_id = await schedule(client, auth)
    await asyncio.sleep(2.5)
    assert sink.arrivals == []
    sink.start()
    # Then it goes out once, after a few refused attempts, each recorded
    row = await wait_status(client, auth, job_id, "SENT")
    assert sink.subjects() == ["Retry me"]
    assert row["attempts"] >= 3
    failures = [e for e in await events_of(client, auth, job_id) if e["kind"] == "attempt_failed"]
    assert len(failures) == row["attempts"] - 1
    assert all(f["detail"]["code"] is None and "refused" in f["detail"]["error"].lower() for f in failures)


async def test_a_relay_that_never_answers_times_out_and_is_retried(make_service, sink, auth):
    # Given a relay that accepts connections on the sink's port but never says a word
    service = await make_service(SMTP_TIMEOUT_SECONDS=0.5)
    client = service.client
    sink.stop()
    silent = socket.create_server(("127.0.0.1", sink.port))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        silent.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        # When an email comes due
        job_id = await schedule(client, auth)

        async def timed_out():
            return [e for e in await events_of(client, auth, job_id) if e["kind"] == "attempt_failed"]

        failures = await async_wait_for(timed_out, timeout_s=10, what="a timed-out attempt")
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        silent.close()
    # Then the attempt failed as a timeout, to be retried; and once the real relay answers, it is sent
    assert "timed out" in failures[0]["detail"]["error"].lower()
    sink.start()
    row = await wait_status(client, auth, job_id, "SENT")
    assert row["attempts"] >= 2
    assert sink.subjects() == ["Retry me"]
