"""A paused sender's statements on the real database: the hand-over moves its due emails out of its way
instead of planning them, resuming brings them back at their own time, and the bounce rate pauses a sender
once, only past its maxBounceRate over at least 20 sends."""

from __future__ import annotations

from types import SimpleNamespace

from coldmail.db import database, pauses
from coldmail.db.emails import handover
from tests.support.db import sql


def add_email(sender: str, *, ago_s: float = 1.0) -> int:
    """A PENDING email of the sender, due `ago_s` ago, not handed over."""
    [(email_id,)] = sql(
        "INSERT INTO emails (account, recipient, recipient_key, subject, body, sender_id, scheduled_at, "
        "next_attempt_at) VALUES ('default', 'u@example.com', 'u@example.com', 's', 'b', %s, "
        "now() - %s * interval '1 second', now() - %s * interval '1 second') RETURNING id", sender, ago_s, ago_s)
    return email_id


def test_the_hand_over_moves_a_paused_senders_due_emails_aside_and_resuming_brings_them_back(base_env):
    sql("INSERT INTO senders (account, id, paused) VALUES ('default', 'held', true), ('default', 'free', false)")
    held = [add_email("held", ago_s=5 - i) for i in range(3)]
    free = add_email("free")
    planned: list[list[int]] = []

    def plan(rows):
        planned.append([row["id"] for row in rows])
        return SimpleNamespace(go=[(row["id"], 0) for row in rows], later=[])

    # When the scheduler takes what is due
    with database.connection_context():
        dealt, queued = handover.take_due(horizon_s=10, limit=100, plan=plan)
    # Then only the free sender's email was planned and queued; the paused one's were moved a day on
    assert (dealt, queued, planned) == (4, [(free, 0)], [[free]])
    rows = sql("SELECT id, queued_at IS NULL, next_attempt_at > now() + interval '23 hours' FROM emails "
               "WHERE sender_id = 'held' ORDER BY id")
    assert rows == [(i, True, True) for i in held]
    assert sql("SELECT email_id, detail->>'reason' FROM email_events WHERE kind = 'deferred' ORDER BY email_id") \
        == [(i, "paused") for i in held]
    # And the next take finds nothing of theirs
    with database.connection_context():
        assert handover.take_due(horizon_s=10, limit=100, plan=plan) == (0, [])
    # When the sender is resumed, Then they are due at their own (past: now) time again, in their order
    with database.connection_context():
        assert sorted(handover.resume_paused("default", "held")) == held
        assert handover.resume_paused("default", "held") == []
    assert sql("SELECT bool_and(next_attempt_at <= now()) FROM emails WHERE sender_id = 'held'") == [(True,)]


def test_a_sender_pauses_once_past_its_rate_over_enough_sends(base_env):
    sql("INSERT INTO senders (account, id, max_bounce_rate) VALUES ('default', 's1', 0.1), ('default', 's2', NULL)")
    for sender in ("s1", "s2"):
        for i in range(17):
            sql("UPDATE emails SET status = 'SENT', sent_at = now() - %s * interval '1 second' WHERE id = %s",
                i + 10, add_email(sender))
        for i in range(2):
            sql("UPDATE emails SET status = 'FAILED', bounced_at = now() - %s * interval '1 second' WHERE id = %s",
                i, add_email(sender))
    with database.connection_context():
        # 2 bounces in 19 sends: above 10 %, but fewer than 20 sends
        assert pauses.bounce_counts("default", "s1") == (2, 19)
        assert pauses.pause_if_bouncing("default", "s1") is None
    sql("UPDATE emails SET status = 'SENT', sent_at = now() WHERE id = %s", add_email("s1"))
    with database.connection_context():
        # 2 in 20 is 10 %: not above it
        assert pauses.pause_if_bouncing("default", "s1") is None
    sql("UPDATE emails SET status = 'FAILED', bounced_at = now() WHERE id = %s", add_email("s1"))
    with database.connection_context():
        # 3 in 21 is: paused by the first call only; a sender without a rate never
        assert pauses.pause_if_bouncing("default", "s1") == (0.1, 3, 21)
        assert pauses.pause_if_bouncing("default", "s1") is None
        assert pauses.pause_if_bouncing("default", "s2") is None
    assert sql("SELECT id, paused FROM senders ORDER BY id") == [("s1", True), ("s2", False)]


def test_the_rate_looks_at_the_last_100_sends_only(base_env):
    sql("INSERT INTO senders (account, id, max_bounce_rate) VALUES ('default', 's1', 0.05)")
    # 10 old bounces, then 100 good sends since
    for i in range(10):
        sql("UPDATE emails SET status = 'FAILED', bounced_at = now() - interval '1 day' WHERE id = %s",
            add_email("s1"))
    for i in range(100):
        sql("UPDATE emails SET status = 'SENT', sent_at = now() - %s * interval '1 second' WHERE id = %s",
            i, add_email("s1"))
    with database.connection_context():
        assert pauses.bounce_counts("default", "s1") == (0, 100)
        assert pauses.pause_if_bouncing("default", "s1") is None
