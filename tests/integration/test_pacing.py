"""Sending like a person, in one service (API, scheduler and an embedded worker) on the real database, Redis
and an SMTP sink: the sender's pacing fields, every bad one, windows applied at acceptance, the recipient's zone,
the day limit, the gap, and placing again after a window change. Windows are seconds long, a few seconds ahead
in the sender's zone."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg2
import pytest

from tests.support.db import sql
from tests.support.waiting import async_wait_for
from tests.support.windows import ALL_DAYS, window_from_now

UTC = timezone.utc


def sender(**pacing) -> dict:
    return {"fromAddress": "pacer@example.com", "hourlyLimit": 100, **pacing}



def email(i: int, **extra) -> dict:
    return {"recipient": f"r{i}@example.com", "subject": f"paced {i}", "body": "hello", "senderId": "pacer",
            **extra}


def iso_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def events_of(client, auth, email_id: int) -> list[dict]:
    return (await (await client.get(f"/emails/{email_id}/events", headers=auth)).json())["events"]


async def test_pacing_fields_are_stored_shown_kept_when_omitted_and_turned_off_by_null(client, auth):
    # When a sender is put with every pacing field
    body = sender(timeZone="Europe/Berlin",
                  sendingWindow={"days": ["fri", "mon", "tue"], "start": "09:00", "end": "17:00:30"},
                  dailyLimit=50, warmup={"startPerDay": 10, "increasePerDay": 5, "startDate": "2026-12-01"},
                  minGapSeconds=240, jitterSeconds=120)
    resp = await client.put("/senders/pacer", json=body, headers=auth)
    assert resp.status == 201
    shown = await resp.json()
    # Then GET shows them (days in week order), and today's usage and limit
    assert {k: shown[k] for k in ("timeZone", "sendingWindow", "dailyLimit", "warmup", "minGapSeconds",
                                  "jitterSeconds")} == {
        "timeZone": "Europe/Berlin", "sendingWindow": {"days": ["mon", "tue", "fri"], "start": "09:00",
                                                        "end": "17:00:30"},
        "dailyLimit": 50, "warmup": {"startPerDay": 10, "increasePerDay": 5, "startDate": "2026-12-01"},
        "minGapSeconds": 240, "jitterSeconds": 120}
    today = datetime.now(ZoneInfo("Europe/Berlin")).date()
    expected_limit = min(50, 10 + 5 * max(0, (today - datetime(2026, 12, 1).date()).days))
    assert shown["usage"] == {**shown["usage"], "sentToday": 0, "todayLimit": expected_limit}
    # When it is put again without them, Then they are kept
    again = await (await client.put("/senders/pacer", json=sender(hourlyLimit=7), headers=auth)).json()
    assert again["dailyLimit"] == 50 and again["sendingWindow"] == shown["sendingWindow"]
    # When each is put as null, Then each is off
    off = await (await client.put("/senders/pacer", json=sender(
        timeZone=None, sendingWindow=None, dailyLimit=None, warmup=None, minGapSeconds=None, jitterSeconds=None),
        headers=auth)).json()
    assert {k: off[k] for k in ("timeZone", "sendingWindow", "dailyLimit", "warmup", "minGapSeconds",
                                "jitterSeconds")} == {"timeZone": "UTC", "sendingWindow": None, "dailyLimit": None,
                                                      "warmup": None, "minGapSeconds": 0, "jitterSeconds": 0}
    assert off["usage"]["todayLimit"] is None
    # And a warm-up without a start date starts today in the sender's zone
    warm = await (await client.put("/senders/pacer", json=sender(
        timeZone="Pacific/Kiritimati", warmup={"startPerDay": 3, "increasePerDay": 1}), headers=auth)).json()
    assert warm["warmup"]["startDate"] == datetime.now(ZoneInfo("Pacific/Kiritimati")).date().isoformat()
    assert warm["usage"]["todayLimit"] == 3


BAD = [
    ({"timeZone": "Mars/Olympus_Mons"}, ["timeZone"]),
    ({"timeZone": ""}, ["timeZone"]),
    ({"timeZone": 5}, ["timeZone"]),
    ({"sendingWindow": {"days": ["mon"], "start": "17:00", "end": "09:00"}}, ["sendingWindow", "end"]),
    ({"sendingWindow": {"days": ["mon"], "start": "09:00", "end": "09:00"}}, ["sendingWindow", "end"]),
    ({"sendingWindow": {"days": ["monday"], "start": "09:00", "end": "10:00"}}, ["sendingWindow", "days"]),
    ({"sendingWindow": {"days": [], "start": "09:00", "end": "10:00"}}, ["sendingWindow", "days"]),
    ({"sendingWindow": {"days": ["mon", "mon"], "start": "09:00", "end": "10:00"}}, ["sendingWindow", "days"]),
    ({"sendingWindow": {"days": ["mon"], "start": "9:00", "end": "10:00"}}, ["sendingWindow", "start"]),
    ({"sendingWindow": {"days": ["mon"], "start": "09:00", "end": "24:00"}}, ["sendingWindow", "end"]),
    ({"sendingWindow": {"days": ["mon"], "start": "09:00:60", "end": "10:00"}}, ["sendingWindow", "start"]),
    ({"sendingWindow": {"days": ["mon"], "start": "09:00"}}, ["sendingWindow", "end"]),
    ({"sendingWindow": {"days": ["mon"], "start": "09:00", "end": "10:00", "tz": "UTC"}}, ["sendingWindow", "tz"]),
    ({"sendingWindow": "09:00-17:00"}, ["sendingWindow"]),
    ({"dailyLimit": -1}, ["dailyLimit"]),
    ({"dailyLimit": 1.5}, ["dailyLimit"]),
    ({"dailyLimit": "50"}, ["dailyLimit"]),
    ({"warmup": {"startPerDay": 10}}, ["warmup", "increasePerDay"]),
    ({"warmup": {"increasePerDay": 5}}, ["warmup", "startPerDay"]),
    ({"warmup": {}}, ["warmup", "startPerDay"]),
    ({"warmup": {"startPerDay": -1, "increasePerDay": 5}}, ["warmup", "startPerDay"]),
    ({"warmup": {"startPerDay": 1, "increasePerDay": 5, "startDate": "2026-13-01"}}, ["warmup", "startDate"]),
    ({"minGapSeconds": -5}, ["minGapSeconds"]),
    ({"jitterSeconds": -1}, ["jitterSeconds"]),
    ({"minGapSeconds": 86_401}, ["minGapSeconds"]),
    ({"jitterSeconds": True}, ["jitterSeconds"]),
]


@pytest.mark.parametrize("fields, path", BAD)
async def test_every_bad_pacing_field_is_a_400_naming_it(client, auth, fields, path):
    resp = await client.put("/senders/pacer", json=sender(**fields), headers=auth)
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    where = body["fields"]
    for key in path:
        assert key in where, body
        where = where[key]
    # And nothing was stored
    assert (await client.get("/senders/pacer", headers=auth)).status == 404


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "Europe/Berlin ", 7])
async def test_a_bad_recipient_time_zone_is_a_400_naming_it(client, auth, zone):
    resp = await client.post("/emails", json=email(1, recipientTimeZone=zone), headers=auth)
    assert resp.status == 400
    assert "recipientTimeZone" in (await resp.json())["fields"]


async def test_nothing_goes_before_the_window_opens_nor_after_it_closes(client, auth, sink):
    # Given a sender whose window opens 3 s from now for 2 s, in Asia/Kolkata's wall clock (+05:30)
    window, opens, closes = window_from_now("Asia/Kolkata", 3, 2)
    assert (await client.put("/senders/pacer", json=sender(timeZone="Asia/Kolkata", sendingWindow=window),
                             headers=auth)).status == 201
    # When emails are scheduled for now, and one for after the window closes
    ids = [(await (await client.post("/emails", json=email(i), headers=auth)).json())["jobId"] for i in range(3)]
    late = (await (await client.post("/emails", json=email(9, scheduledAt=(closes + timedelta(seconds=1))
                                                           .isoformat()), headers=auth)).json())["jobId"]
    # Then each shows the window's opening at once (the late one: tomorrow's)
    for email_id in ids:
        got = await (await client.get(f"/emails/{email_id}", headers=auth)).json()
        assert iso_time(got["nextAttemptAt"]) == opens
    got = await (await client.get(f"/emails/{late}", headers=auth)).json()
    assert iso_time(got["nextAttemptAt"]) == opens + timedelta(days=1)
    # And they arrive after the opening, the first within a second of it, none after the close
    await async_wait_for(lambda: len(sink.arrivals) >= 3, timeout_s=15)
    times = sorted(a.at for a in sink.arrivals)
    assert all(t >= opens.timestamp() for t in times)
    assert times[0] - opens.timestamp() < 1.0
    await asyncio.sleep(max(0.0, closes.timestamp() + 1 - time.time()))
    assert len(sink.arrivals) == 3


async def test_the_recipients_zone_reads_the_window(client, auth, sink):
    # Given a window a few seconds ahead in New York, set on a sender in Tokyo
    window, opens, _ = window_from_now("America/New_York", 3, 3)
    await client.put("/senders/pacer", json=sender(timeZone="Asia/Tokyo", sendingWindow=window), headers=auth)
    # When one email reads it in New York, the other in the sender's zone
    ny = await (await client.post("/emails", json=email(1, recipientTimeZone="America/New_York"),
                                  headers=auth)).json()
    tokyo = await (await client.post("/emails", json=email(2), headers=auth)).json()
    # Then the New York one goes at the opening, the Tokyo one (14 h apart) not now
    ny_row = await (await client.get(f"/emails/{ny['jobId']}", headers=auth)).json()
    assert iso_time(ny_row["nextAttemptAt"]) == opens and ny_row["recipientTimeZone"] == "America/New_York"
    tokyo_row = await (await client.get(f"/emails/{tokyo['jobId']}", headers=auth)).json()
    assert iso_time(tokyo_row["nextAttemptAt"]) - opens in (timedelta(hours=10), timedelta(hours=-14),
                                                            timedelta(hours=-13), timedelta(hours=11),
                                                            timedelta(hours=10) + timedelta(days=1),
                                                            timedelta(hours=11) + timedelta(days=1),
                                                            timedelta(hours=-14) + timedelta(days=1),
                                                            timedelta(hours=-13) + timedelta(days=1))
    await async_wait_for(lambda: len(sink.arrivals) >= 1, timeout_s=15)
    assert sink.arrivals[0].at >= opens.timestamp() and sink.arrivals[0].rcpt_tos == ["r1@example.com"]


async def test_the_day_limit_sends_that_many_and_moves_the_rest_to_the_next_days_opening(client, auth, sink):
    # Given a sender allowed 3 a day, with a window of every day 00:00:00–23:59:59 in Berlin
    await client.put("/senders/pacer", json=sender(
        timeZone="Europe/Berlin", dailyLimit=3,
        sendingWindow={"days": ALL_DAYS, "start": "00:00", "end": "23:59:59"}), headers=auth)
    # When 6 emails are due now
    resp = await client.post("/emails/batch", json={"emails": [email(i) for i in range(6)]}, headers=auth)
    ids = (await resp.json())["jobIds"]
    # Then 3 are sent and 3 wait for tomorrow's opening in Berlin, each with one daily_limit event
    await async_wait_for(lambda: len(sink.arrivals) >= 3, timeout_s=15)
    tomorrow = datetime.combine(datetime.now(ZoneInfo("Europe/Berlin")).date() + timedelta(days=1),
                                datetime.min.time(), ZoneInfo("Europe/Berlin"))
    # (a move is stored as now() + its delay: within a few ms of the instant)
    await async_wait_for(lambda: sql("SELECT count(*) FROM emails WHERE status = 'PENDING' "
                                     "AND abs(extract(epoch FROM next_attempt_at - %s)) < 0.5", tomorrow) == [(3,)],
                         timeout_s=15)
    await asyncio.sleep(1)
    assert len(sink.arrivals) == 3
    moved = [i for i in ids if sql("SELECT status FROM emails WHERE id = %s", i) == [("PENDING",)]]
    for email_id in moved:
        deferred = [e for e in await events_of(client, auth, email_id) if e["kind"] == "deferred"]
        assert [e["detail"]["reason"] for e in deferred] == ["daily_limit"]
        assert abs(iso_time(deferred[0]["detail"]["nextAttemptAt"]) - tomorrow) < timedelta(seconds=0.5)
    shown = await (await client.get("/senders/pacer", headers=auth)).json()
    assert (shown["usage"]["sentToday"], shown["usage"]["todayLimit"]) == (3, 3)


async def test_sends_are_a_gap_and_a_jitter_apart(client, auth, sink):
    # Given a sender whose sends are 1 s apart plus up to 1 s of jitter
    await client.put("/senders/pacer", json=sender(minGapSeconds=1, jitterSeconds=1), headers=auth)
    # When 5 emails are due at once
    await client.post("/emails/batch", json={"emails": [email(i) for i in range(5)]}, headers=auth)
    # Then they arrive at least a second apart, and not all equally apart
    await async_wait_for(lambda: len(sink.arrivals) >= 5, timeout_s=30)
    times = sorted(a.at for a in sink.arrivals)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 1.0 - 0.02, gaps
    assert max(gaps) - min(gaps) > 0.05, gaps


async def test_a_window_change_places_the_pending_emails_again(client, auth):
    # Given 50 emails for tomorrow 10:00 UTC, no window
    await client.put("/senders/pacer", json=sender(), headers=auth)
    at = (datetime.now(UTC) + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    batch = {"emails": [email(i, scheduledAt=at.isoformat()) for i in range(50)]}
    ids = (await (await client.post("/emails/batch", json=batch, headers=auth)).json())["jobIds"]
    # When the sender gets a window of 12:00–13:00 in a zone fixed at UTC+2
    window = {"days": ALL_DAYS, "start": "12:00", "end": "13:00"}
    resp = await client.put("/senders/pacer", json=sender(timeZone="Etc/GMT-2", sendingWindow=window),
                            headers=auth)
    assert resp.status == 200
    # Then every one is due at 10:00 UTC (12:00 in UTC+2) — no move; and with a window at 14:00 local
    rows = sql("SELECT DISTINCT next_attempt_at FROM emails WHERE id = ANY(%s)", ids)
    assert rows == [(at,)]
    window["start"], window["end"] = "14:00", "15:00"
    await client.put("/senders/pacer", json=sender(sendingWindow=window), headers=auth)
    assert sql("SELECT DISTINCT next_attempt_at FROM emails WHERE id = ANY(%s)", ids) == [(at + timedelta(hours=2),)]
    deferred = [e for e in await events_of(client, auth, ids[0]) if e["kind"] == "deferred"]
    assert [e["detail"]["reason"] for e in deferred] == ["window"]
    # And turning the window off brings them back to their own time
    await client.put("/senders/pacer", json=sender(sendingWindow=None), headers=auth)
    assert sql("SELECT DISTINCT next_attempt_at FROM emails WHERE id = ANY(%s)", ids) == [(at,)]


async def test_a_window_changed_while_paused_places_the_emails_the_pause_did_not_hold(client, auth):
    # Given a paused sender sending 14:00–15:00 UTC, and an email of it for tomorrow 10:00 UTC (due at 14:00),
    # which the pause has not touched (not due yet)
    window = {"days": ALL_DAYS, "start": "14:00", "end": "15:00"}
    await client.put("/senders/pacer", json=sender(sendingWindow=window), headers=auth)
    at = (datetime.now(UTC) + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    (email_id,) = (await (await client.post("/emails/batch", json={"emails": [email(0, scheduledAt=at.isoformat())]},
                                            headers=auth)).json())["jobIds"]
    assert sql("SELECT next_attempt_at FROM emails WHERE id = %s", email_id) == [(at + timedelta(hours=4),)]
    assert (await client.put("/senders/pacer", json=sender(paused=True), headers=auth)).status == 200
    # And another one the pause moved out of the way (as the hand-over does: a day on, a `deferred` `paused` event)
    (held,) = (await (await client.post("/emails/batch", json={"emails": [email(1)]}, headers=auth)).json())["jobIds"]
    [(held_at,)] = sql("UPDATE emails SET next_attempt_at = now() + interval '1 day' WHERE id = %s "
                       "RETURNING next_attempt_at", held)
    sql("INSERT INTO email_events (email_id, kind, detail) VALUES (%s, 'deferred', '{\"reason\": \"paused\"}')",
        held)
    # When its window becomes 10:00–11:00 while it is paused
    window["start"], window["end"] = "10:00", "11:00"
    assert (await client.put("/senders/pacer", json=sender(sendingWindow=window), headers=auth)).status == 200
    # Then the email the pause holds stays where the pause put it
    assert sql("SELECT next_attempt_at FROM emails WHERE id = %s", held) == [(held_at,)]
    # And when it is resumed
    assert (await client.put("/senders/pacer", json=sender(paused=False), headers=auth)).status == 200
    # Then the email is due at the new window's opening (its own time), not at the old window's, a day late
    assert sql("SELECT next_attempt_at FROM emails WHERE id = %s", email_id) == [(at,)]


async def test_a_put_is_one_transaction_nothing_of_it_shows_until_all_of_it_does(client, auth, database_url):
    # Given a sender with one email for tomorrow, and another connection holding that email's row locked
    await client.put("/senders/pacer", json=sender(), headers=auth)
    at = (datetime.now(UTC) + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    (email_id,) = (await (await client.post("/emails/batch", json={"emails": [email(0, scheduledAt=at.isoformat())]},
                                            headers=auth)).json())["jobIds"]
    locker = psycopg2.connect(database_url)
    try:
        locker.cursor().execute("SELECT 1 FROM emails WHERE id = %s FOR UPDATE", (email_id,))
        # When one PUT changes its From, says it is not paused, and gives it a window its email must move for
        window = {"days": ALL_DAYS, "start": "14:00", "end": "15:00"}
        put = asyncio.ensure_future(client.put("/senders/pacer", json=sender(
            fromAddress="renamed@example.com", paused=False, sendingWindow=window, timeZone="UTC"), headers=auth))
        await async_wait_for(lambda: sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                         "AND datname = current_database()")[0][0],
                             timeout_s=10, what="the PUT waiting for the locked email")
        # Then while the re-placement waits for the row, nothing of the PUT shows: not its From, not its window
        assert sql("SELECT from_address, sending_window FROM senders WHERE id = 'pacer'") == [
            ("pacer@example.com", None)]
    finally:
        locker.rollback()
        locker.close()
    # And once it can, all of it does, the email moved with it
    assert (await put).status == 200
    assert sql("SELECT from_address, sending_window IS NOT NULL FROM senders WHERE id = 'pacer'") == [
        ("renamed@example.com", True)]
    assert sql("SELECT next_attempt_at FROM emails WHERE id = %s", email_id) == [(at + timedelta(hours=4),)]


def test_the_day_limit_is_exact_under_acquires_racing_from_two_clients(make_settings, redis_url):
    """Two processes' worth of Redis clients, 8 threads each, all acquiring for one paced sender at once:
    exactly its day's limit get a slot (the window, the day count and the gap are one script call)."""
    import threading

    import redis as redis_lib

    from coldmail.caps import Caps
    from coldmail.caps.pacing import Pacing

    settings = make_settings()
    sql("INSERT INTO senders (account, id, daily_limit) VALUES ('default', 'racer', 7)")
    pacing = Pacing(time_zone="Europe/Berlin", daily_limit=7)
    clients = [redis_lib.Redis.from_url(redis_url) for _ in range(2)]
    caps = [Caps(settings, client) for client in clients]
    allowed: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def race(k: int) -> None:
        start.wait()
        for n in range(10):
            email_id = 1000 * k + n
            [decision] = caps[k % 2].acquire([("default", "racer", 1000, email_id, pacing, 0)])
            if decision.allowed:
                with lock:
                    allowed.append(email_id)
            else:
                assert decision.reason == "daily_limit"

    threads = [threading.Thread(target=race, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(allowed) == 7
    assert caps[0].sent_today("default", "racer", pacing) == 7
    for client in clients:
        client.close()


def test_the_day_count_and_gap_are_rebuilt_from_postgresql_when_redis_lost_them(make_settings, redis_client):
    from coldmail.caps import Caps
    from coldmail.caps.pacing import Pacing

    # Given a sender allowed 3 a day that sent 2 today, the last one 1 s ago, with a 30 s gap
    sql("INSERT INTO senders (account, id, daily_limit, min_gap_s) VALUES ('default', 'lost', 3, 30)")
    sql("INSERT INTO emails (recipient, subject, body, sender_id, status, scheduled_at, next_attempt_at, attempts, "
        "sent_at) SELECT 'u@example.com', 's', 'b', 'lost', 'SENT', now(), now(), 1, now() - s * interval '1 second' "
        "FROM generate_series(1, 2) AS s")
    pacing = Pacing(daily_limit=3, min_gap_s=30)
    caps = Caps(make_settings(), redis_client)
    # When Redis has lost everything (the test's own marker kept)
    from tests.conftest import MARKER
    redis_client.flushdb()
    redis_client.set(MARKER, "1")
    # Then the next send waits for the gap since the last send (about 29 s), not a fresh start
    [decision] = caps.acquire([("default", "lost", 100, 1, pacing, 0)])
    assert (decision.allowed, decision.reason) == (False, "gap")
    assert 27_000 < decision.wait_ms <= 29_100
    assert caps.sent_today("default", "lost", pacing) == 2


def test_a_day_limit_without_a_gap_never_holds_a_send_back_for_a_gap(make_settings, redis_client):
    from coldmail.caps import Caps
    from coldmail.caps.pacing import Pacing

    # Given a sender allowed 10 a day, with no gap and no jitter
    pacing = Pacing(daily_limit=10)
    caps = Caps(make_settings(), redis_client)
    # When a worker takes a slot for an email due in 2 s (claimed a little early), and another for one due now
    [first] = caps.acquire([("default", "nogap", 100, 1, pacing, 2000)])
    [second] = caps.acquire([("default", "nogap", 100, 2, pacing, 0)])
    # Then both go: the first one's wait is no gap the second must keep
    assert first.allowed and (second.allowed, second.reason) == (True, "hourly_limit")
    assert caps.sent_today("default", "nogap", pacing) == 2


@pytest.mark.parametrize("now, sent, today", [
    # Berlin's 25-hour day (falls back 2026-10-25), at 23:30 CET: a send at 11:00 CET that day is today's
    (datetime(2026, 10, 25, 22, 30, tzinfo=UTC), datetime(2026, 10, 25, 10, tzinfo=UTC), 1),
    # the day after Berlin's 23-hour day (springs forward 2026-03-29), at 00:30 CEST on the 30th: a send at noon
    # on the 29th is yesterday's
    (datetime(2026, 3, 29, 22, 30, tzinfo=UTC), datetime(2026, 3, 29, 10, tzinfo=UTC), 0),
])
def test_the_day_count_rebuilt_from_postgresql_counts_the_local_day_across_a_dst_change(
        make_settings, redis_client, monkeypatch, now, sent, today):
    from coldmail.caps import Caps, service
    from coldmail.caps.pacing import Pacing

    # Given a Berlin sender allowed 1 a day with one send in PostgreSQL, and the clock at `now`
    sql("INSERT INTO senders (account, id, time_zone, daily_limit) VALUES ('default', 'dst', 'Europe/Berlin', 1)")
    sql("INSERT INTO emails (recipient, subject, body, sender_id, status, scheduled_at, next_attempt_at, attempts, "
        "sent_at) VALUES ('u@example.com', 's', 'b', 'dst', 'SENT', %s, %s, 1, %s)", sent, sent, sent)
    monkeypatch.setattr(service, "_now", lambda: now)
    pacing = Pacing(time_zone="Europe/Berlin", daily_limit=1)
    caps = Caps(make_settings(), redis_client)
    # When the day count is read from PostgreSQL (Redis has no pace for the sender)
    # Then it counts the sends since the local day's midnight, whether that day has 23, 24 or 25 hours
    assert caps.sent_today_in_db("default", "dst", pacing) == today
    # And the next send is refused exactly when the day's one send was made (the pace rebuilt from that count)
    [decision] = caps.acquire([("default", "dst", 100, 1, pacing, 0)])
    assert decision.allowed == (today == 0)
    assert decision.allowed or decision.reason == "daily_limit"


# -- the worker's guard, when the plan did not stop an email (two processes planned at once, a stale read) --

def _due_email(sender_id: str, subject: str = "guarded", zone: str | None = None) -> int:
    return sql("INSERT INTO emails (recipient, recipient_key, subject, body, sender_id, scheduled_at, "
               "next_attempt_at, queued_at, recipient_time_zone) VALUES ('u@example.com', 'u@example.com', %s, 'b', "
               "%s, now(), now(), now(), %s) RETURNING id", subject, sender_id, zone)[0][0]


@pytest.fixture
def worker(make_settings, redis_client, sink):
    from coldmail.delivery.wiring import build_deliverer

    return build_deliverer(make_settings(SMTP_URL=sink.url), redis_client=redis_client)


def _moves(email_id: int) -> list[tuple]:
    return sql("SELECT kind, detail->>'reason' FROM email_events WHERE email_id = %s AND kind <> 'claimed' "
               "ORDER BY id", email_id)


def test_the_worker_moves_an_email_over_the_day_limit_to_the_next_days_opening(worker, sink):
    from coldmail.delivery.outcomes import Result

    # Given a sender allowed 1 a day (Berlin) that sent one today, and an email of it handed over anyway
    sql("INSERT INTO senders (account, id, time_zone, daily_limit) VALUES ('default', 'daily', 'Europe/Berlin', 1)")
    sql("INSERT INTO emails (recipient, subject, body, sender_id, status, scheduled_at, next_attempt_at, attempts, "
        "sent_at) VALUES ('u@example.com', 's', 'b', 'daily', 'SENT', now(), now(), 1, now())")
    email_id = _due_email("daily")
    # When a worker gets it
    outcomes: list = []
    worker.deliver_many([email_id], outcomes)
    # Then it is not sent but moved, without an attempt, to tomorrow's start in Berlin, with one event
    assert [o.result for _, o in outcomes] == [Result.MOVED] and sink.arrivals == []
    tomorrow = datetime.combine(datetime.now(ZoneInfo("Europe/Berlin")).date() + timedelta(days=1),
                                datetime.min.time(), ZoneInfo("Europe/Berlin"))
    assert sql("SELECT status, attempts, next_attempt_at FROM emails WHERE id = %s", email_id) == [
        ("PENDING", 0, tomorrow)]
    assert _moves(email_id) == [("deferred", "daily_limit")]


def test_the_worker_moves_an_email_before_its_senders_gap_ends_and_writes_its_webhook(worker, sink):
    from coldmail.delivery.outcomes import Result

    # Given a sender 30 s apart whose last send was 1 s ago, with a webhook endpoint for email.deferred
    sql("INSERT INTO senders (account, id, min_gap_s) VALUES ('default', 'gapped', 30)")
    sql("INSERT INTO emails (recipient, subject, body, sender_id, status, scheduled_at, next_attempt_at, attempts, "
        "sent_at) VALUES ('u@example.com', 's', 'b', 'gapped', 'SENT', now(), now(), 1, now() - interval '1 second')")
    sql("INSERT INTO webhooks (account, url, events, secret_enc) VALUES ('default', 'https://hooks.example.com/x', "
        "ARRAY['email.deferred'], 'sealed')")
    email_id = _due_email("gapped")
    outcomes: list = []
    worker.deliver_many([email_id], outcomes)
    # Then it goes back PENDING to when the gap ends (about 29 s), no attempt, one `gap` event and its webhook
    assert [o.result for _, o in outcomes] == [Result.MOVED] and sink.arrivals == []
    [(status, attempts, wait_s)] = sql("SELECT status, attempts, extract(epoch FROM next_attempt_at - now()) "
                                       "FROM emails WHERE id = %s", email_id)
    assert (status, attempts) == ("PENDING", 0) and 27 < float(wait_s) <= 29.5
    assert _moves(email_id) == [("deferred", "gap")]
    [(detail,)] = sql("SELECT payload->'data' FROM webhook_deliveries")
    assert detail["reason"] == "gap" and detail["email"]["id"] == email_id


def test_the_worker_never_sends_outside_the_window_of_the_recipients_zone(worker, sink):
    from coldmail.delivery.outcomes import Result

    # Given a sender whose window is 1 hour a day, an hour from now in the recipient's zone
    zone = "America/New_York"
    local = datetime.now(ZoneInfo(zone)) + timedelta(hours=1)
    if local.hour == 23:
        pytest.skip("the window would cross local midnight")
    window = {"days": ALL_DAYS, "start": f"{local.hour:02d}:00", "end": f"{local.hour:02d}:59"}
    sql("INSERT INTO senders (account, id, sending_window) VALUES ('default', 'windowed', %s::jsonb)",
        __import__("json").dumps(window))
    email_id = _due_email("windowed", zone=zone)
    outcomes: list = []
    worker.deliver_many([email_id], outcomes)
    # Then it is moved to the window's opening, not sent
    assert [o.result for _, o in outcomes] == [Result.MOVED] and sink.arrivals == []
    opening = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    assert sql("SELECT next_attempt_at FROM emails WHERE id = %s", email_id) == [(opening,)]
    assert _moves(email_id) == [("deferred", "window")]


async def test_a_moved_email_is_due_at_its_windows_next_opening(client, auth):
    # Given a sender sending 12:00–13:00 UTC, and an email of it for 2 days ahead at 12:30
    await client.put("/senders/pacer", json=sender(sendingWindow={"days": ALL_DAYS, "start": "12:00",
                                                                   "end": "13:00"}), headers=auth)
    day = (datetime.now(UTC) + timedelta(days=2)).replace(hour=12, minute=30, second=0, microsecond=0)
    job = (await (await client.post("/emails", json=email(1, scheduledAt=day.isoformat()), headers=auth)).json())
    got = await (await client.get(f"/emails/{job['jobId']}", headers=auth)).json()
    assert iso_time(got["nextAttemptAt"]) == day
    # When it is moved (PATCH) to 14:00, after the window closes
    resp = await client.patch(f"/emails/{job['jobId']}", json={"scheduledAt": day.replace(hour=14).isoformat()},
                              headers=auth)
    assert resp.status == 200
    got = await (await client.get(f"/emails/{job['jobId']}", headers=auth)).json()
    # Then it keeps the time asked for, and is due at the next day's opening
    assert iso_time(got["scheduledAt"]) == day.replace(hour=14)
    assert iso_time(got["nextAttemptAt"]) == day.replace(hour=12, minute=0) + timedelta(days=1)
