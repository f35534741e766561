"""Senders share the workers: one sender's failing relay does not hold back another sender's email in the
same message, and one sender's slow relay cannot take every worker thread (SENDER_CONCURRENCY). Real
PostgreSQL, Redis and aiosmtpd sinks; the Deliverer is called as the send actor calls it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from coldmail.delivery.outcomes import Result
from coldmail.delivery.retry import Release
from coldmail.delivery.wiring import build_deliverer
from tests.support.db import sql
from tests.support.net import free_port
from tests.support.sink import SmtpSink


def sender(sender_id: str, smtp_url: str | None) -> None:
    sql("INSERT INTO senders (id, smtp_url) VALUES (%s, %s) ON CONFLICT (account, id) DO UPDATE SET smtp_url = %s",
        sender_id, smtp_url, smtp_url)


def due(sender_id: str, subject: str) -> int:
    [(email_id,)] = sql("INSERT INTO emails (recipient, subject, body, sender_id, scheduled_at, next_attempt_at, "
                        "queued_at) VALUES ('u@example.com', %s, 'hi', %s, now(), now(), now()) RETURNING id",
                        subject, sender_id)
    return email_id


@pytest.fixture
def slow_sink():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def make_deliverer(make_settings, sink, redis_client):
    made = []

    def make(**overrides):
        d = build_deliverer(make_settings(SMTP_URL=sink.url, **overrides), redis_client=redis_client)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
        d.close_thread()


def test_a_relay_failure_holds_back_only_that_relays_emails(make_deliverer, sink, database_url):
    # Given one message carrying, in order, an email through a relay that refuses connections, another
    # email through that relay, and an email of another sender through a healthy relay
    deliverer = make_deliverer()
    sender("down", f"smtp://127.0.0.1:{free_port()}")
    ids = [due("down", "down 1"), due("down", "down 2"), due("s0", "healthy")]
    # When a worker takes the message
    started = time.time()
    outcomes: list = []
    deliverer.deliver_many(ids, outcomes)
    results = dict((i, o.result) for i, o in outcomes)
    # Then the failed email waits for its retry, the other of its relay goes back unspent with it
    assert results == {ids[0]: Result.RETRY, ids[1]: Result.RELEASED, ids[2]: Result.SENT}
    assert sql("SELECT detail->>'reason' FROM email_events WHERE email_id = %s AND kind = 'released'",
               ids[1]) == [(Release.RELAY_FAILED.value,)]
    assert sql("SELECT status, attempts FROM emails WHERE id = %s", ids[1]) == [("PENDING", 0)]
    # And the healthy relay's email is sent on time, not after the failed relay's retry
    [arrival] = sink.arrivals
    assert arrival.message["Subject"] == "healthy"
    assert arrival.at - started < 1.0


def test_a_senders_slow_relay_takes_at_most_its_share_of_the_threads(make_deliverer, slow_sink, sink,
                                                                    database_url):
    # Given a sender whose relay holds each answer 1.5 s, with 6 emails due now, each in its own message,
    # and an email of another sender due now too
    deliverer = make_deliverer(SENDER_CONCURRENCY="2")
    slow_sink.slow(1.5)
    sender("slow", slow_sink.url)
    slow_ids = [due("slow", f"slow {i}") for i in range(6)]
    other = due("s0", "other")
    # When 6 worker threads take the slow sender's messages at once, and a 7th the other's a moment later
    started = time.time()
    with ThreadPoolExecutor(7) as pool:
        def run(ids):
            outcomes: list = []
            deliverer.deliver_many(ids, outcomes)
            return outcomes, time.time() - started

        slow_runs = [pool.submit(run, [i]) for i in slow_ids]
        time.sleep(0.1)
        other_run = pool.submit(run, [other])
        results = [f.result(timeout=30) for f in slow_runs]
        other_outcomes, _ = other_run.result(timeout=30)
    outcomes = {i: o.result for outs, _ in results for i, o in outs}
    # Then only 2 reached the slow relay; the other 4 were given back unspent, their threads free at once
    assert sorted(outcomes.values()) == sorted([Result.SENT] * 2 + [Result.RELEASED] * 4)
    assert len(slow_sink.arrivals) == 2
    released = [i for i, r in outcomes.items() if r is Result.RELEASED]
    assert sql("SELECT count(*) FROM emails WHERE id = ANY(%s) AND status = 'PENDING' AND attempts = 0",
               released) == [(4,)]
    assert sql("SELECT DISTINCT detail->>'reason' FROM email_events WHERE email_id = ANY(%s) "
               "AND kind = 'released'", released) == [(Release.SENDER_BUSY.value,)]
    freed_after = sorted(s for outs, s in results if outs[0][1].result is Result.RELEASED)
    assert freed_after[-1] < 1.0
    # And the other sender's email went at once
    assert [o.result for _, o in other_outcomes] == [Result.SENT]
    assert sink.arrivals[0].at - started < 0.5
    # And the slots are free again once the slow sends are over
    assert deliverer.inflight.take("default", "slow", 0)
    deliverer.inflight.give_back("default", "slow", 0)


def test_a_dead_workers_send_slots_free_as_soon_as_it_is_known_dead(redis_client):
    # Given a sender whose 2 send slots are held by a worker that stopped beating, and a live worker
    from coldmail.delivery.inflight import InFlight
    from coldmail.delivery.liveness import Heartbeat

    redis_client.delete(InFlight.key("default", "shared"))
    gone = Heartbeat(redis_client, "gone", every_s=1)
    gone.beat()
    held_by_gone = InFlight(redis_client, worker="gone", limit=2, lifetime_s=120, dead_worker_s=0.3)
    assert held_by_gone.take("default", "shared", 1) and held_by_gone.take("default", "shared", 2)
    live = InFlight(redis_client, worker="live", limit=2, lifetime_s=120, dead_worker_s=0.3)
    # Then while its beat is fresh, the live worker gets no slot
    assert not live.take("default", "shared", 3)
    # When its beat is older than DEAD_WORKER_SECONDS
    time.sleep(0.4)
    # Then its slots are free for the live worker, long before they would end by themselves
    assert live.take("default", "shared", 3) and live.take("default", "shared", 4)
    assert not live.take("default", "shared", 5)
