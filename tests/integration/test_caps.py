"""Sender caps on the real Redis and PostgreSQL: the sliding window itself, its rebuild after Redis lost
it, the hand-over's plan, the global cap, and senders with their own relays.

The window's and the plan's cases run on Redis and on its in-memory twin (coldmail.caps.stub) alike.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import pytest
import redis

from coldmail.caps import MARGIN_MS, Caps
from coldmail.caps.scripts import PLACEHOLDER, SENTINEL, PlanRequest, RedisScripts, Scripts
from coldmail.caps.stub import StubScripts
from coldmail.caps.window import SlidingWindowRateLimiter
from coldmail.delivery.outcomes import Result
from coldmail.delivery.wiring import build_deliverer
from tests.conftest import MARKER, clean_state
from tests.support import payloads
from tests.support.db import sql
from tests.support.sink import SmtpSink
from tests.support.waiting import async_wait_for

#: Redis's clock is read in whole milliseconds
CLOCK_MS = 0.002


def email(subject: str, sender: str = "capped") -> dict:
    return payloads.email(subject, senderId=sender)


def widest_window(times: list[float], limit: int) -> float:
    """The shortest span holding limit + 1 of `times`: a window shorter than it holds at most `limit`."""
    times = sorted(times)
    return min(b - a for a, b in zip(times, times[limit:]))


@pytest.fixture
def client_(database_url, redis_url):
    clean_state(redis_url)
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(params=["redis", "stub"])
def scripts(request) -> Scripts:
    """The store's scripts on Redis, or the in-memory twin; either way `.client` sets a window up."""
    if request.param == "redis":
        return RedisScripts(request.getfixturevalue("client_"))
    return StubScripts()


def limiter(scripts: Scripts, member, *, limit: int, window_ms: int, key: str = "test:cap", rebuild=None):
    return SlidingWindowRateLimiter(scripts, key, limit=limit, window_ms=window_ms, member=str(member),
                                    rebuild=rebuild)


# -- the sliding window ---------------------------------------------------------------------------

def test_the_limit_holds_and_the_wait_is_when_the_oldest_slot_frees(scripts):
    # Given a window of 1.2 s with room for 3, taken at 0, 0.4 and 0.8 s
    for i in range(3):
        if i:
            time.sleep(0.4)
        assert limiter(scripts, i, limit=3, window_ms=1200).decide().allowed
        if not i:
            started = time.monotonic()
    # When a fourth asks
    refused = limiter(scripts, "d", limit=3, window_ms=1200).decide()
    # Then it is refused, and told to wait until the first slot (taken at 0) frees at 1.2 s
    assert not refused.allowed
    expected_ms = 1200 - (time.monotonic() - started) * 1000
    assert abs(refused.wait_ms - expected_ms) < 40
    # And just before that it is still refused; just after, it goes, and the next waits for the 0.4 s slot
    time.sleep(max(0, refused.wait_ms - 60) / 1000)
    assert not limiter(scripts, "d", limit=3, window_ms=1200).decide().allowed
    time.sleep(0.1)
    assert limiter(scripts, "d", limit=3, window_ms=1200).decide().allowed
    later = limiter(scripts, "e", limit=3, window_ms=1200).decide()
    assert not later.allowed and 250 < later.wait_ms < 450
    assert limiter(scripts, "x", limit=3, window_ms=1200).used() == 3


def test_acquiring_again_never_takes_a_second_slot(scripts):
    # Given a window with room for 2
    a = limiter(scripts, "a", limit=2, window_ms=60_000)
    # When the same member acquires three times, then another member once
    assert all(a.decide().allowed for _ in range(3))
    assert a.used() == 1
    assert limiter(scripts, "b", limit=2, window_ms=60_000).decide().allowed
    # Then a third member is refused, while the first may still acquire (its one slot moves to now)
    assert not limiter(scripts, "c", limit=2, window_ms=60_000).decide().allowed
    assert a.decide().allowed and a.used() == 2
    # And a slot given back is free again
    a.give_back()
    assert limiter(scripts, "c", limit=2, window_ms=60_000).decide().allowed


