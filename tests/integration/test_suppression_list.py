"""The suppression list's statements on the real database: one entry per address however it is written, and a
new entry stops the account's PENDING emails to it at once, with their events."""

from __future__ import annotations

import pytest

from coldmail.addresses import normalise
from coldmail.api.schemas import ScheduleEmailSchema
from coldmail.db import database, suppressions
from coldmail.intake.service import Intake
from coldmail.queue.setup import build_queue
from tests.support.db import event_kinds, sql


@pytest.fixture
def intake(make_settings):
    settings = make_settings()
    queue = build_queue(settings)
    intake = Intake(settings=settings, handover=queue.handover, caps=queue.handover.caps)
    yield intake
    intake.close()
    queue.handover.close()
    queue.broker.close()


def schedule(intake: Intake, recipient: str, *, account: str = "default", at: str = "2099-01-01T00:00:00Z") -> int:
    payload = ScheduleEmailSchema().load({"recipient": recipient, "subject": "Hi", "body": "Hello",
                                          "senderId": "s1", "scheduledAt": at})
    [(row, _)] = intake.accept_batch(account, [payload])
    return row["id"]


def test_normalise_lowers_the_local_part_and_writes_the_domain_in_ascii():
    assert normalise(" Jane.Doe@Example.COM ") == "jane.doe@example.com"
    assert normalise("Ünï@Bücher.Example") == "ünï@xn--bcher-kva.example"
    assert normalise("x@xn--bcher-kva.example") == normalise("x@BÜCHER.example")
    for bad in ("no-at-sign", "@example.com", "user@", "user@exa mple..com\u200b"):
        with pytest.raises(ValueError):
            normalise(bad)


def test_add_is_idempotent_and_keeps_the_first_reason(database_url, base_env):
    with database.connection_context():
        entry, created = suppressions.add("default", "User@Bücher.example", reason="manual")
        assert created and entry["address"] == "user@xn--bcher-kva.example" and entry["reason"] == "manual"
        again, created = suppressions.add("default", "USER@xn--bcher-kva.EXAMPLE", reason="bounced", email_id=7)
        assert not created and again["reason"] == "manual" and again["created_at"] == entry["created_at"]
        # another account's list is its own
        other, created = suppressions.add("other", "user@bücher.example", reason="unsubscribed", sender_id="s1")
        assert created and other["sender_id"] == "s1"
    assert sql("SELECT account, reason FROM suppressions ORDER BY account") == [
        ("default", "manual"), ("other", "unsubscribed")]
    with pytest.raises(ValueError):
        with database.connection_context():
            suppressions.add("default", "x@example.com", reason="because")


def test_add_stops_the_accounts_pending_emails_to_the_address_in_one_statement(intake):
    # Given PENDING emails to one address written three ways, one to another address and one in another account
    ids = [schedule(intake, r) for r in ("Ann@Bücher.example", "ann@xn--bcher-kva.example", "ANN@bücher.EXAMPLE")]
    other_address = schedule(intake, "bob@bücher.example")
    other_account = schedule(intake, "ann@bücher.example", account="other")
    # And one already sent
    sent = schedule(intake, "ann@bücher.example")
    sql("UPDATE emails SET status = 'SENT' WHERE id = %s", sent)
    # When the address is suppressed
    with database.connection_context():
        entry, created = suppressions.add("default", "ann@BÜCHER.example", reason="unsubscribed", email_id=ids[0])
    # Then the three are SUPPRESSED, each with a suppressed event naming the reason, and nothing else changed
    assert created and entry["stopped"] == 3
    status = dict(sql("SELECT id, status FROM emails"))
    assert [status[i] for i in ids] == ["SUPPRESSED"] * 3
    assert (status[other_address], status[other_account], status[sent]) == ("PENDING", "PENDING", "SENT")
    assert sql("SELECT email_id, detail->>'reason' FROM email_events WHERE kind = 'suppressed' ORDER BY email_id") \
        == [(i, "unsubscribed") for i in ids]
    assert event_kinds(ids[0])[-1] == "suppressed"


def test_remove_and_page(database_url, base_env):
    with database.connection_context():
        for address, reason in [("c@x.example", "manual"), ("a@x.example", "bounced"), ("b@x.example", "manual")]:
            suppressions.add("default", address, reason=reason)
        assert [e["address"] for e in suppressions.page("default", limit=2)] == ["a@x.example", "b@x.example"]
        assert [e["address"] for e in suppressions.page("default", limit=2, after="b@x.example")] == ["c@x.example"]
        assert [e["address"] for e in suppressions.page("default", limit=9, reason="manual")] == [
            "b@x.example", "c@x.example"]
        assert [e["address"] for e in suppressions.page("default", limit=9, address="A@X.example")] == ["a@x.example"]
        assert suppressions.page("other", limit=9) == []
        assert suppressions.remove("default", "B@x.example") is True
        assert suppressions.remove("default", "b@x.example") is False
        assert suppressions.get("default", "b@x.example") is None
