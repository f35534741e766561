"""Sending like a person: a sender's window, day limit with warm-up, and gap, as pure rules (no I/O).

Times are aware datetimes; zones are IANA names read with zoneinfo (the `tzdata`
package supplies them where the system has none). A window is local wall-clock
time, so it follows daylight-saving changes: its edges are where the zone's clock
*first reaches* the start and the end on an allowed day. A start inside a skipped
hour is therefore the first instant after the gap, and one inside a repeated hour
its first occurrence. The day limit counts local calendar days of the sender's zone.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`; ValueError when there is none of that name."""
    if not name or name != name.strip() or "\x00" in name:
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}") from None


def parse_clock(text: str) -> time:
    """`HH:MM` or `HH:MM:SS` (24-hour); ValueError otherwise."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) not in (2, 3) or not all(len(p) == 2 and p.isdigit() and p.isascii() for p in parts):
        raise ValueError("a time is HH:MM or HH:MM:SS")
    hour, minute, second = (int(p) for p in parts + ["00"] * (3 - len(parts)))
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError("a time is HH:MM or HH:MM:SS, 00:00 to 23:59:59")
    return time(hour, minute, second)


@dataclass(frozen=True)
class Window:
    """Sends happen on `days` (0 = Monday) between `start` and `end` (local, start < end)."""

    days: frozenset[int]
    start: time
    end: time

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Window:
        return cls(frozenset(DAYS.index(d) for d in data["days"]), parse_clock(data["start"]),
                   parse_clock(data["end"]))


@dataclass(frozen=True)
class Warmup:
    start_per_day: int
    increase_per_day: int
    start_date: date


@dataclass(frozen=True)
class Pacing:
    """A sender's pacing; the defaults are "none": any time, no day limit, no gap."""

    time_zone: str = "UTC"
    window: Window | None = None
    daily_limit: int | None = None
    warmup: Warmup | None = None
    min_gap_s: int = 0
    jitter_s: int = 0

    @property
    def paced(self) -> bool:
        """Whether any rule applies (the common sender has none, and costs nothing here)."""
        return (self.window is not None or self.daily_limit is not None or self.warmup is not None
                or self.min_gap_s > 0 or self.jitter_s > 0)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Pacing:
        """From a senders row's columns (time_zone, sending_window, daily_limit, warmup, min_gap_s, jitter_s);
        missing or NULL ones are off."""
        window = row.get("sending_window")
        warm = row.get("warmup")
        return cls(
            time_zone=row.get("time_zone") or "UTC",
            window=Window.from_json(window) if window else None,
            daily_limit=row.get("daily_limit"),
            warmup=Warmup(int(warm["startPerDay"]), int(warm["increasePerDay"]),
                          date.fromisoformat(warm["startDate"])) if warm else None,
            min_gap_s=row.get("min_gap_s") or 0,
            jitter_s=row.get("jitter_s") or 0)


NO_PACING = Pacing()


