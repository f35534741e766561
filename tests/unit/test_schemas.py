"""What the schedule schema accepts, the worker can turn into a message, and the database can store.

Found by schemathesis: a subject with a vertical tab passed the CR/LF check, then
Python's email package refused it in the worker, so the email could never be sent.
"""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from coldmail.api.schemas import ScheduleEmailSchema
from coldmail.mail.message import build_message
from email import message_from_bytes, policy

SCHEMA = ScheduleEmailSchema()
BASE = {"recipient": "user@example.com", "subject": "Hi", "body": "Hello", "senderId": "s1"}
ANY_TEXT = st.text(alphabet=st.characters(codec=None), max_size=60)  # lone surrogates and controls too


def load(**changes):
    try:
        return SCHEMA.load({**BASE, **changes})
    except ValidationError:
        return None


def stores_in_postgres(text: str) -> bool:
    """PostgreSQL text takes valid UTF-8 without NUL: no NUL, and no lone surrogate (UTF-8 has none)."""
    try:
        text.encode("utf-8", "strict")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def test_what_postgres_cannot_store_is_told_apart():
    assert stores_in_postgres("plain") and stores_in_postgres("Grüße ✓ 🙂")
    assert not stores_in_postgres("a\x00b") and not stores_in_postgres("lone \ud800 surrogate")


@settings(max_examples=400, deadline=None, database=None)
@given(subject=ANY_TEXT, body=ANY_TEXT)
def test_an_accepted_email_can_be_built_and_stored(subject, body):
    payload = load(subject=subject, body=body)
    if payload is None:
        return
    assert stores_in_postgres(payload["subject"]) and stores_in_postgres(payload["body"])
    message = build_message(email_id=1, created_at=datetime.now(timezone.utc), from_address="a@example.com",
                            recipient=payload["recipient"], subject=payload["subject"], body=payload["body"])
    received = message_from_bytes(message.data, policy=policy.default)
    assert received["Subject"] == payload["subject"].strip() or received["Subject"] == payload["subject"]


@settings(max_examples=200, deadline=None, database=None)
@given(sender=ANY_TEXT, key=ANY_TEXT)
def test_accepted_ids_and_keys_are_plain_one_line_text(sender, key):
    payload = load(senderId=sender, idempotencyKey=key)
    if payload is None:
        return
    for value in (payload["senderId"], payload["idempotencyKey"]):
        assert value.isascii() and value.isprintable() and "\n" not in value


def test_line_breaks_of_every_kind_are_refused_in_the_subject():
    for brk in ("\r", "\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x00"):
        assert load(subject=f"Hi{brk}Bcc: x@example.com") is None, repr(brk)
    assert load(subject="Tabs\tand ünïcode ✓ are fine") is not None


def test_a_trailing_newline_does_not_slip_past_a_pattern():
    # re.match lets "abc\n" through "^...$"; the schema's patterns must match the whole value
    assert load(senderId="sender\n") is None
    assert load(idempotencyKey="key\n") is None
    assert load(senderId="sender") is not None