def test_acquire_allows_every_send_under_the_limit_with_a_full_hour(client_):
    """What each acquire costs is measured by `python -m tests.bench.acquire`; this keeps its correctness."""
    scripts = RedisScripts(client_)
    # Given a one-hour window already holding 1,000 sends
    scripts.client.zadd("test:cap", {"~complete": float("inf")})
    now_ms = time.time() * 1000
    scripts.client.zadd("test:cap", {f"old{i}": now_ms - i * 1000 for i in range(1000)})
    # When 2,000 sends acquire one after another, then 2,000 more in one pipeline
    for i in range(2000):
        assert limiter(scripts, i, limit=5000, window_ms=3_600_000).decide().allowed
    pipe = scripts.client.pipeline(transaction=False)
    for i in range(2000):
        scripts.lua["acquire"](keys=["test:cap", "test:plan"],
                               args=[5000, 3_600_000, f"p{i}", "1", SENTINEL, PLACEHOLDER], client=pipe)
    # Then every one of them is allowed: 5,000 sends fit the limit of 5,000
    assert all(allowed == 1 for allowed, _ in pipe.execute())
    assert client_.zcard("test:cap") - 1 == 5000


def seed_sent(sender: str, *, count: int, ago_s: float, limit: int | None = None) -> list[int]:
    sql("INSERT INTO senders (id, hourly_limit) VALUES (%s, %s) "
        "ON CONFLICT (account, id) DO UPDATE SET hourly_limit = %s", sender, limit, limit)
    rows = sql("INSERT INTO emails (recipient, subject, body, sender_id, status, scheduled_at, next_attempt_at, "
               "attempts, sent_at) SELECT 'u@example.com', 'sent', 'b', %s, 'SENT', now(), now(), 1, "
               "now() - %s * interval '1 second' FROM generate_series(1, %s) RETURNING id", sender, ago_s, count)
    return [r[0] for r in rows]


@pytest.mark.parametrize("store", ["redis", "stub"])
def test_a_window_redis_lost_is_rebuilt_from_postgresql_before_anyone_goes(make_settings, client_, store, caplog):
    # Given a sender with a limit of 3 that sent 2 emails 1 s ago, and one send under way
    settings = make_settings(RATE_LIMIT_WINDOW_SECONDS="60")
    seed_sent("rebuilt", count=2, ago_s=1, limit=3)
    under_way = sql("INSERT INTO emails (recipient, subject, body, sender_id, status, scheduled_at, "
                    "next_attempt_at) VALUES ('u@example.com', 's', 'b', 'rebuilt', 'SENDING', now(), now()) "
                    "RETURNING id")[0][0]
    caps = Caps(settings, client_) if store == "redis" else Caps(settings, scripts=StubScripts())
    # When Redis has lost everything
    caps.scripts.client.flushdb()
    client_.set(MARKER, "1")
    # Then the send under way takes its slot once (its placeholder from the rebuild goes), and nothing else fits
    with caplog.at_level(logging.WARNING, logger="coldmail.caps"):
        assert caps.for_sender("default", "rebuilt", 3, under_way).decide().allowed
    assert [r.getMessage() for r in caplog.records] == [
        "sender 'rebuilt' of account 'default': its cap's window was lost by Redis; 3 sends rebuilt from PostgreSQL"]
    refused = caps.for_sender("default", "rebuilt", 3, 999_999).decide()
    assert not refused.allowed
    assert 58_000 < refused.wait_ms <= 59_000
    assert caps.for_sender("default", "rebuilt", 3, 999_999).used() == 3
    assert caps.usage("default", "rebuilt") == 3


