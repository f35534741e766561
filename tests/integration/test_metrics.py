"""/metrics: public Prometheus text whose figures move with what the service does.

Counters live for the whole test process, so each test compares before and after.
"""

from __future__ import annotations

import time

import psycopg2
import pytest

from coldmail.db import database
from coldmail.errors import ConfigError
from coldmail.metrics import check_mode
from tests.support.metrics import Samples, parse
from tests.support.payloads import email
from tests.support.waiting import async_wait_for

FAR = "2099-01-01T00:00:00Z"
FAMILIES = (
    "coldmail_emails_accepted", "coldmail_emails_sent", "coldmail_emails_failed", "coldmail_emails_cancelled",
    "coldmail_emails_rescheduled", "coldmail_emails_rate_limited", "coldmail_send_retries",
    "coldmail_send_duration_seconds", "coldmail_send_lateness_seconds", "coldmail_emails",
    "coldmail_worker_messages", "coldmail_http_requests", "coldmail_http_request_duration_seconds",
)


async def scrape(client) -> Samples:
    resp = await client.get("/metrics")  # no key: Prometheus scrapes without one
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    return parse(await resp.text())


async def schedule(client, auth, body: dict) -> int:
    resp = await client.post("/emails", json=body, headers=auth)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["jobId"]


async def status_of(client, auth, job_id: int) -> str:
    return (await (await client.get(f"/emails/{job_id}", headers=auth)).json())["status"]


async def test_metrics_is_public_and_has_every_family_at_start(client):
    samples = await scrape(client)
    assert set(FAMILIES) <= samples["families"], set(FAMILIES) - samples["families"]
    for status in ("PENDING", "SENDING"):
        assert ("coldmail_emails", (("status", status),)) in samples
    for outcome in ("sent", "failed", "retry", "rate_limited", "skipped", "not_yet", "error"):
        assert ("coldmail_worker_messages_total", (("outcome", outcome),)) in samples


async def test_a_send_moves_the_counters_histograms_and_state_gauge(client, auth, sink):
    # Given the figures before
    before = await scrape(client)
    # When an email due now is accepted and sent
    job_id = await schedule(client, auth, email("metrics-sent"))
    await async_wait_for(lambda: sink.arrivals, timeout_s=10, what="the email at the sink")
    await async_wait_for(lambda: _is(client, auth, job_id, "SENT"), timeout_s=10, what="SENT")
    after = await scrape(client)
    # Then each figure moved by one send
    assert after("coldmail_emails_accepted_total") == before("coldmail_emails_accepted_total") + 1
    assert after("coldmail_emails_sent_total") == before("coldmail_emails_sent_total") + 1
    assert after("coldmail_worker_messages_total", outcome="sent") == \
        before("coldmail_worker_messages_total", outcome="sent") + 1
    for histogram in ("coldmail_send_duration_seconds", "coldmail_send_lateness_seconds"):
        assert after(f"{histogram}_count") == before(f"{histogram}_count") + 1
    lateness = after("coldmail_send_lateness_seconds_sum") - before("coldmail_send_lateness_seconds_sum")
    duration = after("coldmail_send_duration_seconds_sum") - before("coldmail_send_duration_seconds_sum")
    assert 0 <= lateness < 1.0 and 0 < duration < 1.0, (lateness, duration)
    assert after("coldmail_emails", status="PENDING") == 0 and after("coldmail_emails", status="SENDING") == 0
    assert after("coldmail_http_requests_total", method="POST", route="/emails", status="201") == \
        before("coldmail_http_requests_total", method="POST", route="/emails", status="201") + 1
    # (a route's series is per template, not per id)
    assert ("coldmail_http_requests_total", (("method", "GET"), ("route", "/emails/{id}"), ("status", "200"))) \
        in after


async def _is(client, auth, job_id: int, status: str) -> bool:
    return await status_of(client, auth, job_id) == status


