"""What the reliability tests share: short recovery timings, scheduling through the batch endpoint,
and reading what the rows say."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from coldmail.db import database
from tests.support.processes import Proc
from tests.support.waiting import wait_for

#: short enough that recovery shows within seconds, long enough that a live send is never taken back
RECOVERY = {"LEASE_SECONDS": "3", "SMTP_TIMEOUT_SECONDS": "2", "DEAD_WORKER_SECONDS": "2",
            "REQUEUE_AFTER_SECONDS": "3", "SWEEP_INTERVAL_SECONDS": "0.3"}


def schedule(http, subjects: list[str], *, at: datetime | None = None, every_s: float = 0.0) -> list[int]:
    """POST /emails/batch: one email per subject, due now or from `at` on, `every_s` apart in order."""
    emails = []
    for i, subject in enumerate(subjects):
        email = {"recipient": "user@example.com", "subject": subject, "body": "Hello", "senderId": "s1"}
        if at is not None:
            email["scheduledAt"] = (at + timedelta(seconds=i * every_s)).isoformat()
        emails.append(email)
    ids = []
    for first in range(0, len(emails), 1000):
        status, answer = http.post("/emails/batch", {"emails": emails[first:first + 1000]})
        assert status == 201, answer
        ids.extend(answer["jobIds"])
    return ids


def due_times(subjects: list[str], at: datetime, every_s: float) -> dict[str, float]:
    return {subject: at.timestamp() + i * every_s for i, subject in enumerate(subjects)}


def statuses() -> Counter:
    with database.connection_context():
        return Counter(dict(database.execute_sql("SELECT status, count(*) FROM emails GROUP BY status").fetchall()))


def sending_ids() -> list[int]:
    with database.connection_context():
        return [r[0] for r in database.execute_sql("SELECT id FROM emails WHERE status = 'SENDING'").fetchall()]


def event_kinds(email_id: int) -> list[str]:
    with database.connection_context():
        return [r[0] for r in database.execute_sql(
            "SELECT kind FROM email_events WHERE email_id = %s ORDER BY id", (email_id,)).fetchall()]


def all_sent(n: int):
    return lambda: statuses().get("SENT", 0) == n


def stop(*procs: Proc | None) -> None:
    for proc in procs:
        if proc is not None:
            proc.terminate()


def wait_worker_ready(proc: Proc) -> None:
    """Until the dramatiq worker process says it consumes (its consumers poll from then on)."""
    wait_for(lambda: "ready for action" in proc.output(), timeout_s=30, what=f"{proc.name} ready")
