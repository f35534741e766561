"""Delivery survives what kills processes and empties Redis: SIGKILL of a worker's process group mid-drain
or while it holds delayed emails, and a Redis that comes back empty. Real `run.py api` and `dramatiq`
processes, this session's Redis db, PostgreSQL and an aiosmtpd sink; assertions are on what the sink
received and what the rows say.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import MARKER, REDIS_DB
from tests.support.clock import due_times
from tests.support.db import all_sent, event_kinds, sending_ids
from tests.support.http import schedule
from tests.support.processes import RECOVERY, start_dramatiq, start_run_py, stop, wait_healthy, wait_worker_ready
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def settle_after_kill() -> None:
    """A statement the dead worker had already sent (its recorder's SENT) still commits at PostgreSQL after
    the kill: read what it held only once that is over, or a send recorded then looks like a claim left behind."""
    time.sleep(0.5)

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
        wait_for(lambda: len(sink.arrivals) >= 100 and sending_ids(), timeout_s=30, interval_s=0.005,
                 what="100 arrivals, with claims held")
        worker.kill()
        settle_after_kill()
        in_flight = sending_ids()
        arrived_at_kill = len(sink.arrivals)
        # (4 threads each holding a claim of up to 10 emails while they drain: a kill always leaves some)
        assert in_flight, "the kill left no claim behind: the test proves nothing about lease expiry"
        # And a new worker is started
        worker = start_dramatiq(env, processes=1, threads=4)
        wait_for(all_sent(300), timeout_s=40, what="all 300 SENT")
        time.sleep(1)  # a late duplicate would show by now
        # Then all 300 arrived, and the only repeats are sends that were inside the SMTP conversation
        counts = Counter(sink.subjects())
        assert set(counts) == set(subjects)
        duplicates = sum(c - 1 for c in counts.values())
        print(f"\nSIGKILL after {arrived_at_kill} arrivals: {len(in_flight)} email(s) SENDING at the kill, "
              f"{duplicates} duplicate(s) at the sink")
        assert duplicates <= len(in_flight)
        # And every claim the dead worker held was taken back and sent, as its audit log says
        for email_id in in_flight:
            kinds = event_kinds(email_id)
            assert kinds[:3] == ["created", "queued", "claimed"]
            assert "lease_expired" in kinds and kinds[-1] == "sent", kinds
    finally:
        stop(worker, api)


def test_a_killed_workers_emails_go_within_seconds_not_after_their_lease(base_env, sink, port, http):
    # Given 200 emails due now, a relay that takes 20 ms to answer, leases of 120 s (the default) and
    # DEAD_WORKER_SECONDS of 5 (default 10), and a worker draining them
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), LEASE_SECONDS="120", SMTP_TIMEOUT_SECONDS="10",
               DEAD_WORKER_SECONDS="5", SWEEP_INTERVAL_SECONDS="1")
    sink.slow(0.02)
    api = start_run_py(env, "api")
    worker = None
    try:
        wait_healthy(http.base_url, api)
        subjects = [f"fast-{i}" for i in range(200)]
        schedule(http, subjects)
        worker = start_dramatiq(env, processes=1, threads=4)
        wait_for(lambda: len(sink.arrivals) >= 40 and sending_ids(), timeout_s=30, interval_s=0.005,
                 what="40 arrivals, with claims held")
        # When its process group is SIGKILLed mid-send, and another worker started
        worker.kill()
        killed_at = time.monotonic()
        settle_after_kill()
        in_flight = sending_ids()
        assert in_flight, "the kill left no claim behind: the test proves nothing about recovery"
        worker = start_dramatiq(env, processes=1, threads=4)
        # Then every email is SENT within 20 s of the kill, a lease of 120 s notwithstanding
        wait_for(all_sent(200), timeout_s=20, what="all 200 SENT within 20 s of the kill")
        took_s = time.monotonic() - killed_at
        time.sleep(1)  # a late duplicate would show by now
        counts = Counter(sink.subjects())
        duplicates = sum(c - 1 for c in counts.values())
        print(f"\n{len(in_flight)} claim(s) held at the kill; all SENT {took_s:.1f}s after it; "
              f"{duplicates} duplicate(s)")
        # And only the sends inside the SMTP conversation at the kill may have gone twice
        assert set(counts) == set(subjects)
        assert duplicates <= len(in_flight)
        # And each claim the dead worker held was taken back (its lost attempt counted) and sent
        for email_id in in_flight:
            kinds = event_kinds(email_id)
            assert "lease_expired" in kinds and kinds[-1] == "sent", kinds
    finally:
        stop(worker, api)


def test_delayed_emails_held_by_a_killed_worker_still_go_out_on_time(base_env, sink, port, http, redis_client):
    # Given 30 emails due from 7 s on, 50 ms apart, already fetched by a worker that holds them in memory
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), **RECOVERY)
    api = start_run_py(env, "api")
    worker = start_dramatiq(env, processes=1, threads=2)
    try:
        wait_healthy(http.base_url, api)
        wait_worker_ready(worker)
        subjects = [f"held-{i}" for i in range(30)]
        first = datetime.now(timezone.utc) + timedelta(seconds=7)
        schedule(http, subjects, at=first, every_s=0.05)
        due = due_times(subjects, first, 0.05)
        wait_for(lambda: redis_client.llen("dramatiq:coldmail.DQ") == 0, timeout_s=5, what="the worker fetching them")
        # When that worker is SIGKILLed and another one started
        worker.kill()
        worker = start_dramatiq(env, processes=1, threads=2)
        # Then every email still arrives once, within a second of its time (the sweep would take them
        # back only REQUEUE_AFTER_SECONDS after it)
        wait_for(lambda: len(sink.arrivals) >= 30, timeout_s=20, what="30 arrivals")
        time.sleep(0.5)
        assert len(sink.arrivals) == 30
        lateness = [a.at - due[a.message["Subject"]] for a in sink.arrivals]
        print(f"\nworst lateness after the kill: {max(lateness) * 1000:.0f} ms")
        assert min(lateness) >= -0.005
        assert max(lateness) < 1.0
    finally:
        stop(worker, api)


def test_redis_coming_back_empty_loses_nothing(base_env, sink, port, http, redis_client):
    # Given 50 emails due from 5 s on, 20 ms apart, handed over to Redis and to a running worker
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), **RECOVERY)
    api = start_run_py(env, "api")
    worker = start_dramatiq(env, processes=1, threads=4)
    try:
        wait_healthy(http.base_url, api)
        wait_worker_ready(worker)
        subjects = [f"flush-{i}" for i in range(50)]
        first = datetime.now(timezone.utc) + timedelta(seconds=5)
        schedule(http, subjects, at=first, every_s=0.02)
        due = due_times(subjects, first, 0.02)
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
        counts = Counter(sink.subjects())
        assert len(counts) == 50 and set(counts.values()) == {1}
        lateness = [a.at - due[a.message["Subject"]] for a in sink.arrivals]
        print(f"\nafter Redis came back empty: worst lateness {max(lateness) * 1000:.0f} ms")
        assert min(lateness) >= -0.005
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
        # (sent again through the dead worker's own message, put back by the sweep, or a new hand-over: the
        # sweep frees the claim and puts the message back at once, so either may come first)
        assert kinds[:4] == ["created", "queued", "claimed", "lease_expired"]
        assert kinds[4:] in (["queued", "claimed", "sent"], ["claimed", "sent"]), kinds
        times = [e["createdAt"] for e in body["events"]]
        assert times == sorted(times)
        assert body["events"][-1]["detail"]["messageId"]
        status, row = http.get(f"/emails/{email_id}")
        assert row["attempts"] == 2  # the lost attempt counts: a message that kills workers must end
    finally:
        stop(worker, api)
