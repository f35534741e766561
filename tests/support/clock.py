"""Times the tests schedule at: from now on, in the contract's ISO 8601 form."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


def at(seconds: float) -> datetime:
    """Now plus `seconds`, in UTC."""
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def iso(when: datetime) -> str:
    """`when` as scheduledAt takes it, UTC written as Z."""
    return when.isoformat().replace("+00:00", "Z")


def iso_in(seconds: float) -> str:
    return iso(at(seconds))


def due_times(subjects: list[str], first: datetime, every_s: float) -> dict[str, float]:
    """Each subject's due time (epoch seconds) when they are due from `first` on, `every_s` apart in order."""
    return {subject: first.timestamp() + i * every_s for i, subject in enumerate(subjects)}
