"""The suppression list against real processes racing: `run.py api` and a Dramatiq worker process, with
suppressions made while emails are being accepted and while they are being claimed. Whatever the order, an
address whose suppression was acknowledged before its email was claimed is never sent to."""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.support.db import sql
from tests.support.payloads import email
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def settled(ids: list[int]) -> bool:
    rows = sql("SELECT count(*) FROM emails WHERE id = ANY(%s) AND status IN ('SENT', 'SUPPRESSED', 'FAILED')", ids)
    return rows[0][0] == len(ids)


def at(when: datetime) -> None:
    time.sleep(max(0.0, when.timestamp() - time.time()))


def test_an_email_accepted_while_its_address_is_suppressed_is_never_sent(api_and_worker, http, sink):
    """Each round posts an email (due shortly) and its address's suppression at the same instant, on two
    threads: the INSERT may miss the entry and the suppression may miss the email, and then only the claim's
    own check stands between the address and the relay."""
    rounds = 60
    due = datetime.now(timezone.utc) + timedelta(seconds=4)
    ids: list[int] = []
    for i in range(rounds):
        address = f"race{i}@example.com"
        start = threading.Barrier(2)
        answers: dict[str, tuple] = {}

        def schedule() -> None:
            start.wait()
            answers["email"] = http.post("/emails", email(f"race {i}", recipient=address,
                                                          scheduledAt=due.isoformat()))

        def suppress() -> None:
            start.wait()
            answers["suppression"] = http.post("/suppressions", {"email": address.upper()})

        threads = [threading.Thread(target=schedule), threading.Thread(target=suppress)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers["email"][0] == 201 and answers["suppression"][0] == 201, answers
        ids.append(answers["email"][1]["jobId"])
    wait_for(lambda: settled(ids) or time.time() > due.timestamp() + 5, timeout_s=30, what="due time passed")
    time.sleep(1.0)
    assert sink.arrivals == []
    assert sql("SELECT DISTINCT status FROM emails") == [("SUPPRESSED",)]
    assert sql("SELECT count(DISTINCT email_id) FROM email_events WHERE kind = 'suppressed'") == [(rounds,)]
    assert sql("SELECT count(*) FROM email_events WHERE kind = 'claimed'") == [(0,)]
    # And the claim's own check was what stopped some of them (neither the INSERT nor the suppression saw
    # the other's row): their suppressed event comes at their due time, not at acceptance
    [(at_claim,)] = sql("SELECT count(*) FROM email_events WHERE kind = 'suppressed' AND created_at > %s",
                        due - timedelta(seconds=2))
    assert at_claim > 0


def test_an_address_suppressed_before_the_claim_is_never_sent_to(api_and_worker, http, sink):
    """Emails due a tenth of a second apart; each address is suppressed at a random moment around its
    email's due time (before the hand-over, between it and the claim, during and after the claim). Every
    email sent was claimed before its suppression was acknowledged."""
    rounds = 40
    rng = random.Random(16)
    first = datetime.now(timezone.utc) + timedelta(seconds=3)
    dues = [first + timedelta(seconds=0.1 * i) for i in range(rounds)]
    status, answer = http.post("/emails/batch", {"emails": [
        email(f"near {i}", recipient=f"near{i}@example.com", scheduledAt=due.isoformat())
        for i, due in enumerate(dues)]})
    assert status == 201, answer
    ids = answer["jobIds"]
    plan = sorted((due + timedelta(seconds=rng.uniform(-0.6, 0.3)), i) for i, due in enumerate(dues))
    acknowledged: dict[int, float] = {}
    for when, i in plan:
        at(when)
        status, _ = http.post("/suppressions", {"email": f"Near{i}@Example.com", "reason": "unsubscribed"})
        assert status == 201
        acknowledged[i] = time.time()
    wait_for(lambda: settled(ids), timeout_s=30, what="every email sent or suppressed")
    time.sleep(0.5)
    claimed = dict(sql("SELECT email_id, extract(epoch FROM min(created_at)) FROM email_events "
                       "WHERE kind = 'claimed' AND email_id = ANY(%s) GROUP BY email_id", ids))
    sent = {a.message["Subject"] for a in sink.arrivals}
    status_of = dict(sql("SELECT id, status FROM emails WHERE id = ANY(%s)", ids))
    for i, email_id in enumerate(ids):
        if f"near {i}" in sent:
            assert status_of[email_id] == "SENT"
            assert float(claimed[email_id]) <= acknowledged[i], f"email {i} sent, claimed after its suppression"
        else:
            assert status_of[email_id] == "SUPPRESSED" and email_id not in claimed, (i, status_of[email_id])
    # And most suppressions came first (the offsets lean that way): the race was run, not skipped
    assert sum(1 for s in status_of.values() if s == "SUPPRESSED") >= rounds // 2
