"""The recorder thread never dies, and a worker thread never waits on it for ever.

Real PostgreSQL, Redis and an aiosmtpd sink; a failure is injected into one
recording (a statement that raises, a cap update that raises, a statement
that hangs) and the sends around it must still be recorded.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest

from coldmail.db import database
from coldmail.db.emails import sending
from coldmail.delivery.outcomes import Result
from coldmail.delivery.recorder import Recorder, Sent
from coldmail.delivery.wiring import build_deliverer
from coldmail.mail.message import build_message
from tests.integration.test_batches import deliver, due_rows
from tests.support.db import sql


def claimed(count: int) -> list[dict]:
    with database.connection_context():
        return sending.claim(due_rows(count), lease_s=30)


def sent(row: dict) -> Sent:
    message = build_message(email_id=row["id"], created_at=datetime.now(timezone.utc), from_address="a@example.com",
                            recipient=row["recipient"], subject=row["subject"], body=row["body"])
    return Sent(row, message, "250 OK", slots=[("k", str(row["id"]))], send_s=0.001, late_s=0)


def status(email_id: int) -> str:
    return sql("SELECT status FROM emails WHERE id = %s", email_id)[0][0]


def fail_once(monkeypatch, target, name: str, error: Exception) -> list[int]:
    """Make target.name raise `error` on its first call only; the list counts the calls."""
    real, calls = getattr(target, name), []

    def once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, once)
    return calls


def test_a_statement_that_raises_fails_its_sends_and_the_recorder_goes_on(database_url, monkeypatch):
    # Given a recorder whose first statement raises something no retry rule knows (a bug)
    first, second = claimed(2)
    fail_once(monkeypatch, sending, "mark_sent", RuntimeError("a bug"))
    recorder = Recorder(lambda slots: None)
    try:
        # When a send is recorded, and another one after it
        failed = recorder.add(sent(first))
        with pytest.raises(RuntimeError):
            failed.result(timeout=10)
        # Then the first stays SENDING (for the sweep), and the thread is still there to record the second
        assert recorder.add(sent(second)).result(timeout=10) is True
    finally:
        recorder.close()
    assert (status(first["id"]), status(second["id"])) == ("SENDING", "SENT")


def test_a_cap_update_that_raises_leaves_the_sends_recorded_and_the_recorder_going(database_url):
    # Given a recorder whose first cap update raises something that is not a Redis error
    first, second = claimed(2)
    calls = []

    def mark_caps_done(slots):
        calls.append(slots)
        if len(calls) == 1:
            raise ValueError("a bug in the caps")

    recorder = Recorder(mark_caps_done)
    try:
        # When two sends are recorded one after the other
        assert recorder.add(sent(first)).result(timeout=10) is True
        assert recorder.add(sent(second)).result(timeout=10) is True
    finally:
        recorder.close()
    # Then both are SENT, and the second's slots were marked done
    assert (status(first["id"]), status(second["id"])) == ("SENT", "SENT")
    assert calls[-1] == [("k", str(second["id"]))]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death is the point
def test_a_recorder_thread_that_died_all_the_same_is_started_again(database_url):
    # Given a recorder whose thread ends on its first batch (SystemExit: nothing an `except Exception` catches)
    first, second = claimed(2)
    calls = []

    def mark_caps_done(slots):
        calls.append(slots)
        if len(calls) == 1:
            raise SystemExit

    recorder = Recorder(mark_caps_done)
    try:
        lost = recorder.add(sent(first))
        with pytest.raises(TimeoutError):
            lost.result(timeout=2)  # its waiter gives up (the deliverer: at the lease's end)
        # When another send comes, a new thread records it
        assert recorder.add(sent(second)).result(timeout=10) is True
    finally:
        recorder.close()
    assert (status(first["id"]), status(second["id"])) == ("SENT", "SENT")


@pytest.fixture
def short_lease_deliverer(make_settings, sink, redis_client):
    d = build_deliverer(make_settings(SMTP_URL=sink.url, LEASE_SECONDS="3", SMTP_TIMEOUT_SECONDS="1"),
                        redis_client=redis_client)
    yield d
    d.close()
    d.close_thread()


def test_a_worker_thread_whose_send_fails_to_be_recorded_raises_and_the_next_message_goes(
        short_lease_deliverer, sink, monkeypatch):
    # Given a worker whose first recording statement raises
    fail_once(monkeypatch, sending, "mark_sent", RuntimeError("a bug"))
    ids = due_rows(2)
    # When it sends a message: the send is not recorded, and the message ends with that error
    with pytest.raises(RuntimeError, match="a bug"):
        deliver(short_lease_deliverer, ids[:1])
    # Then the email stays SENDING, for the sweep to take back after its lease
    assert status(ids[0]) == "SENDING"
    # And the next message is sent and recorded as usual
    assert [o.result for _, o in deliver(short_lease_deliverer, ids[1:])] == [Result.SENT]
    assert status(ids[1]) == "SENT"
    assert len(sink.arrivals) == 2


def test_a_worker_thread_waits_for_its_record_until_the_lease_ends_at_most(short_lease_deliverer, sink,
                                                                          monkeypatch):
    # Given a recorder whose statement hangs (PostgreSQL stuck on a lock, say)
    release = threading.Event()
    real = sending.mark_sent

    def hanging(*args, **kwargs):
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(sending, "mark_sent", hanging)
    [email_id] = due_rows(1)
    # When a worker thread sends an email (in a thread of the test's, so that a hang cannot hang the test)
    errors: list[BaseException] = []

    def work():
        try:
            deliver(short_lease_deliverer, [email_id])
        except BaseException as e:  # noqa: BLE001 - what the send actor would raise is the point
            errors.append(e)

    started = time.monotonic()
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=10)
    waited = time.monotonic() - started
    release.set()
    # Then it gave up once the 3 s lease was over, not before and not never, saying what becomes of the email
    assert not thread.is_alive(), "the worker thread still waits for its send to be recorded"
    assert 2.5 <= waited < 6, waited
    assert len(errors) == 1 and isinstance(errors[0], TimeoutError), errors
    assert f"email {email_id}" in str(errors[0]) and "sweep" in str(errors[0])
    assert len(sink.arrivals) == 1