def first_instant(local: datetime, tz: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the wall clock of `tz` reads `local` or later.

    Outside a change, the one instant it names; in a repeated hour, its first
    occurrence; in a skipped hour, the instant the clock jumps (the gap's end).
    """
    local = local.replace(tzinfo=None)
    guess = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if guess.astimezone(tz).replace(tzinfo=None) == local:
        return guess  # fold=0 is the earlier of two readings
    # in a gap: fold=0 read it with the offset before the jump (an instant after the jump), fold=1 with the offset
    # after (an instant before it); the jump lies between, on a whole second
    lo = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    hi = guess
    if lo > hi:
        lo, hi = hi, lo
    while (hi - lo) > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(tz).replace(tzinfo=None) >= local:
            hi = mid
        else:
            lo = mid
    return hi if lo.astimezone(tz).replace(tzinfo=None) < local else lo


def window_open(t: datetime, window: Window | None, tz_name: str) -> datetime:
    """The first instant at or after `t` inside `window` read in zone `tz_name` (`t` itself when inside or
    when there is no window)."""
    if window is None or not window.days:
        return t
    tz = zone(tz_name)
    first_day = t.astimezone(tz).date() - timedelta(days=1)
    for i in range(9):
        day = first_day + timedelta(days=i)
        if day.weekday() not in window.days:
            continue
        closes = first_instant(datetime.combine(day, window.end), tz)
        if t < closes:
            return max(t, first_instant(datetime.combine(day, window.start), tz))
    raise AssertionError("a week holds an allowed day")


def inside(t: datetime, window: Window | None, tz_name: str) -> bool:
    return window_open(t, window, tz_name) == t


def local_day(t: datetime, tz_name: str) -> date:
    """The calendar day `t` falls on in the zone."""
    return t.astimezone(zone(tz_name)).date()


def day_start(t: datetime, tz_name: str) -> datetime:
    """When the local day `t` falls on began in the zone (not `next_day_start(t - 24 h)`: a day of a change has 23
    or 25 hours)."""
    return first_instant(datetime.combine(local_day(t, tz_name), time(0)), zone(tz_name))


def next_day_start(t: datetime, tz_name: str) -> datetime:
    """When the local day after the one `t` falls on begins in the zone."""
    return first_instant(datetime.combine(local_day(t, tz_name) + timedelta(days=1), time(0)), zone(tz_name))


def day_limit(pacing: Pacing, day: date) -> int | None:
    """The sends allowed on local `day`: `min(dailyLimit, startPerDay + increasePerDay × days since startDate)`
    (a warm-up not begun yet allows startPerDay); None when there is no limit."""
    limits = [] if pacing.daily_limit is None else [pacing.daily_limit]
    if pacing.warmup is not None:
        days = max(0, (day - pacing.warmup.start_date).days)
        limits.append(pacing.warmup.start_per_day + pacing.warmup.increase_per_day * days)
    return min(limits) if limits else None


def reading_zone(pacing: Pacing, recipient_time_zone: str | None) -> str:
    """The zone an email's window is read in: its recipient's when given, else its sender's."""
    return recipient_time_zone or pacing.time_zone


def earliest(t: datetime, pacing: Pacing, recipient_time_zone: str | None = None) -> datetime:
    """The first instant at or after `t` inside the email's window (the window alone: caps and gaps are the
    plan's)."""
    return window_open(t, pacing.window, reading_zone(pacing, recipient_time_zone))


def after_day_limit(t: datetime, pacing: Pacing, recipient_time_zone: str | None = None) -> datetime:
    """Where an email over its sender's day limit at `t` goes: the next local day's window opening."""
    return earliest(next_day_start(t, pacing.time_zone), pacing, recipient_time_zone)


class Calendar:
    """`window_open` for many times in one zone, fast: the window's openings are worked out once per day and
    each time found among them by bisection (placing a sender's 100,000 emails again after its window changed)."""

    def __init__(self, window: Window, tz_name: str) -> None:
        self.window, self.tz_name, self.tz = window, tz_name, zone(tz_name)
        self._opens: list[datetime] = []
        self._closes: list[datetime] = []
        self._until: date | None = None
        self._from: date | None = None

    def _extend(self, first: date, last: date) -> None:
        """Know the openings of every allowed day from `first` to `last`."""
        if self._from is not None and first >= self._from and self._until is not None and last <= self._until:
            return
        first = min(first, self._from or first)
        last = max(last, self._until or last)
        opens, closes = [], []
        day = first
        while day <= last:
            if day.weekday() in self.window.days:
                opens.append(first_instant(datetime.combine(day, self.window.start), self.tz))
                closes.append(first_instant(datetime.combine(day, self.window.end), self.tz))
            day += timedelta(days=1)
        self._opens, self._closes, self._from, self._until = opens, closes, first, last

    def open_at(self, t: datetime) -> datetime:
        """window_open(t, window, zone)."""
        local = t.astimezone(self.tz).date()
        self._extend(local - timedelta(days=1), local + timedelta(days=8))
        i = bisect.bisect_right(self._closes, t)
        if i == len(self._closes):  # past what is known: know more
            self._extend(local - timedelta(days=1), local + timedelta(days=30))
            i = bisect.bisect_right(self._closes, t)
        return max(t, self._opens[i])
