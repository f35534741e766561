"""Sending windows a few seconds from now, in a zone's wall clock, for tests of pacing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def window_from_now(zone: str, start_in_s: float, length_s: float) -> tuple[dict, datetime, datetime]:
    """A window of every day from `start_in_s` to `start_in_s + length_s` from now, in `zone`'s wall clock
    (whole seconds); the test is skipped in the rare minute where it would cross local midnight."""
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    opens, closes = now + timedelta(seconds=start_in_s), now + timedelta(seconds=start_in_s + length_s)
    local_open, local_close = opens.astimezone(ZoneInfo(zone)), closes.astimezone(ZoneInfo(zone))
    if local_open.date() != local_close.date():
        pytest.skip("the window would cross local midnight")
    return ({"days": ALL_DAYS, "start": local_open.strftime("%H:%M:%S"), "end": local_close.strftime("%H:%M:%S")},
            opens, closes)
