"""The intake and senders services asked directly, as the API asks them, without HTTP in between."""

from __future__ import annotations

import pytest

from coldmail.api.schemas import ScheduleBatchSchema, ScheduleEmailSchema
from coldmail.db import database
from coldmail.errors import Conflict, NotFound
from coldmail.intake.service import Intake
from coldmail.queue.setup import build_queue
from coldmail.senders import Senders


def email(subject: str = "Hi", **overrides) -> dict:
    return {"recipient": "user@example.com", "subject": subject, "body": "Hello", "senderId": "s1",
            "scheduledAt": "2099-01-01T00:00:00Z", **overrides}


def stored_subjects() -> list[str]:
    with database.connection_context():
        return [row[0] for row in database.execute_sql("SELECT subject FROM emails ORDER BY id").fetchall()]


@pytest.fixture
def services(make_settings):
    settings = make_settings()
    queue = build_queue(settings)
    caps = queue.handover.caps
    intake = Intake(settings=settings, handover=queue.handover, caps=caps)
    yield intake, Senders(settings=settings, caps=caps, intake=intake)
    intake.close()
    queue.handover.close()
    queue.broker.close()


async def test_accept_stores_once_per_idempotency_key(services):
    intake, _ = services
    payload = ScheduleEmailSchema().load(email(idempotencyKey="k1"))
    # Given an email accepted with a key
    first, created = await intake.accept("default", payload, "k1")
    assert created
    # When the same payload comes again with that key, Then it is the same row, not created again
    again, created_again = await intake.accept("default", payload, "k1")
    assert (again["id"], created_again) == (first["id"], False)
    # And another payload with that key is a Conflict
    with pytest.raises(Conflict):
        await intake.accept("default", ScheduleEmailSchema().load(email("Other", idempotencyKey="k1")), "k1")
    assert stored_subjects() == ["Hi"]


def test_a_batch_that_reuses_a_key_for_another_email_stores_nothing(services):
    intake, _ = services
    load = ScheduleBatchSchema().load
    # Given a batch whose third email repeats the first one's key with another subject
    batch = load({"emails": [email("a", idempotencyKey="k"), email("b"), email("c", idempotencyKey="k")]})["emails"]
    # When it is accepted, Then it is refused whole
    with pytest.raises(Conflict, match=r"emails\[2\]"):
        intake.accept_batch("default", batch)
    assert stored_subjects() == []
    # And a batch that repeats a key with the same email stores it once, created at its first place
    batch = load({"emails": [email("a", idempotencyKey="k"), email("b"), email("a", idempotencyKey="k")]})["emails"]
    stored = intake.accept_batch("default", batch)
    assert [created for _, created in stored] == [True, True, False]
    assert stored[0][0]["id"] == stored[2][0]["id"]
    assert stored_subjects() == ["a", "b"]


def test_cancel_and_reschedule_say_why_they_refuse(services):
    intake, _ = services
    # Given no email 12345, Then cancelling it is NotFound
    with pytest.raises(NotFound):
        intake.cancel("default", 12345)
    # Given a cancelled email
    (row, _), = intake.accept_batch("default", ScheduleBatchSchema().load({"emails": [email()]})["emails"])
    assert intake.cancel("default", row["id"])["status"] == "CANCELLED"
    # When it is moved, Then the Conflict names its state
    with pytest.raises(Conflict, match="is CANCELLED"):
        intake.reschedule("default", row["id"], row["scheduled_at"])


def test_senders_put_get_and_usage(services):
    _, senders = services
    # Given a new sender, When it is put twice, Then it is created once and replaced once
    row, created = senders.put("default", "s1", from_address="a@example.com", hourly_limit=5, smtp_url=None,
                               smtp_password=None, dkim=None)
    assert created and row["hourly_limit"] == 5
    row, created = senders.put("default", "s1", from_address="a@example.com", hourly_limit=50, smtp_url=None,
                               smtp_password=None, dkim=None)
    assert not created and senders.get("default", "s1")["hourly_limit"] == 50
    # And it has sent nothing, And an unknown sender is None
    assert senders.usage("default", "s1") == 0
    assert senders.get("default", "nobody") is None
