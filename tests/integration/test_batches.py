"""Messages that carry several emails due together: one claim, each sent once at its own time, the sends
recorded together, and what a failure or a stop leaves is given back unspent. Real PostgreSQL, Redis and an
aiosmtpd sink; the Deliverer is called as the send actor calls it.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

from coldmail.db import database
from coldmail.db.emails import sending
from coldmail.delivery.deliverer import Deliverer
from coldmail.delivery.outcomes import Outcome, Result
from coldmail.mail.message import build_message
from coldmail.delivery.recorder import Recorder, Sent
from coldmail.delivery.wiring import build_deliverer
from tests.support.waiting import wait_for
from tests.support.db import event_kinds as events
from tests.support.db import sql


def due_rows(count: int, *, senders: int = 1, in_s: float = 0.0, step_s: float = 0.0) -> list[int]:
    """Emails handed over and due `in_s` from now, `step_s` apart, spread over `senders` senders."""
    rows = sql("INSERT INTO emails (recipient, subject, body, sender_id, scheduled_at, next_attempt_at, queued_at) "
               "SELECT 'u' || g || '@example.com', 'batch ' || g, '<p>hello</p>', 's' || (g %% %s), "
               "now() + (%s + g * %s) * interval '1 second', now() + (%s + g * %s) * interval '1 second', now() "
               "FROM generate_series(0, %s - 1) g ORDER BY g RETURNING id",
               senders, in_s, step_s, in_s, step_s, count)
    return [r[0] for r in rows]


def deliver(deliverer: Deliverer, ids: list[int]) -> list[tuple[int, Outcome]]:
    outcomes: list[tuple[int, Outcome]] = []
    deliverer.deliver_many(ids, outcomes)
    return outcomes


@pytest.fixture
def deliverer(make_settings, sink, redis_client):
    d = build_deliverer(make_settings(SMTP_URL=sink.url), redis_client=redis_client)
    yield d
    d.close()
    d.close_thread()


def test_a_message_of_emails_due_together_sends_each_once_with_one_claim(deliverer, sink, monkeypatch):
    # Given 30 emails of 3 senders due now
    ids = due_rows(30, senders=3)
    claims = []
    claim = sending.claim
    monkeypatch.setattr(sending, "claim", lambda *a, **k: claims.append(1) or claim(*a, **k))
    # When one message carries them all
    outcomes = deliver(deliverer, ids)
    # Then one statement claimed them, and each went out once and is recorded SENT on its first attempt
    assert len(claims) == 1
    assert sorted(i for i, _ in outcomes) == ids and {o.result for _, o in outcomes} == {Result.SENT}
    assert sorted(sink.subjects()) == sorted(f"batch {g}" for g in range(30))
    assert sql("SELECT count(*) FROM emails WHERE id = ANY(%s) AND status = 'SENT' AND attempts = 1 "
               "AND message_id IS NOT NULL", ids) == [(30,)]
    assert {tuple(events(i)) for i in ids} == {("claimed", "sent")}
    # And every slot it took counts in its sender's window
    assert sum(deliverer.caps.usage("default", f"s{n}") for n in range(3)) == 30


def test_each_email_of_a_message_waits_for_its_own_time(deliverer, sink):
    # Given 4 emails due 40 ms apart, starting 30 ms from now, in one message that arrives early
    ids = due_rows(4, in_s=0.03, step_s=0.04)
    due = dict(sql("SELECT subject, extract(epoch FROM scheduled_at)::float FROM emails WHERE id = ANY(%s)", ids))
    # When the worker takes it (the early message is within the claim's margin for all of them)
    deliverer.early_s = 0.2
    deliver(deliverer, ids)
    # Then none arrived before its time, and they arrived in their order, each soon after it
    arrivals = {a.message["Subject"]: a.at for a in sink.arrivals}
    assert set(arrivals) == set(due)
    for subject, at in arrivals.items():
        assert due[subject] <= at < due[subject] + 0.5, subject
    assert sorted(arrivals, key=arrivals.get) == sorted(due, key=due.get)


def test_a_relay_failure_retries_that_email_and_gives_the_rest_back_unspent(deliverer, sink):
    # Given 5 emails due now in one message, and a relay that answers the first with 451
    ids = due_rows(5)
    sink.fail_next("451 4.3.0 Try again later")
    # When the worker takes the message
    outcomes = dict(deliver(deliverer, ids))
    # Then the first is put back for a retry, its attempt counted
    assert outcomes[ids[0]].result is Result.RETRY
    assert sql("SELECT status, attempts FROM emails WHERE id = %s", ids[0]) == [("PENDING", 1)]
    assert events(ids[0]) == ["claimed", "attempt_failed"]
    # And the others are given back unsent, no attempt spent, no cap slot kept, to go after the same pause
    assert {outcomes[i].result for i in ids[1:]} == {Result.RELEASED}
    assert sql("SELECT count(*) FROM emails WHERE id = ANY(%s) AND status = 'PENDING' AND attempts = 0 "
               "AND queued_at IS NULL AND next_attempt_at > now()", ids[1:]) == [(4,)]
    reasons = sql("SELECT DISTINCT detail->>'reason' FROM email_events WHERE kind = 'released' "
                  "AND email_id = ANY(%s)", ids[1:])
    assert reasons == [("the relay failed for the email before",)]
    assert deliverer.caps.usage("default", "s0") == 0
    assert sink.arrivals == []


def test_a_stopping_worker_finishes_the_send_under_way_and_gives_the_rest_back(deliverer, sink):
    # Given 6 emails due now in one message, and a relay that takes 200 ms to answer
    ids = due_rows(6)
    sink.slow(0.2)
    # When the worker starts to stop while the first is being sent
    stopper = threading.Thread(target=lambda: (wait_for(lambda: sink.arrivals, timeout_s=5, what="a send"),
                                               deliverer.stopping.set()))
    stopper.start()
    outcomes = dict(deliver(deliverer, ids))
    stopper.join()
    # Then that one is sent and recorded, and the rest go back unsent for the next worker, at once
    assert outcomes[ids[0]].result is Result.SENT and len(sink.arrivals) == 1
    assert {outcomes[i].result for i in ids[1:]} == {Result.RELEASED}
    assert sql("SELECT status FROM emails WHERE id = %s", ids[0]) == [("SENT",)]
    assert sql("SELECT count(*) FROM emails WHERE id = ANY(%s) AND status = 'PENDING' AND attempts = 0 "
               "AND next_attempt_at <= now()", ids[1:]) == [(5,)]


def test_the_recorder_writes_many_threads_sends_in_a_few_statements(database_url, monkeypatch):
    # Given 200 claimed emails whose sends the relay accepted, in 8 threads
    ids = due_rows(200)
    with database.connection_context():
        rows = sending.claim(ids, lease_s=30)
    statements = []
    mark_sent = sending.mark_sent
    monkeypatch.setattr(sending, "mark_sent", lambda sent: statements.append(len(sent)) or mark_sent(sent))
    done = []
    recorder = Recorder(done.extend)
    created = datetime.now(timezone.utc)

    def sent(row) -> Sent:
        message = build_message(email_id=row["id"], created_at=created, from_address="a@example.com",
                                recipient=row["recipient"], subject=row["subject"], body=row["body"])
        return recorder.add(Sent(row, message, "250 OK", slots=[("k", str(row["id"]))], send_s=0.001, late_s=0))

    # When each thread hands its sends to the recorder and waits for them
    with ThreadPoolExecutor(8) as pool:
        futures = list(pool.map(sent, rows))
    assert all(f.result(timeout=10) is True for f in futures)
    recorder.close()
    # Then all 200 are SENT with their event, in far fewer statements than sends, and their slots were marked
    assert sql("SELECT count(*) FROM emails WHERE id = ANY(%s) AND status = 'SENT'", ids) == [(200,)]
    assert sql("SELECT count(*) FROM email_events WHERE kind = 'sent' AND email_id = ANY(%s)", ids) == [(200,)]
    assert sum(statements) == 200 and len(statements) < 50, statements
    assert sorted(int(m) for _, m in done) == ids


def test_a_send_whose_claim_was_taken_back_is_recorded_as_not_ours(database_url):
    # Given a claimed email whose lease the sweep took back while it was being sent
    [email_id] = due_rows(1)
    with database.connection_context():
        [row] = sending.claim([email_id], lease_s=30)
    sql("UPDATE emails SET status = 'PENDING', lease_until = NULL WHERE id = %s", email_id)
    recorder = Recorder(lambda slots: None)
    message = build_message(email_id=email_id, created_at=datetime.now(timezone.utc), from_address="a@example.com",
                            recipient="u@example.com", subject="late", body="b")
    # When its send is recorded
    future = recorder.add(Sent(row, message, "250 OK", slots=[], send_s=0.001, late_s=0))
    # Then the recorder says so, and leaves the row to the sweep's decision
    assert future.result(timeout=10) is False
    recorder.close()
    assert sql("SELECT status FROM emails WHERE id = %s", email_id) == [("PENDING",)]


def test_emails_not_ours_in_a_message_are_skipped_or_held_for_their_time(deliverer, sink):
    # Given a message with an email cancelled since, one already sent, and one moved 10 s later
    ids = due_rows(3)
    sql("UPDATE emails SET status = 'CANCELLED' WHERE id = %s", ids[0])
    sql("UPDATE emails SET status = 'SENT' WHERE id = %s", ids[1])
    sql("UPDATE emails SET next_attempt_at = now() + interval '10 seconds' WHERE id = %s", ids[2])
    # When the worker takes it
    started = time.monotonic()
    outcomes = dict(deliver(deliverer, ids))
    # Then nothing is sent, and the moved one is to be held again for its new time
    assert time.monotonic() - started < 1
    assert (outcomes[ids[0]].result, outcomes[ids[1]].result) == (Result.SKIPPED, Result.SKIPPED)
    assert outcomes[ids[2]].result is Result.NOT_YET and 9 < outcomes[ids[2]].due_in_s <= 10
    assert sink.arrivals == []


def test_a_message_that_cannot_be_built_fails_at_once_and_the_others_still_go(deliverer, sink, monkeypatch):
    # Given 3 emails due now in one message, the second of which the message builder chokes on
    ids = due_rows(3)
    import coldmail.delivery.deliverer as delivery

    real = delivery.build_message

    def choking(**fields):
        if fields["email_id"] == ids[1]:
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "a bug")
        return real(**fields)

    monkeypatch.setattr(delivery, "build_message", choking)
    # When the worker takes the message
    outcomes = dict(deliver(deliverer, ids))
    # Then that one is FAILED at once with the reason, not left SENDING for its lease, and the others go
    assert outcomes[ids[1]].result is Result.FAILED
    [(status, error)] = sql("SELECT status, last_error FROM emails WHERE id = %s", ids[1])
    assert status == "FAILED" and "could not be built" in error and "UnicodeEncodeError" in error
    assert {outcomes[ids[0]].result, outcomes[ids[2]].result} == {Result.SENT}
    assert sorted(sink.subjects()) == ["batch 0", "batch 2"]


def test_sends_are_recorded_though_postgresql_dropped_the_connections(database_url):
    from tests.integration.test_db_outage import drop_all_connections

    # Given claimed emails whose sends the relay accepted, and a warm pool of connections
    ids = due_rows(5)
    with database.connection_context():
        rows = sending.claim(ids, lease_s=30)
    for _ in range(3):
        sql("SELECT 1")
    recorder = Recorder(lambda slots: None)
    created = datetime.now(timezone.utc)
    # When PostgreSQL drops every connection just before they are recorded
    assert drop_all_connections() > 0
    futures = [recorder.add(Sent(row, build_message(email_id=row["id"], created_at=created,
                                                    from_address="a@example.com", recipient=row["recipient"],
                                                    subject=row["subject"], body=row["body"]),
                                 "250 OK", slots=[], send_s=0.001, late_s=0)) for row in rows]
    # Then the recorder tries again on a new connection: all are SENT, once each, not left to their lease
    assert [f.result(timeout=10) for f in futures] == [True] * 5
    recorder.close()
    assert sql("SELECT count(*) FROM emails WHERE id = ANY(%s) AND status = 'SENT'", ids) == [(5,)]
    assert sql("SELECT count(*) FROM email_events WHERE kind = 'sent' AND email_id = ANY(%s)", ids) == [(5,)]


def test_recording_again_after_a_lost_answer_counts_the_rows_as_recorded_once(database_url):
    # Given sends recorded once already (the answer was lost with its connection)
    ids = due_rows(2)
    with database.connection_context():
        sending.claim(ids, lease_s=30)
        sent = [(i, 1, f"<{i}@x>", "250 OK") for i in ids]
        assert sending.mark_sent(sent) == set(ids)
        # When they are recorded again
        again = sending.mark_sent(sent)
        # Then they count as recorded, with one 'sent' event each; another Message-ID would not
        assert again == set(ids)
        assert sending.mark_sent([(ids[0], 1, "<other@x>", "250 OK")]) == set()
    assert sql("SELECT count(*) FROM email_events WHERE kind = 'sent' AND email_id = ANY(%s)", ids) == [(2,)]
