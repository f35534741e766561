"""Delivery survives the things that happen to real processes: SIGKILL, SIGTERM, a Redis that comes
back empty. Real `run.py` and `dramatiq` processes, the real Redis db of this session, PostgreSQL and
an aiosmtpd sink; every assertion is on what the sink received and what the rows say.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from coldmail.db import database
from tests.conftest import MARKER, REDIS_DB
from tests.support.processes import Proc, start_dramatiq, start_run_py, wait_healthy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

#: short enough that recovery shows within seconds, long enough that a live send is never taken back
RECOVERY = {"LEASE_SECONDS": "3", "SMTP_TIMEOUT_SECONDS": "2", "DEAD_WORKER_SECONDS": "2",
            "REQUEUE_AFTER_SECONDS": "3", "SWEEP_INTERVAL_SECONDS": "0.3"}


def schedule(http, subjects: list[str], *, at: datetime | None = None) -> list[int]:
    def post(subject: str) -> int:
        body = {"recipient": "user@example.com", "subject": subject, "body": "Hello", "senderId": "s1"}
        if at is not None:
            body["scheduledAt"] = at.isoformat()
        status, answer = http.post("/emails", body)
        assert status == 201, answer
        return answer["jobId"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(post, subjects))


def statuses() -> Counter:
    with database.connection_context():
        return Counter(dict(database.execute_sql("SELECT status, count(*) FROM emails GROUP BY status").fetchall()))


def sending_ids() -> list[int]:
    with database.connection_context():
        return [r[0] for r in database.execute_sql("SELECT id FROM emails WHERE status = 'SENDING'").fetchall()]


def event_kinds(email_id: int) -> list[str]:
    with database.connection_context():
        return [r[0] for r in database.execute_sql(
            "SELECT kind FROM email_events WHERE email_id = %s ORDER BY id", (email_id,)).fetchall()]


def arrivals_by_subject(sink) -> Counter:
    return Counter(sink.subjects())


def all_sent(n: int):
    return lambda: statuses().get("SENT", 0) == n


def stop(*procs: Proc) -> None:
    for proc in procs:
        proc.terminate()


def test_worker_sigkilled_mid_drain_all_arrive_and_only_in_flight_sends_repeat(base_env, sink, port, http):
    # Given 300 emails due now, queued while no worker runs, and a relay that takes 20 ms to answer
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), **RECOVERY)
    sink.slow(0.02)
    api = start_run_py(env, "api")
    worker = None
    try:
        wait_healthy(http.base_url, api)
        subjects = [f"kill-{i}" for i in range(300)]
        schedule(http, subjects)
        # When a worker drains them and its whole process group is SIGKILLed a third of the way through
        worker = start_dramatiq(env, processes=1, threads=4)
        wait_for(lambda: len(sink.arrivals) >= 100, timeout_s=30, interval_s=0.005, what="100 arrivals")
        worker.kill()
        in_flight = sending_ids()
        arrived_at_kill = len(sink.arrivals)
        # And a new worker is started
        worker = start_dramatiq(env, processes=1, threads=4)
        wait_for(all_sent(300), timeout_s=40, what="all 300 SENT")
        time.sleep(1)  # a late duplicate would show by now
        # Then all 300 arrived, and the only repeats are sends that were inside the SMTP conversation
        counts = arrivals_by_subject(sink)
        assert set(counts) == set(subjects)
        duplicates = sum(c - 1 for c in counts.values())
        print(f"\nSIGKILL after {arrived_at_kill} arrivals: {len(in_flight)} email(s) SENDING at the kill, "
              f"{duplicates} duplicate(s) at the sink")
        assert duplicates <= len(in_flight)
        # And a claim the dead worker held was taken back by its lease and sent, as its audit log says
        if in_flight:
            kinds = event_kinds(in_flight[0])
            assert kinds[:3] == ["created", "queued", "claimed"]
            assert "lease_expired" in kinds and kinds[-1] == "sent", kinds
    finally:
        stop(*(p for p in (worker, api) if p is not None))


def test_delayed_emails_held_by_a_killed_worker_still_go_out_on_time(base_env, sink, port, http):
    # Given 30 emails due in 6 s, already handed to a worker that holds them in memory until their time
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), **RECOVERY)
    api = start_run_py(env, "api")
    worker = start_dramatiq(env, processes=1, threads=2)
    try:
        wait_healthy(http.base_url, api)
        time.sleep(1.5)  # the worker is up and polling
        due = datetime.now(timezone.utc) + timedelta(seconds=6)
        schedule(http, [f"held-{i}" for i in range(30)], at=due)
        # When that worker is SIGKILLed and another one started
        time.sleep(0.5)
        worker.kill()
        worker = start_dramatiq(env, processes=1, threads=2)
        # Then every email still arrives once, within a second of its time
        wait_for(lambda: len(sink.arrivals) >= 30, timeout_s=20, what="30 arrivals")
        time.sleep(0.5)
        assert len(sink.arrivals) == 30
        lateness = [a.at - due.timestamp() for a in sink.arrivals]
        print(f"\nworst lateness after the kill: {max(lateness) * 1000:.0f} ms")
        assert min(lateness) >= -0.005
        assert max(lateness) < 1.0
    finally:
        stop(worker, api)


def test_redis_coming_back_empty_loses_nothing(base_env, sink, port, http, redis_client):
    # Given 50 emails due in 4 s, handed over to Redis and to a running worker
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), **RECOVERY)
    api = start_run_py(env, "api")
    worker = start_dramatiq(env, processes=1, threads=4)
    try:
        wait_healthy(http.base_url, api)
        time.sleep(1.5)
        due = datetime.now(timezone.utc) + timedelta(seconds=4)
        schedule(http, [f"flush-{i}" for i in range(50)], at=due)
        # When Redis loses everything, as a restart of a Redis that keeps nothing on disk does: the db is
        # flushed and every connection to it dropped (only this session's clients use this db)
        redis_client.flushdb()
        redis_client.set(MARKER, "1")
        me = redis_client.client_id()
        for client in redis_client.client_list():
            if int(client["db"]) == REDIS_DB and int(client["id"]) != me:
                redis_client.client_kill_filter(_id=client["id"])
        # Then all 50 still arrive, once each
        wait_for(lambda: len(sink.arrivals) >= 50, timeout_s=30, what="50 arrivals")
        time.sleep(1)
        counts = arrivals_by_subject(sink)
        assert len(counts) == 50 and set(counts.values()) == {1}
        lateness = [a.at - due.timestamp() for a in sink.arrivals]
        print(f"\nafter Redis came back empty: worst lateness {max(lateness) * 1000:.0f} ms")
        assert min(lateness) >= -0.005
    finally:
        stop(worker, api)


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
        counts = arrivals_by_subject(sink)
        assert set(counts) == set(subjects) and set(counts.values()) == {1}
    finally:
        stop(*(p for p in (worker, api) if p is not None))


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


def test_events_tell_the_story_of_a_send_that_lost_its_worker(base_env, sink, port, http):
    # Given a relay that holds its answer for 5 s, and an email being sent through it
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), **RECOVERY)
    sink.slow(5)
    api = start_run_py(env, "api")
    worker = start_dramatiq(env, processes=1, threads=1)
    try:
        wait_healthy(http.base_url, api)
        [email_id] = schedule(http, ["orphaned"])
        wait_for(lambda: sink.arrivals, timeout_s=15, what="the relay taking the message")
        # When the worker dies inside the SMTP conversation and another takes over
        worker.kill()
        sink.slow(0)
        worker = start_dramatiq(env, processes=1, threads=1)
        wait_for(all_sent(1), timeout_s=20, what="the email SENT")
        # Then GET /emails/{id}/events shows, oldest first, the claim, its expiry and the second send
        status, body = http.get(f"/emails/{email_id}/events")
        assert status == 200
        kinds = [e["kind"] for e in body["events"]]
        assert kinds == ["created", "queued", "claimed", "lease_expired", "queued", "claimed", "sent"]
        times = [e["createdAt"] for e in body["events"]]
        assert times == sorted(times)
        assert body["events"][-1]["detail"]["messageId"]
        status, row = http.get(f"/emails/{email_id}")
        assert row["attempts"] == 2  # the lost attempt counts: a message that kills workers must end
    finally:
        stop(worker, api)
