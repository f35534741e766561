"""The inbound classifier on the fixtures and on the edges of each rule: what a message is, read from its bytes
alone (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coldmail.inbound.classify import NotAMessage, classify

FIXTURES = Path(__file__).parent.parent / "fixtures" / "inbound"
OURS = "<7.1765906260000000.coldmail@example.org>"
VALUES = {"FROM": "ann@example.org", "RECIPIENT": "jane@example.net", "MESSAGE_ID": OURS, "EMAIL_ID": "7",
          "FOLLOWUP_MESSAGE_ID": "<8.1765906260000001.coldmail@example.org>"}


def fixture(name: str) -> bytes:
    text = (FIXTURES / name).read_text()
    for key, value in VALUES.items():
        text = text.replace("{{%s}}" % key, value)
    return text.replace("\n", "\r\n").encode()


@pytest.mark.parametrize("name, status", [("dsn-postfix.eml", "5.1.1"), ("dsn-exim.eml", "5.1.1"),
                                          ("dsn-gmail.eml", "5.1.1"), ("dsn-m365.eml", "5.1.10")])
def test_each_relays_dsn_names_the_failed_recipient_its_status_and_the_original(name, status):
    found = classify(fixture(name))
    assert found.kind == "bounce"
    assert [(f.address, f.status) for f in found.failures] == [("jane@example.net", status)]
    assert OURS in found.message_ids and found.coldmail_ids == (7,)


def test_a_delayed_recipient_is_no_bounce():
    found = classify(fixture("dsn-postfix-delayed.eml"))
    assert found.kind == "unmatched" and found.failures == ()


def test_a_dsn_whose_recipient_expired_with_a_4xx_is_no_bounce():
    raw = fixture("dsn-postfix.eml").replace(b"Status: 5.1.1", b"Status: 4.4.7")
    assert classify(raw).kind == "unmatched"


def test_an_arf_report_is_a_complaint_about_the_returned_message():
    found = classify(fixture("arf.eml"))
    assert (found.kind, found.feedback_type, found.message_ids, found.coldmail_ids) == (
        "complaint", "abuse", (OURS,), (7,))


@pytest.mark.parametrize("name", ["auto-reply-rfc3834.eml", "auto-reply-exchange.eml", "auto-reply-x-autoreply.eml"])
def test_auto_replies(name):
    found = classify(fixture(name))
    assert found.kind == "auto_reply" and found.message_ids == (OURS,)


def test_an_away_subject_alone_is_a_persons_reply():
    assert classify(fixture("reply-away-subject.eml")).kind == "reply"


def test_auto_submitted_no_is_a_person():
    raw = fixture("reply-first.eml").replace(b"MIME-Version", b"Auto-Submitted: no\r\nMIME-Version")
    assert classify(raw).kind == "reply"


def test_precedence_auto_reply_alone_is_an_auto_reply():
    raw = fixture("reply-first.eml").replace(b"MIME-Version", b"Precedence: auto_reply\r\nMIME-Version")
    assert classify(raw).kind == "auto_reply"


def test_a_reply_names_the_message_it_answers_first_then_its_references_newest_first():
    found = classify(fixture("reply-followup.eml"))
    assert found.kind == "reply"
    assert found.message_ids == (VALUES["FOLLOWUP_MESSAGE_ID"], OURS)


def test_a_message_naming_nothing_is_unmatched_and_is_known_by_its_message_id_or_its_bytes():
    found = classify(fixture("unrelated.eml"))
    assert found.kind == "unmatched" and found.dedupe_key == "<news-20261204-77123@shop.example>"
    bare = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    assert classify(bare).dedupe_key == classify(bare).dedupe_key != classify(bare + b"more").dedupe_key
    assert classify(bare).dedupe_key.startswith("sha256:")


def test_a_persons_mail_never_reaches_the_bounce_heuristics():
    # a person quoting a bounce, with a 5.1.1 in the text, from an ordinary address
    raw = fixture("reply-first.eml").replace(b"Thanks, happy to talk.",
                                             b"I got: 550 5.1.1 user unknown for bob@example.net")
    assert classify(raw).kind == "reply"


@pytest.mark.parametrize("raw", [b"", b"  \r\n", b"just words, no header", b"X-Thing: 1\r\n\r\nbody"])
def test_bytes_that_are_no_message(raw):
    with pytest.raises(NotAMessage):
        classify(raw)