@pytest.mark.parametrize("store", ["redis", "stub"])
def test_a_senders_first_send_finds_no_window_and_warns_of_nothing(make_settings, client_, store, caplog):
    # Given a sender that has never sent (no window in Redis, none in PostgreSQL)
    settings = make_settings(RATE_LIMIT_WINDOW_SECONDS="60")
    caps = Caps(settings, client_) if store == "redis" else Caps(settings, scripts=StubScripts())
    # When its first send takes a slot
    with caplog.at_level(logging.DEBUG, logger="coldmail.caps"):
        assert caps.for_sender("default", "newcomer", 3, 1).decide().allowed
    # Then nothing says Redis lost anything, and the slot is counted
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert caps.usage("default", "newcomer") == 1


# -- the plan of the hand-over --------------------------------------------------------------------

def test_the_plan_queues_a_backlog_behind_the_window_in_due_order(scripts):
    # Given a sender's empty window (10 s, room for 2), complete
    scripts.client.zadd("test:cap", {"~complete": float("inf")})
    request = PlanRequest("test:cap", "test:plan", 2, 10_000, [(str(i), 0) for i in range(7)])
    # When 7 emails due now are planned
    [planned] = scripts.plan([request], margin_ms=500, tolerance_ms=1000)
    # Then 2 go now, and the others two by two, one window (and the margin) apart
    assert planned[:2] == [0, 0]
    step = 10_500
    for i, at in enumerate(planned[2:], start=2):
        assert abs(at - (i // 2) * step) <= 5
    # And planning again keeps each its place, while a newcomer queues behind them all
    again = PlanRequest("test:cap", "test:plan", 2, 10_000,
                        [(str(i), max(0, at)) for i, at in enumerate(planned)] + [("new", 0)])
    [replanned] = scripts.plan([again], margin_ms=500, tolerance_ms=1000)
    assert all(abs(a - b) <= 5 for a, b in zip(replanned, planned))
    assert abs(replanned[-1] - 3 * step) <= 5
    # When the first two went 700 ms late (they finished then), and the next two come up again
    now_ms = time.time() * 1000
    scripts.client.zrem("test:plan", "0", "1")
    scripts.client.zadd("test:cap", {"0": now_ms + 700, "1": now_ms + 700})
    late = PlanRequest("test:cap", "test:plan", 2, 10_000, [("2", planned[2]), ("3", planned[3])])
    [shifted] = scripts.plan([late], margin_ms=500, tolerance_ms=1000)
    # Then they keep their turn, moved on by as much as the first two were late (not to the queue's end)
    assert all(abs(at - (700 + step)) <= 20 for at in shifted)
    # And a lost window is reported, not planned on
    scripts.client.delete("test:cap")
    assert scripts.plan([request], margin_ms=500, tolerance_ms=1000) == [None]


def test_with_room_for_all_the_plan_gives_each_its_due_time_and_stops_at_the_limit(scripts):
    # Given a window (limit 5) holding 2 sends and 1 planned email, and 2 candidates due in 100 and 200 ms
    now_ms = int(time.time() * 1000)  # scores are whole ms, as Redis's clock gives them
    scripts.client.zadd("test:cap", {"~complete": float("inf"), "a": now_ms - 1000, "b": now_ms - 500})
    scripts.client.zadd("test:plan", {"p": now_ms + 50})
    fits = PlanRequest("test:cap", "test:plan", 5, 10_000, [("c", 100), ("d", 200)])
    # When they are planned: exactly the room that is left
    [planned] = scripts.plan([fits], margin_ms=500, tolerance_ms=1000)
    # Then each goes at its due time, and holds its place in the plan
    assert planned == [100, 200]
    assert scripts.client.zcard("test:plan") == 3
    # And one more candidate finds the window full: it waits for the oldest slot to leave, plus the margin
    [over] = scripts.plan([PlanRequest("test:cap", "test:plan", 5, 10_000, [("e", 0)])],
                          margin_ms=500, tolerance_ms=1000)
    assert abs(over[0] - (-1000 + 10_000 + 500)) <= 20


# -- the guard after Redis lost the window -----------------------------------------------------

def test_after_redis_lost_a_window_the_worker_still_refuses_a_send_over_the_cap(make_settings, client_, sink):
    # Given a sender with a limit of 2 that sent 2 emails 1 s ago, and an email of it due now
    settings = make_settings(RATE_LIMIT_WINDOW_SECONDS="30", SMTP_URL=sink.url)
    seed_sent("guarded", count=2, ago_s=1, limit=2)
    email_id = sql("INSERT INTO emails (recipient, subject, body, sender_id, scheduled_at, next_attempt_at, "
                   "queued_at) VALUES ('u@example.com', 'over', 'b', 'guarded', now(), now(), now()) "
                   "RETURNING id")[0][0]
    # When Redis has lost everything and a worker gets the email anyway
    client_.flushdb()
    client_.set(MARKER, "1")
    outcomes: list = []
    build_deliverer(settings, redis_client=client_).deliver_many([email_id], outcomes)
    [(_, outcome)] = outcomes
    # Then it is not sent: moved to when the oldest send leaves the window, without spending an attempt
    assert outcome.result is Result.RATE_LIMITED
    assert sink.arrivals == []
    [(status, attempts, queued, wait_s)] = sql(
        "SELECT status, attempts, queued_at IS NOT NULL, extract(epoch FROM next_attempt_at - now()) "
        "FROM emails WHERE id = %s", email_id)
    assert (status, attempts, queued) == ("PENDING", 0, False)
    assert 28 < wait_s <= 29.1
    kinds = [k for (k,) in sql("SELECT kind FROM email_events WHERE email_id = %s ORDER BY id", email_id)]
    assert kinds == ["claimed", "rate_limited"]
    # And it keeps its turn in the hand-over's plan, at that time (not behind whatever queues after it)
    planned_s = client_.zscore(Caps.plan_key("default", "guarded"), str(email_id)) / 1000 - time.time()
    assert abs(planned_s - float(wait_s)) < 0.5


# -- the whole service ------------------------------------------------------------------------

async def put_sender(client, auth, sender: str, limit: int, **extra):
    resp = await client.put(f"/senders/{sender}", json={"fromAddress": f"{sender}@example.com",
                                                        "hourlyLimit": limit, **extra}, headers=auth)
    assert resp.status in (200, 201), await resp.text()


async def post_all(client, auth, payloads: list[dict]) -> list[int]:
    ids = []
    for payload in payloads:
        resp = await client.post("/emails", json=payload, headers=auth)
        assert resp.status == 201, await resp.text()
        ids.append((await resp.json())["jobId"])
    return ids


async def test_a_backlog_goes_out_window_by_window_each_email_claimed_once(make_service, sink, auth):
    # Given a sender with a limit of 3 per 2 s window
    service = await make_service(RATE_LIMIT_WINDOW_SECONDS="2")
    client = service.client
    await put_sender(client, auth, "capped", 3)
    # When 9 emails for it are due now
    started = time.time()
    ids = await post_all(client, auth, [email(f"backlog {i}") for i in range(9)])
    # Then the first 3 go at once, and the others are moved (not claimed) to when their slot frees
    await async_wait_for(lambda: len(sink.arrivals) >= 3, timeout_s=5, what="the first window")
    held = await (await client.get(f"/emails/{ids[-1]}", headers=auth)).json()
    assert held["status"] == "PENDING" and held["attempts"] == 0
    events = (await (await client.get(f"/emails/{ids[-1]}/events", headers=auth)).json())["events"]
    moves = [e for e in events if e["kind"] == "rate_limited"]
    assert moves and moves[-1]["detail"]["nextAttemptAt"][:19] == held["nextAttemptAt"][:19]
    assert "claimed" not in [e["kind"] for e in events]
    # And all 9 arrive, no window of 2 s holding more than 3, in three windows (and margins)
    await async_wait_for(lambda: len(sink.arrivals) >= 9, timeout_s=15, what="all 9")
    arrivals = [a.at for a in sink.arrivals]
    assert widest_window(arrivals, 3) >= 2 - CLOCK_MS
    assert max(arrivals) - started < 2 * (2 + MARGIN_MS / 1000) + 1.5
    assert sorted(a.message["Subject"] for a in sink.arrivals) == sorted(f"backlog {i}" for i in range(9))
    # And each was claimed once: the cap never had to refuse a claimed email (its sends recorded: the recorder
    # commits just after the sink has the message)
    await async_wait_for(lambda: sql("SELECT count(*) FROM emails WHERE id = ANY(%s) AND status = 'SENT'", ids)
                         == [(9,)], timeout_s=5, what="9 recorded")
    [(claims, sent, attempts)] = sql(
        "SELECT count(*) FILTER (WHERE kind = 'claimed'), count(*) FILTER (WHERE kind = 'sent'), "
        "(SELECT max(attempts) FROM emails WHERE id = ANY(%s)) FROM email_events WHERE email_id = ANY(%s)",
        ids, ids)
    assert (claims, sent, attempts) == (9, 9, 1)


async def test_a_flush_in_the_middle_of_a_window_does_not_let_the_sender_past_its_cap(
        make_service, sink, auth, redis_client):
    # Given a sender with a limit of 2 per 4 s window that has just sent 2 emails
    service = await make_service(RATE_LIMIT_WINDOW_SECONDS="4")
    client = service.client
    await put_sender(client, auth, "flushed", 2)
    await post_all(client, auth, [email(f"before {i}", "flushed") for i in range(2)])
    await async_wait_for(lambda: len(sink.arrivals) == 2, timeout_s=5, what="the first two")
    # When Redis loses everything (the cap's window, its plan, the queue), and 2 more come due
    redis_client.flushdb()
    redis_client.set(MARKER, "1")
    await post_all(client, auth, [email(f"after {i}", "flushed") for i in range(2)])
    # Then they wait for the window: they arrive, but only a whole window after the first two
    await async_wait_for(lambda: len(sink.arrivals) == 4, timeout_s=12, what="the two after the flush")
    arrivals = [a.at for a in sink.arrivals]
    assert widest_window(arrivals, 2) >= 4 - CLOCK_MS
    assert sorted(a.message["Subject"] for a in sink.arrivals) == ["after 0", "after 1", "before 0", "before 1"]


async def test_a_cancelled_or_moved_email_frees_its_planned_slot_for_the_senders_next(
        make_service, sink, auth, redis_client):
    # Given a sender with a limit of 2 per 30 s window, and two of its emails planned in 3 s
    service = await make_service(RATE_LIMIT_WINDOW_SECONDS="30")
    client = service.client
    await put_sender(client, auth, "replanned", 2)
    due = datetime.fromtimestamp(time.time() + 3, timezone.utc).isoformat()
    first, second = await post_all(client, auth, [dict(email(f"planned {i}", "replanned"), scheduledAt=due)
                                                  for i in range(2)])
    plan = Caps.plan_key("default", "replanned")
    await async_wait_for(lambda: redis_client.zcard(plan) == 2, timeout_s=5, what="both emails planned")
    # When one is cancelled and the other moved to tomorrow
    assert (await client.post(f"/emails/{first}/cancel", headers=auth)).status == 200
    tomorrow = datetime.fromtimestamp(time.time() + 86400, timezone.utc).isoformat()
    resp = await client.patch(f"/emails/{second}", json={"scheduledAt": tomorrow}, headers=auth)
    assert resp.status == 200, await resp.text()
    # Then their slots are free: two more due at the same time go then, not a window later
    assert redis_client.zcard(plan) == 0
    later = await post_all(client, auth, [dict(email(f"after {i}", "replanned"), scheduledAt=due)
                                          for i in range(2)])
    await async_wait_for(lambda: len(sink.arrivals) >= 2, timeout_s=8, what="the two emails after")
    assert sorted(a.message["Subject"] for a in sink.arrivals) == ["after 0", "after 1"]
    for job_id in later:
        events = (await (await client.get(f"/emails/{job_id}/events", headers=auth)).json())["events"]
        assert "rate_limited" not in [e["kind"] for e in events]


async def test_raising_a_senders_limit_brings_the_emails_its_cap_moved_forward(make_service, sink, auth):
    # Given a sender with a limit of 1 per 30 s window, and 3 of its emails due now: one sent, two moved
    service = await make_service(RATE_LIMIT_WINDOW_SECONDS="30")
    client = service.client
    await put_sender(client, auth, "raised", 1)
    ids = await post_all(client, auth, [email(f"raised {i}", "raised") for i in range(3)])

    async def moved() -> bool:
        rows = [await (await client.get(f"/emails/{i}", headers=auth)).json() for i in ids]
        return sum(r["status"] == "PENDING" and r["nextAttemptAt"] > r["scheduledAt"] for r in rows) == 2

    await async_wait_for(moved, timeout_s=5, what="two emails moved a window later")
    # (the first may still be in its SMTP conversation when the other two have been moved)
    await async_wait_for(lambda: sink.arrivals, timeout_s=5, what="the first email")
    assert len(sink.arrivals) == 1
    # When its limit is raised to 10
    raised_at = time.time()
    await put_sender(client, auth, "raised", 10)
    # Then the two go now, not a window later, and all three arrived once
    await async_wait_for(lambda: len(sink.arrivals) >= 3, timeout_s=8, what="the two moved emails")
    assert max(a.at for a in sink.arrivals) - raised_at < 8
    assert sorted(a.message["Subject"] for a in sink.arrivals) == ["raised 0", "raised 1", "raised 2"]


async def test_the_global_cap_holds_across_senders(make_service, sink, auth):
    # Given GLOBAL_RATE_LIMIT_PER_SECOND=2
    service = await make_service(GLOBAL_RATE_LIMIT_PER_SECOND="2")
    # When 6 emails of 6 senders (each far under its own cap) are due now
    started = time.time()
    await post_all(service.client, auth, [email(f"global {i}", f"sender{i}") for i in range(6)])
    # Then no second holds more than 2 of them, and they all go in about 3 s
    await async_wait_for(lambda: len(sink.arrivals) == 6, timeout_s=10, what="all 6")
    arrivals = [a.at for a in sink.arrivals]
    assert widest_window(arrivals, 2) >= 1 - CLOCK_MS
    assert max(arrivals) - started < 4.5


async def test_a_send_waiting_too_long_for_the_global_cap_gives_its_claim_back_unspent(make_service, sink, auth):
    # Given one send per second for everyone, 4 worker threads, claims that last 2 s, and a message per email
    service = await make_service(GLOBAL_RATE_LIMIT_PER_SECOND="1", WORKER_THREADS="4", LEASE_SECONDS="2",
                                 SMTP_TIMEOUT_SECONDS="1", SEND_BATCH="1")
    # When 4 emails are due now: the threads that would wait past half their claim's lease
    ids = await post_all(service.client, auth, [email(f"global {i}", f"s{i}") for i in range(4)])
    # Then they give their claim back instead (no attempt spent), and all 4 go, one per second, once
    await async_wait_for(lambda: len(sink.arrivals) == 4, timeout_s=15, what="all 4")
    # (a send is recorded a moment after the relay has it: the recorder commits sends in groups)
    await async_wait_for(lambda: sql("SELECT count(*) FROM emails WHERE id = ANY(%s) AND status = 'SENT'",
                                     ids)[0][0] == 4, timeout_s=5, what="all 4 recorded")
    assert widest_window([a.at for a in sink.arrivals], 1) >= 1 - CLOCK_MS
    assert sorted(sink.subjects()) == sorted(f"global {i}" for i in range(4))
    released = sql("SELECT detail->>'reason' FROM email_events WHERE kind = 'released' AND email_id = ANY(%s)", ids)
    assert released and {r for (r,) in released} == {"no slot under the global cap in time"}
    assert sql("SELECT max(attempts), min(attempts) FROM emails WHERE id = ANY(%s)", ids) == [(1, 1)]


@pytest.fixture
def auth_sink():
    """A relay that wants a login, and records the ones it got."""
    sink = SmtpSink(password="s3cr:t/pw").start()
    yield sink
    sink.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_two_senders_go_through_their_own_relays(make_service, sink, auth_sink, auth, caplog):
    caplog.set_level(logging.DEBUG)
    # Given the server's relay, and two senders with relays of their own, one of them with a login (over a
    # plain connection: the URL says ?starttls=never, as the contract asks for a password sent in clear)
    own = SmtpSink().start()
    try:
        service = await make_service(COLDMAIL_SECRET_KEY="3q2T3nOIQSsUtIGrqkQp0d34M3sdL2n7_CyJcUX8rQU=")
        client = service.client
        await put_sender(client, auth, "alice", 100, smtpUrl=own.url)
        await put_sender(client, auth, "bob", 100,
                         smtpUrl=f"smtp://bob%40example.com:s3cr%3At%2Fpw@127.0.0.1:{auth_sink.port}?starttls=never")
        # When each schedules an email, and a sender without a relay of its own does too
        await post_all(client, auth, [email("from alice", "alice"), email("from bob", "bob"),
                                      email("from carol", "carol")])
        # Then each went through its own relay, bob's after logging in with his password
        for relay, subject in ((own, "from alice"), (auth_sink, "from bob"), (sink, "from carol")):
            await async_wait_for(lambda r=relay: r.arrivals, timeout_s=5, what=subject)
            assert [a.message["Subject"] for a in relay.arrivals] == [subject]
        assert auth_sink.logins == [("bob@example.com", "s3cr:t/pw")]
        assert own.arrivals[0].mail_from == "alice@example.com"
        # And bob's password was in no log line, sending included
        assert "s3cr" not in caplog.text
    finally:
        own.stop()



def test_a_worker_thread_keeps_few_relay_connections_and_drops_idle_ones():
    from coldmail.mail.message import build_message
    from coldmail.mail.transports import MAX_RELAYS_PER_THREAD, Relay, SmtpTransport

    # Given more relays (senders with their own) than a worker thread keeps connections to
    sinks = [SmtpSink().start() for _ in range(MAX_RELAYS_PER_THREAD + 2)]
    try:
        smtp = SmtpTransport(timeout_s=2, idle_s=0.3, allow_private=True)

        def send(sink: SmtpSink, i: int) -> None:
            message = build_message(email_id=i, created_at=datetime.now(timezone.utc), from_address="a@example.com",
                                    recipient="u@example.com", subject=f"relay {i}", body="b")
            smtp.send(message, relay=Relay.from_url(sink.url), email_id=i)

        # When one thread sends through each of them
        for i, sink in enumerate(sinks):
            send(sink, i)
        # Then it keeps only the most recent connections open
        assert list(smtp._pool()) == [Relay.from_url(s.url) for s in sinks[2:]]
        # And a send again through a kept one reuses it, while one through a dropped one reconnects
        send(sinks[-1], 100)
        send(sinks[0], 101)
        assert (sinks[-1].handler.connections, sinks[0].handler.connections) == (1, 2)
        # When the thread has been idle longer than SMTP_IDLE_SECONDS, its next send closes the others
        time.sleep(0.4)
        send(sinks[1], 102)
        assert list(smtp._pool()) == [Relay.from_url(sinks[1].url)]
        smtp.close()
    finally:
        for sink in sinks:
            sink.stop()
