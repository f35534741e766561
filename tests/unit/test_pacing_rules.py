"""The pure pacing rules: windows in a zone's wall clock across both DST changes, day limits with warm-up."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import pytest

from coldmail.caps.pacing import (Pacing, Warmup, Window, after_day_limit, day_limit, earliest, first_instant,
                                  inside, next_day_start, parse_clock, window_open, zone)

UTC = timezone.utc
WEEKDAYS = frozenset(range(5))


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_clock_accepts_minutes_and_seconds():
    assert parse_clock("09:00") == time(9)
    assert parse_clock("17:30:15") == time(17, 30, 15)
    for bad in ["9:00", "24:00", "12:60", "12:00:60", "12", "ab:cd", "12:00:00:00", "", "１２:００"]:
        with pytest.raises(ValueError):
            parse_clock(bad)


def test_unknown_zone_is_refused():
    assert zone("Europe/Berlin").key == "Europe/Berlin"
    for bad in ["Mars/Olympus", "", "../etc/passwd", "Europe/Berlin ", "UTC\x00"]:
        with pytest.raises(ValueError):
            zone(bad)


@pytest.mark.parametrize("name, local, expected", [
    # Berlin springs forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z): 02:30 does not exist
    ("Europe/Berlin", datetime(2026, 3, 29, 2, 30), utc(2026, 3, 29, 1, 0)),
    ("Europe/Berlin", datetime(2026, 3, 29, 3, 0), utc(2026, 3, 29, 1, 0)),
    ("Europe/Berlin", datetime(2026, 3, 29, 1, 59, 59), utc(2026, 3, 29, 0, 59, 59)),
    # Berlin falls back 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z): 02:30 happens twice, first at 00:30Z
    ("Europe/Berlin", datetime(2026, 10, 25, 2, 30), utc(2026, 10, 25, 0, 30)),
    ("Europe/Berlin", datetime(2026, 10, 25, 3, 0), utc(2026, 10, 25, 2, 0)),
    # New York springs forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z)
    ("America/New_York", datetime(2026, 3, 8, 2, 15), utc(2026, 3, 8, 7, 0)),
    # and falls back 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z): 01:30 first at 05:30Z
    ("America/New_York", datetime(2026, 11, 1, 1, 30), utc(2026, 11, 1, 5, 30)),
    # Lord Howe moves by half an hour
    ("Australia/Lord_Howe", datetime(2026, 10, 4, 2, 10), utc(2026, 10, 3, 15, 30)),
])
def test_first_instant_across_changes(name, local, expected):
    assert first_instant(local, zone(name)) == expected


def test_window_follows_the_wall_clock_on_both_sides_of_each_change():
    window = Window(WEEKDAYS | {5, 6}, time(9), time(17))
    # 09:00 Berlin is 08:00Z in winter, 07:00Z in summer
    assert window_open(utc(2026, 3, 28, 20), window, "Europe/Berlin") == utc(2026, 3, 29, 7)
    assert window_open(utc(2026, 3, 27, 20), window, "Europe/Berlin") == utc(2026, 3, 28, 8)
    assert window_open(utc(2026, 10, 24, 20), window, "Europe/Berlin") == utc(2026, 10, 25, 8)
    assert window_open(utc(2026, 10, 23, 20), window, "Europe/Berlin") == utc(2026, 10, 24, 7)
    # 09:00 New York: 14:00Z in winter, 13:00Z in summer
    assert window_open(utc(2026, 3, 7, 23), window, "America/New_York") == utc(2026, 3, 8, 13)
    assert window_open(utc(2026, 10, 31, 23), window, "America/New_York") == utc(2026, 11, 1, 14)


def test_a_start_in_the_skipped_hour_opens_when_the_clock_jumps():
    window = Window(frozenset(range(7)), time(2, 30), time(4))
    assert window_open(utc(2026, 3, 28, 22), window, "Europe/Berlin") == utc(2026, 3, 29, 1, 0)
    assert window_open(utc(2026, 3, 7, 22), window, "America/New_York") == utc(2026, 3, 8, 7, 0)


def test_a_start_in_the_repeated_hour_opens_at_its_first_occurrence():
    window = Window(frozenset(range(7)), time(2, 30), time(2, 45))
    assert window_open(utc(2026, 10, 24, 22), window, "Europe/Berlin") == utc(2026, 10, 25, 0, 30)
    # closed from the first 02:45 on, also through the repeated 02:30–02:45
    assert window_open(utc(2026, 10, 25, 1, 35), window, "Europe/Berlin") == utc(2026, 10, 26, 1, 30)
    ny = Window(frozenset(range(7)), time(1, 30), time(1, 40))
    assert window_open(utc(2026, 11, 1, 0), ny, "America/New_York") == utc(2026, 11, 1, 5, 30)


def test_window_days_times_and_edges():
    window = Window(WEEKDAYS, time(9), time(17, 30))  # 2026-12-04 is a Friday
    berlin = "Europe/Berlin"
    inside_t = utc(2026, 12, 4, 10)
    assert window_open(inside_t, window, berlin) == inside_t and inside(inside_t, window, berlin)
    assert window_open(utc(2026, 12, 4, 16, 30), window, berlin) == utc(2026, 12, 7, 8)  # 17:30 closes: Monday
    assert window_open(utc(2026, 12, 4, 16, 29, 59), window, berlin) == utc(2026, 12, 4, 16, 29, 59)
    assert window_open(utc(2026, 12, 5, 10), window, berlin) == utc(2026, 12, 7, 8)  # Saturday
    assert window_open(utc(2026, 12, 4, 7, 59, 59), window, berlin) == utc(2026, 12, 4, 8)
    assert window_open(utc(2026, 12, 4, 10), None, berlin) == utc(2026, 12, 4, 10)
    seconds = Window(frozenset(range(7)), time(9, 0, 5), time(9, 0, 10))
    assert window_open(utc(2026, 12, 4, 9), seconds, "UTC") == utc(2026, 12, 4, 9, 0, 5)


def test_recipient_zone_reads_the_window_and_the_day_stays_the_senders():
    pacing = Pacing(time_zone="Europe/Berlin", window=Window(frozenset(range(7)), time(9), time(11)))
    t = utc(2026, 12, 4, 12)
    assert earliest(t, pacing) == utc(2026, 12, 5, 8)
    assert earliest(t, pacing, "America/New_York") == utc(2026, 12, 4, 14)
    # over the day limit at 23:30 Berlin (22:30Z): the next Berlin day begins at 23:00Z; read in New York,
    # its window opens at 09:00 EST = 14:00Z of the 5th
    assert after_day_limit(utc(2026, 12, 4, 22, 30), pacing, "America/New_York") == utc(2026, 12, 5, 14)
    assert next_day_start(utc(2026, 12, 4, 22, 30), "Europe/Berlin") == utc(2026, 12, 4, 23)


def test_day_limit_with_warmup():
    warm = Warmup(10, 5, date(2026, 12, 1))
    assert day_limit(Pacing(daily_limit=50, warmup=warm), date(2026, 12, 1)) == 10
    assert day_limit(Pacing(daily_limit=50, warmup=warm), date(2026, 12, 4)) == 25
    assert day_limit(Pacing(daily_limit=50, warmup=warm), date(2026, 12, 30)) == 50
    assert day_limit(Pacing(daily_limit=50, warmup=warm), date(2026, 11, 1)) == 10  # not begun yet
    assert day_limit(Pacing(warmup=warm), date(2026, 12, 31)) == 160
    assert day_limit(Pacing(daily_limit=7), date(2026, 12, 31)) == 7
    assert day_limit(Pacing(), date(2026, 12, 31)) is None


def test_from_row():
    pacing = Pacing.from_row({"time_zone": "Europe/Berlin",
                              "sending_window": {"days": ["mon", "fri"], "start": "09:00", "end": "17:00:30"},
                              "daily_limit": 50, "warmup": {"startPerDay": 10, "increasePerDay": 5,
                                                            "startDate": "2026-12-01"},
                              "min_gap_s": 240, "jitter_s": 120})
    assert pacing.window == Window(frozenset({0, 4}), time(9), time(17, 0, 30))
    assert pacing.warmup == Warmup(10, 5, date(2026, 12, 1)) and pacing.paced
    assert not Pacing.from_row({}).paced


@pytest.mark.parametrize("name", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"])
def test_window_open_is_inside_and_nothing_earlier_is(name):
    # every hour of a year: the answer is inside the window and no earlier second at or after t is
    window = Window(frozenset({0, 2, 4, 6}), time(1, 45), time(3, 15))
    t = utc(2026, 1, 1)
    while t < utc(2027, 1, 1):
        opened = window_open(t, window, name)
        assert opened >= t and window_open(opened, window, name) == opened
        local = opened.astimezone(zone(name))
        assert local.weekday() in window.days or (opened - timedelta(hours=3)).astimezone(zone(name)).weekday() \
            in window.days
        if opened > t:
            assert window_open(opened - timedelta(seconds=1), window, name) == opened
        t += timedelta(hours=7, minutes=13)


@pytest.mark.parametrize("name", ["Europe/Berlin", "America/New_York", "UTC"])
def test_the_calendar_agrees_with_window_open(name):
    from coldmail.caps.pacing import Calendar
    window = Window(WEEKDAYS, time(9), time(17, 30))
    calendar = Calendar(window, name)
    t = utc(2026, 12, 30)
    times = [t - timedelta(minutes=37 * k) for k in range(0, 20_000, 7)]  # backwards and forwards over a year
    for when in times + list(reversed(times)):
        assert calendar.open_at(when) == window_open(when, window, name)
