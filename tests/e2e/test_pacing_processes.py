"""Sending like a person across real processes: `python run.py api` and two `dramatiq coldmail.worker`
processes. Windows are seconds long, a few seconds ahead in the sender's (or recipient's) wall clock; gaps are a
second."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from tests.support.processes import start_dramatiq, start_run_py, wait_healthy
from tests.support.waiting import wait_for
from tests.support.windows import ALL_DAYS, window_from_now

pytestmark = pytest.mark.e2e

UTC = timezone.utc


@pytest.fixture
def stack(base_env, sink, port, http):
    """The API with its scheduler, and two worker processes of 4 threads each."""
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port))
    api = start_run_py(env, "api")
    workers = [start_dramatiq(env, processes=1, threads=4) for _ in range(2)]
    try:
        wait_healthy(http.base_url, api)
        yield http
    finally:
        for worker in workers:
            worker.terminate()
        api.terminate()



def put_sender(http, sender_id: str, **pacing) -> dict:
    status, body = http.request("PUT", f"/senders/{sender_id}", {"fromAddress": "me@example.com",
                                                                "hourlyLimit": 1000, **pacing})
    assert status in (200, 201), body
    return body


def schedule(http, sender_id: str, n: int, *, first: int = 0, **extra) -> list[int]:
    status, body = http.post("/emails/batch", {"emails": [
        {"recipient": f"{sender_id}{i}@example.com", "subject": f"{sender_id} {i}", "body": "Hi",
         "senderId": sender_id, **extra} for i in range(first, first + n)]})
    assert status == 201, body
    return body["jobIds"]


def arrivals_of(sink, sender_id: str) -> list[float]:
    return sorted(a.at for a in sink.arrivals if a.rcpt_tos[0].startswith(sender_id))


def test_windows_in_the_senders_and_the_recipients_zone(stack, sink):
    http = stack
    # Given a sender whose window (in Kolkata's wall clock) opens in 4 s for 3 s
    window, opens, closes = window_from_now("Asia/Kolkata", 4, 3)
    put_sender(http, "kolkata", timeZone="Asia/Kolkata", sendingWindow=window)
    # And one in Tokyo whose emails read the window in New York's wall clock, opening in 5 s
    ny_window, ny_opens, ny_closes = window_from_now("America/New_York", 5, 3)
    put_sender(http, "tokyo", timeZone="Asia/Tokyo", sendingWindow=ny_window)
    # When 6 emails of the first are due now and 4 just after its window closes, and 4 of the second now
    ids = schedule(http, "kolkata", 6)
    late = http.post("/emails", {"recipient": "kolkatalate@example.com", "subject": "late", "body": "Hi",
                                 "senderId": "kolkata",
                                 "scheduledAt": (closes + timedelta(seconds=0.5)).isoformat()})[1]["jobId"]
    ny_ids = schedule(http, "tokyo", 4, recipientTimeZone="America/New_York")
    # Then each shows its window's opening at once
    assert {http.get(f"/emails/{i}")[1]["nextAttemptAt"] for i in ids} == {opens.isoformat(timespec="milliseconds")
                                                                           .replace("+00:00", "Z")}
    assert {http.get(f"/emails/{i}")[1]["nextAttemptAt"] for i in ny_ids} == {
        ny_opens.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    # And nothing arrives before its opening, the first within a second of it, and nothing after the close
    wait_for(lambda: len(sink.arrivals) >= 10, timeout_s=20, what="10 arrivals")
    kolkata, tokyo = arrivals_of(sink, "kolkata"), arrivals_of(sink, "tokyo")
    print(f"\nKolkata after its opening: {[round(t - opens.timestamp(), 3) for t in kolkata]}"
          f"\nTokyo (New York window) after its opening: {[round(t - ny_opens.timestamp(), 3) for t in tokyo]}")
    assert len(kolkata) == 6 and len(tokyo) == 4
    assert opens.timestamp() <= kolkata[0] < opens.timestamp() + 1 and kolkata[-1] < closes.timestamp()
    assert ny_opens.timestamp() <= tokyo[0] < ny_opens.timestamp() + 1 and tokyo[-1] < ny_closes.timestamp()
    time.sleep(max(0.0, closes.timestamp() + 1.5 - time.time()))
    assert len(arrivals_of(sink, "kolkata")) == 6
    # And the one asked for after the close waits for tomorrow's opening
    row = http.get(f"/emails/{late}")[1]
    assert (row["status"], row["nextAttemptAt"]) == (
        "PENDING", (opens + timedelta(days=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def test_a_day_limit_with_warmup_is_exact_with_two_workers_racing(stack, sink):
    http = stack
    # Given a sender warming up since yesterday: 3 + 2 a day, so 5 today (dailyLimit 10)
    yesterday = (datetime.now(ZoneInfo("Europe/Berlin")).date() - timedelta(days=1)).isoformat()
    shown = put_sender(http, "warm", timeZone="Europe/Berlin", dailyLimit=10,
                       warmup={"startPerDay": 3, "increasePerDay": 2, "startDate": yesterday})
    assert shown["usage"]["todayLimit"] == 5
    # When 12 emails are due now, in three requests (each hand-over plans them apart)
    ids = [i for k in range(3) for i in schedule(http, "warm", 4, first=4 * k)]
    # Then exactly 5 arrive, and the 7 others wait for tomorrow, each with one daily_limit event
    wait_for(lambda: len(sink.arrivals) >= 5, timeout_s=15, what="5 arrivals")

    def moved() -> list[int]:
        return [i for i in ids if any(e["kind"] == "deferred" and e["detail"]["reason"] == "daily_limit"
                                      for e in http.get(f"/emails/{i}/events")[1]["events"])]

    wait_for(lambda: len(moved()) == 7, timeout_s=15, what="7 moved")
    time.sleep(2)
    assert len(sink.arrivals) == 5
    assert sorted(sink.subjects()) == sorted(set(sink.subjects()))
    tomorrow = datetime.combine(datetime.now(ZoneInfo("Europe/Berlin")).date() + timedelta(days=1),
                                datetime.min.time(), ZoneInfo("Europe/Berlin"))
    for email_id in moved():
        row = http.get(f"/emails/{email_id}")[1]
        at = datetime.fromisoformat(row["nextAttemptAt"].replace("Z", "+00:00"))
        assert row["status"] == "PENDING" and row["attempts"] == 0 and abs(at - tomorrow) < timedelta(seconds=1)
    shown = http.get("/senders/warm")[1]
    assert (shown["usage"]["sentToday"], shown["usage"]["todayLimit"]) == (5, 5)


def test_gaps_hold_across_two_workers_and_are_jittered(stack, sink):
    http = stack
    # Given a sender 1 s + up to 0.. 1 s apart
    put_sender(http, "gappy", minGapSeconds=1, jitterSeconds=1)
    # When 6 emails are due at once
    schedule(http, "gappy", 6)
    # Then they arrive at least a second apart (by arrival at the relay), with gaps that differ
    wait_for(lambda: len(sink.arrivals) >= 6, timeout_s=30, what="6 arrivals")
    times = arrivals_of(sink, "gappy")
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    print(f"\ngaps: {gaps}")
    assert min(gaps) >= 1.0 - 0.02, gaps
    assert max(gaps) - min(gaps) >= 0.1, gaps
    assert max(gaps) <= 2.0 + 1.0, gaps


def test_a_window_change_places_pending_emails_again(stack):
    http = stack
    put_sender(http, "moving")
    at = (datetime.now(UTC) + timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
    ids = schedule(http, "moving", 30, scheduledAt=at.isoformat())
    put_sender(http, "moving", timeZone="Etc/GMT-3", sendingWindow={"days": ALL_DAYS, "start": "15:30",
                                                                    "end": "16:00"})
    expected = (at + timedelta(hours=2, minutes=30)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert {http.get(f"/emails/{i}")[1]["nextAttemptAt"] for i in ids} == {expected}
    events = http.get(f"/emails/{ids[0]}/events")[1]["events"]
    assert [(e["kind"], e["detail"].get("reason")) for e in events][-1] == ("deferred", "window")


def test_windows_follow_both_daylight_saving_changes_of_a_year(stack):
    http = stack
    # Given a sender sending 09:00–17:00 Berlin time, and one whose window starts in the skipped hour
    # (02:30) and ends in the repeated one (02:45), every day
    put_sender(http, "berlin", timeZone="Europe/Berlin",
               sendingWindow={"days": ALL_DAYS, "start": "09:00", "end": "17:00"})
    put_sender(http, "night", timeZone="Europe/Berlin",
               sendingWindow={"days": ALL_DAYS, "start": "02:30", "end": "02:45"})
    # When emails are asked for at midnight UTC on each side of 2027's changes (28 March, 31 October)
    days = ["2027-03-27", "2027-03-28", "2027-03-29", "2027-10-30", "2027-10-31", "2027-11-01"]
    berlin = schedule_at(http, "berlin", [f"{d}T00:00:00Z" for d in days])
    night = schedule_at(http, "night", ["2027-03-27T22:00:00Z", "2027-10-30T22:00:00Z"])
    # Then 09:00 Berlin is 08:00Z in winter and 07:00Z in summer, on both sides of both changes
    assert [http.get(f"/emails/{i}")[1]["nextAttemptAt"] for i in berlin] == [
        "2027-03-27T08:00:00.000Z", "2027-03-28T07:00:00.000Z", "2027-03-29T07:00:00.000Z",
        "2027-10-30T07:00:00.000Z", "2027-10-31T08:00:00.000Z", "2027-11-01T08:00:00.000Z"]
    # And 02:30 in the skipped hour opens when the clock jumps (03:00 CEST = 01:00Z); in the repeated hour,
    # at its first occurrence (02:30 CEST = 00:30Z)
    assert [http.get(f"/emails/{i}")[1]["nextAttemptAt"] for i in night] == [
        "2027-03-28T01:00:00.000Z", "2027-10-31T00:30:00.000Z"]


def schedule_at(http, sender_id: str, times: list[str]) -> list[int]:
    status, body = http.post("/emails/batch", {"emails": [
        {"recipient": f"{sender_id}{i}@example.com", "subject": f"{sender_id} {i}", "body": "Hi",
         "senderId": sender_id, "scheduledAt": at} for i, at in enumerate(times)]})
    assert status == 201, body
    return body["jobIds"]
