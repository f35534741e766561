"""A reply racing the worker's claim of the next follow-up, on real PostgreSQL with the real statements: the
claim (coldmail.db.emails.sending.claim, what every worker runs) on one thread and coldmail.inbound.receive on
another, released together, many rounds. Each follow-up is either claimed (the claim committed first: it may
still go) or cancelled for the reply, never both and never neither; a claim that starts after the reply has
been answered never gets it."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import datetime, timezone

from coldmail.db import database
from coldmail.db.emails import intake, sending
from coldmail.db.emails.intake import NewEmail
from coldmail.inbound import receive
from tests.support.db import sql

ROUNDS = 150


def reply_to(message_id: str, n: int) -> bytes:
    return (f"From: person{n}@example.net\r\nTo: ann@example.org\r\nSubject: Re: hello\r\n"
            f"Message-ID: <reply-{n}@example.net>\r\nIn-Reply-To: {message_id}\r\nReferences: {message_id}\r\n"
            "Date: Fri, 04 Dec 2026 18:10:00 +0000\r\n\r\nYes, let's talk.\r\n").encode()


def thread_of(n: int) -> tuple[int, int]:
    """A first email to person{n}, SENT (as the worker records it), and its follow-up, PENDING and due now."""
    now = datetime.now(timezone.utc)
    news = [NewEmail(account="default", recipient=f"person{n}@example.net", subject="hello", body="Hi",
                     sender_id="ann", scheduled_at=now, idempotency_key=None, payload_hash="x",
                     sequence="intro", stop_on_reply=True) for _ in range(2)]
    with database.connection_context():
        (first, _), (follow_up, _) = intake.insert_batch(news, horizon_s=0)
    sql("UPDATE emails SET status = 'SENT', sent_at = now(), message_id = %s WHERE id = %s",
        f"<first-{n}@coldmail.test>", first["id"])
    sql("UPDATE emails SET in_reply_to = %s WHERE id = %s", first["id"], follow_up["id"])
    return first["id"], follow_up["id"]


def test_a_reply_racing_the_claim_of_the_next_follow_up_cancels_it_or_finds_it_claimed(base_env):
    outcomes: Counter = Counter()
    for n in range(ROUNDS):
        first, follow_up = thread_of(n)
        start = threading.Barrier(2)
        result: dict = {}

        def claim() -> None:
            start.wait()
            time.sleep(random.uniform(0, 0.003))  # either may reach the row first
            with database.connection_context():
                result["claimed"] = [row["id"] for row in sending.claim([follow_up], lease_s=30, worker="race")]

        def reply() -> None:
            start.wait()
            time.sleep(random.uniform(0, 0.003))
            result["received"] = receive("default", reply_to(f"<first-{n}@coldmail.test>", n))

        threads = [threading.Thread(target=claim), threading.Thread(target=reply)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Then the reply was matched, and the follow-up went exactly one way
        assert (result["received"].kind, result["received"].email_id) == ("reply", first)
        [(status,)] = sql("SELECT status FROM emails WHERE id = %s", follow_up)
        kinds = [k for (k,) in sql("SELECT kind FROM email_events WHERE email_id = %s ORDER BY id", follow_up)]
        if result["claimed"] == [follow_up]:
            assert status == "SENDING" and "cancelled" not in kinds, (n, status, kinds)
            outcomes["claimed first"] += 1
        else:
            assert result["claimed"] == [] and status == "CANCELLED" and "claimed" not in kinds, (n, status, kinds)
            outcomes["cancelled"] += 1
        # And once the reply has been answered, no claim gets the follow-up
        with database.connection_context():
            assert sending.claim([follow_up], lease_s=30, worker="late") == []
    print(f"{ROUNDS} rounds: {dict(outcomes)}")
    assert sum(outcomes.values()) == ROUNDS
    assert outcomes["cancelled"] > 0
