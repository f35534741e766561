"""Metrics and logs of real processes: `run.py api` with `dramatiq coldmail.worker --processes 2`."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.support.metrics import Samples, parse
from tests.support.processes import start_dramatiq, start_run_py, wait_healthy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def scrape(base_url: str) -> Samples:
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as resp:
        return parse(resp.read().decode())


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_worker_figures_add_up_across_processes_and_log_lines_are_json(base_env, sink, port, http, tmp_path):
    # Given the API and two dramatiq worker processes sharing a multiprocess directory, logging JSON
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
               LOG_FORMAT="json")
    api = start_run_py(env, "--log-format", "json", "api")
    workers = start_dramatiq(env, processes=2, threads=2)
    try:
        wait_healthy(http.base_url, api)
        # When twelve emails due now are scheduled in one batch
        emails = [{"recipient": f"u{i}@example.com", "subject": f"obs-{i}", "body": "Hello", "senderId": "obs"}
                  for i in range(12)]
        status, body = http.post("/emails/batch", {"emails": emails})
        assert status == 201, body
        ids = body["jobIds"]
        wait_for(lambda: len(sink.arrivals) >= 12, timeout_s=30, what="12 arrivals")
        wait_for(lambda: all(http.get(f"/emails/{i}")[1]["status"] == "SENT" for i in ids), timeout_s=10,
                 what="12 SENT rows")
        # Then the API's /metrics shows the workers' sends, added up over their processes
        metrics = scrape(http.base_url)
        assert metrics("coldmail_emails_accepted_total") == 12
        assert metrics("coldmail_emails_sent_total") == 12
        assert metrics("coldmail_worker_messages_total", outcome="sent") == 12
        assert metrics("coldmail_send_duration_seconds_count") == 12
        assert metrics("coldmail_send_lateness_seconds_count") == 12
        assert metrics("coldmail_send_lateness_seconds_bucket", le="5.0") == 12
        assert metrics("coldmail_emails", status="PENDING") == 0
        writers = {f.stem.rsplit("_", 1)[1] for f in metrics_dir.glob("*.db")}
        assert len(writers) >= 2, f"figures from {writers} only: the workers' did not reach the directory"
    finally:
        codes = (workers.terminate(), api.terminate())
    assert codes == (0, 0), workers.output() + api.output()
    # And the scheduled and sent lines are JSON objects carrying the email's id and sender as fields
    scheduled = [line for line in json_lines(api.output()) if "scheduled for" in line["message"]]
    sent = [line for line in json_lines(workers.output()) if "sent to relay" in line["message"]]
    assert sorted(line["email_id"] for line in scheduled) == sorted(ids)
    assert sorted(line["email_id"] for line in sent) == sorted(ids)
    assert {line["sender_id"] for line in scheduled + sent} == {"obs"}
    assert {"time", "level", "logger"} <= set(sent[0])


def test_run_py_alone_shows_its_embedded_workers_figures(base_env, sink, port, http):
    # Given the all-in-one process, without a multiprocess directory
    proc = start_run_py(dict(base_env, SMTP_URL=sink.url, PORT=str(port)))
    try:
        wait_healthy(http.base_url, proc)
        before = scrape(http.base_url)
        # When an email due now is sent
        status, body = http.post("/emails", {"recipient": "u@example.com", "subject": "solo", "body": "Hi",
                                             "senderId": "solo"})
        assert status == 201
        wait_for(lambda: http.get(f"/emails/{body['jobId']}")[1]["status"] == "SENT", timeout_s=15, what="SENT")
        time.sleep(0.1)
        # Then its /metrics counts the send
        after = scrape(http.base_url)
        assert after("coldmail_emails_sent_total") == before("coldmail_emails_sent_total") + 1
        assert after("coldmail_send_lateness_seconds_count") == before("coldmail_send_lateness_seconds_count") + 1
    finally:
        assert proc.terminate() == 0, proc.output()
