"""A sender's cap holds across real worker processes: `python run.py api` and two `dramatiq coldmail.worker`."""

from __future__ import annotations

import time

import pytest

from coldmail.caps import MARGIN_MS
from tests.support.processes import start_dramatiq, start_run_py, wait_healthy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

WINDOW_S = 10
LIMIT = 5


def test_a_capped_sender_sends_five_per_window_across_two_worker_processes(base_env, sink, port, http):
    # Given the API (with its scheduler) and two worker processes of 4 threads each, a 10 s window,
    # and a sender allowed 5 emails per window
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), RATE_LIMIT_WINDOW_SECONDS=str(WINDOW_S))
    api = start_run_py(env, "api")
    workers = [start_dramatiq(env, processes=1, threads=4) for _ in range(2)]
    try:
        wait_healthy(http.base_url, api)
        status, body = http.request("PUT", "/senders/outreach", {"fromAddress": "me@example.com",
                                                                 "hourlyLimit": LIMIT})
        assert status == 201, body
        # When 15 emails of it are due now
        started = time.time()
        ids = []
        for i in range(15):
            status, body = http.post("/emails", {"recipient": f"lead{i}@example.com", "subject": f"hello {i}",
                                                 "body": "Hi", "senderId": "outreach"})
            assert status == 201, body
            ids.append(body["jobId"])
        # Then all 15 arrive, about two windows later
        wait_for(lambda: len(sink.arrivals) >= 15, timeout_s=3 * WINDOW_S + 10, what="15 arrivals")
        time.sleep(1)
        arrivals = sorted(a.at for a in sink.arrivals)
        print(f"\narrivals (s after the first request): {[round(a - started, 2) for a in arrivals]}")
        assert 2 * WINDOW_S <= arrivals[-1] - started < 2 * (WINDOW_S + MARGIN_MS / 1000) + 4
        # And none twice
        assert sorted(sink.subjects()) == sorted(f"hello {i}" for i in range(15))
        # And no 10 s window, by arrival at the relay, holds more than 5 (Redis's clock reads whole ms)
        shortest = min(b - a for a, b in zip(arrivals, arrivals[LIMIT:]))
        assert shortest >= WINDOW_S - 0.002, f"6 emails arrived within {shortest:.3f}s"
        # And the cap used no attempt, nor made any email claimed more than once
        for job_id in ids:
            row = http.get(f"/emails/{job_id}")[1]
            assert (row["status"], row["attempts"]) == ("SENT", 1)
            kinds = [e["kind"] for e in http.get(f"/emails/{job_id}/events")[1]["events"]]
            assert kinds.count("claimed") == 1, kinds
    finally:
        for worker in workers:
            worker.terminate()
        api.terminate()