async def test_retries_failures_cancels_and_moves_are_counted(client, auth, sink):
    before = await scrape(client)
    # Given a relay that answers 451 once, then accepts
    sink.fail_next("451 4.3.0 try again")
    retried = await schedule(client, auth, email("metrics-retry"))
    await async_wait_for(lambda: _is(client, auth, retried, "SENT"), timeout_s=10, what="the retried send")
    # And a relay that refuses for good
    sink.fail_always("550 5.1.1 no such user")
    failed = await schedule(client, auth, email("metrics-fail"))
    await async_wait_for(lambda: _is(client, auth, failed, "FAILED"), timeout_s=10, what="FAILED")
    sink.fail_always(None)
    # And an email moved, then cancelled, and one left waiting
    await schedule(client, auth, email("metrics-waiting", scheduledAt=FAR))
    later = await schedule(client, auth, email("metrics-later", scheduledAt=FAR))
    assert (await client.patch(f"/emails/{later}", json={"scheduledAt": FAR}, headers=auth)).status == 200
    assert (await client.post(f"/emails/{later}/cancel", headers=auth)).status == 200
    after = await scrape(client)
    # Then each shows in its counter, and the backlog gauge agrees with the database
    for name, moved in (("coldmail_send_retries_total", 1), ("coldmail_emails_failed_total", 1),
                        ("coldmail_emails_sent_total", 1), ("coldmail_emails_rescheduled_total", 1),
                        ("coldmail_emails_cancelled_total", 1), ("coldmail_emails_accepted_total", 4)):
        assert after(name) == before(name) + moved, name
    with database.connection_context():
        counts = dict(database.execute_sql("SELECT status, count(*) FROM emails GROUP BY status").fetchall())
    assert counts == {"SENT": 1, "FAILED": 1, "CANCELLED": 1, "PENDING": 1}
    assert after("coldmail_emails", status="PENDING") == 1 and after("coldmail_emails", status="SENDING") == 0


async def test_a_send_over_the_cap_is_counted_as_rate_limited(make_service, auth, sink):
    # Given a cap of one send per window
    service = await make_service(RATE_LIMIT_PER_HOUR=1)
    client = service.client
    before = await scrape(client)
    # When two emails of one sender are due now
    first = await schedule(client, auth, email("cap-1"))
    second = await schedule(client, auth, email("cap-2"))
    await async_wait_for(lambda: len(sink.arrivals) == 1, timeout_s=10, what="the first send")
    await async_wait_for(
        lambda: _counter_moved(client, "coldmail_emails_rate_limited_total", before), timeout_s=10,
        what="a rate-limited send")
    # Then one was sent and the other was moved to later, counted, and still PENDING
    statuses = {await status_of(client, auth, first), await status_of(client, auth, second)}
    assert statuses == {"SENT", "PENDING"}
    after = await scrape(client)
    assert after("coldmail_emails", status="PENDING") == 1
    held = first if await status_of(client, auth, first) == "PENDING" else second
    events = (await (await client.get(f"/emails/{held}/events", headers=auth)).json())["events"]
    assert "rate_limited" in [e["kind"] for e in events]


async def _counter_moved(client, name: str, before: Samples) -> bool:
    return (await scrape(client))(name) > before(name)


async def test_a_multiprocess_directory_from_dotenv_only_is_refused(make_settings, tmp_path):
    # prometheus_client decides on multiprocess mode from the process environment at import:
    # a directory named only in .env would silently show one process's figures
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        check_mode(make_settings(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)))
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        make_settings(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"))


async def test_a_count_that_cannot_finish_leaves_the_gauge_out_rather_than_showing_zero(client, database_url):
    # Given a table locked by another session, so counting it would wait
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE emails IN ACCESS EXCLUSIVE MODE")
            # When Prometheus scrapes
            started = time.monotonic()
            samples = await scrape(client)
            waited = time.monotonic() - started
    finally:
        conn.rollback()
        conn.close()
    # Then the scrape answers within the count's time limit, without coldmail_emails, the rest intact
    assert waited < 5, waited
    assert "coldmail_emails" not in samples["families"]
    assert "coldmail_emails_sent" in samples["families"]
