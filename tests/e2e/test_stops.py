"""Clean stops: SIGTERM during a drain, to the dramatiq CLI's process group and to `python run.py`, ends
within 10 s with every in-flight send finished and recorded, and loses or doubles nothing.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from tests.support.db import all_sent, event_kinds, sending_ids, statuses
from tests.support.http import schedule
from tests.support.processes import RECOVERY, start_dramatiq, start_run_py, stop, wait_healthy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("shape", ["dramatiq", "run.py"])
def test_sigterm_during_a_drain_stops_within_10s_and_loses_or_doubles_nothing(shape, base_env, sink, port, http):
    # Given 300 emails due now being drained by a worker, through a relay that takes 20 ms to answer
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), **RECOVERY)
    sink.slow(0.02)
    subjects = [f"term-{i}" for i in range(300)]
    api = worker = None
    try:
        if shape == "dramatiq":
            api = start_run_py(env, "api")
            wait_healthy(http.base_url, api)
            schedule(http, subjects)
            worker = start_dramatiq(env, processes=2, threads=4)
        else:
            worker = start_run_py(env)
            wait_healthy(http.base_url, worker)
            schedule(http, subjects)
        wait_for(lambda: len(sink.arrivals) >= 60, timeout_s=30, interval_s=0.005, what="60 arrivals")
        # When SIGTERM reaches every process of the worker's group, as `kill -TERM -<pgid>` or systemd sends it
        started = time.monotonic()
        code = worker.terminate(timeout_s=15)
        took = time.monotonic() - started
        # Then it exits cleanly within 10 s, leaving no email SENDING
        assert code == 0, worker.output()[-3000:]
        assert took < 10
        assert sending_ids() == []
        arrived = len(sink.arrivals)
        print(f"\n{shape}: stopped in {took:.1f}s with {arrived}/300 sent")
        # And after a restart every email arrives exactly once
        sink.slow(0)
        if shape == "dramatiq":
            worker = start_dramatiq(env, processes=2, threads=4)
        else:
            worker = start_run_py(env)
            wait_healthy(http.base_url, worker)
        wait_for(all_sent(300), timeout_s=40, what="all 300 SENT")
        time.sleep(1)
        counts = Counter(sink.subjects())
        assert set(counts) == set(subjects) and set(counts.values()) == {1}
    finally:
        stop(worker, api)


def test_a_repeated_sigterm_lets_the_send_in_flight_finish(base_env, sink, port, http):
    # Given a dramatiq worker in the middle of an SMTP conversation that takes a second to answer
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), **RECOVERY)
    sink.slow(1)
    api = start_run_py(env, "api")
    worker = start_dramatiq(env, processes=1, threads=1)
    try:
        wait_healthy(http.base_url, api)
        [email_id] = schedule(http, ["in flight"])
        wait_for(lambda: sink.arrivals, timeout_s=15, what="the relay taking the message")
        # When SIGTERM reaches its process group, and again a moment later, as when the dramatiq master
        # forwards the group's signal to a child that already saw it
        worker.signal_group(signal.SIGTERM)
        time.sleep(0.2)
        worker.signal_group(signal.SIGTERM)
        # Then the worker still finishes that send, records it and exits cleanly
        assert worker.popen.wait(10) == 0, worker.output()[-3000:]
        assert statuses() == Counter({"SENT": 1}), event_kinds(email_id)
        assert len(sink.arrivals) == 1
    finally:
        stop(worker, api)


