"""The pacing benchmark's pieces that need no services: its rows and its report."""

import random
from datetime import datetime, timezone

from coldmail.caps.pacing import Window, inside
from tests.bench import pacing


def test_the_rows_give_the_big_sender_its_share_and_every_email_a_time_inside_its_window():
    senders = pacing.sender_rows(6)
    start = datetime(2026, 12, 5, tzinfo=timezone.utc)
    lines = list(pacing.email_rows(100, senders, big=30, start=start, rng=random.Random(1)))
    fields = [line.rstrip("\n").split("\t") for line in lines]
    assert sum(1 for f in fields if f[5] == "s0") == 30 and len(fields) == 100
    zones = dict(senders)
    window = Window.from_json(pacing.WINDOW)
    for f in fields:
        scheduled, due = datetime.fromisoformat(f[6]), datetime.fromisoformat(f[7])
        assert due >= scheduled and inside(due, window, zones[f[5]])


def test_the_report_names_every_figure():
    figures = {"plan_cpu_us": 20.0, "handover_cpu_us": 30.0, "wall_us": 80.0, "emails": 500}
    text = pacing.report({"senders": 10, "pending": 1000, "copy_s": 1.0, "small": 100, "big": 300,
                          "planning_small": figures, "planning_large": dict(figures, plan_cpu_us=22.0),
                          "replace": {"seconds": 0.5, "moved": 250}, "redis_bytes": 5000,
                          "redis_bytes_per_pending": 5.0,
                          "lateness": {"n": 20, "p50": 10.0, "p99": 30.0, "max": 31.0, "early": 0}})
    assert "ratio large/small: 1.10" in text and "p99 30.0 ms" in text and "0.50s" in text
    assert "Redis bytes per pending email: 5.00" in text
