"""Building the message that goes on the wire."""

from datetime import datetime, timezone
from email import message_from_bytes, policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldmail.mail.message import build_message, html_to_text, looks_like_html, message_id_for

CREATED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


def on_the_wire(**fields):
    """Build a message, and read back its bytes as a receiver would (stored with local line ends)."""
    out = build_message(**{"email_id": 1, "created_at": CREATED, "from_address": "a@example.org",
                           "recipient": "b@example.com", **fields})
    assert b"\r\n" in out.data and b"\n" not in out.data.replace(b"\r\n", b""), "SMTP needs CRLF line ends"
    return out, message_from_bytes(out.data.replace(b"\r\n", b"\n"), policy=policy.default)


def test_message_id_is_stable_per_email_and_unique_across_emails():
    a = message_id_for(7, CREATED, "me@example.org")
    assert a == message_id_for(7, CREATED, "me@example.org")
    assert a != message_id_for(8, CREATED, "me@example.org")
    assert a.startswith("<7.") and a.endswith("@example.org>")


def test_headers_and_plain_body():
    out, msg = on_the_wire(subject="Hi", body="plain words")
    assert (msg["From"], msg["To"], msg["Subject"]) == ("a@example.org", "b@example.com", "Hi")
    assert msg["Date"] and msg["Message-ID"] == out.message_id == message_id_for(1, CREATED, "a@example.org")
    assert (out.sender, out.recipient, out.smtputf8) == ("a@example.org", "b@example.com", False)
    assert msg.get_content_type() == "text/plain" and msg.get_content().rstrip("\n") == "plain words"


def test_unicode_subject_and_body_and_long_lines_survive_the_trip():
    body = "Grüße, ✓ " * 200 + "\n.a line that starts with a dot\n"
    out, msg = on_the_wire(subject="Ünïcode ✓ " * 12, body=body)
    assert msg["Subject"] == ("Ünïcode ✓ " * 12).strip() or msg["Subject"] == "Ünïcode ✓ " * 12
    assert msg.get_content().rstrip("\n") == body.rstrip("\n")
    assert max(len(line) for line in out.data.split(b"\r\n")) <= 78


def test_an_internationalised_address_asks_for_smtputf8():
    out, msg = on_the_wire(recipient="jörg@example.com", subject="Hi", body="x")
    assert out.smtputf8 and msg["To"] == "jörg@example.com" and msg.get_content().rstrip("\n") == "x"


def test_html_body_gets_a_text_alternative():
    _, msg = on_the_wire(subject="Hi", body="<p>One</p><p>Two &amp; <a href='x'>three</a></p><script>x()</script>")
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    text = msg.get_body(("plain",)).get_content()
    assert "One" in text and "Two & three" in text and "x()" not in text


def test_html_detection_is_not_fooled_by_comparisons():
    assert looks_like_html("<b>x</b>") and looks_like_html("<br/>")
    assert not looks_like_html("2 < 3 and 5 > 4") and not looks_like_html("a<>b")
    assert html_to_text("<ul><li>a</li><li>b</li></ul>").split() == ["a", "b"]


def test_a_long_ascii_subject_is_folded_and_reads_back_whole():
    subject = " ".join(f"word{i}" for i in range(40))
    out, msg = on_the_wire(subject=subject, body="<p>x</p>")
    assert msg["Subject"] == subject
    assert max(len(line) for line in out.data.split(b"\r\n")) <= 78


def header_lines(out) -> list[bytes]:
    return out.data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


@pytest.mark.parametrize("subject", [
    "x" * 998, "word " + "x" * 993, "x" * 500 + " " + "y" * 497, "é" * 998, "ü" + "x" * 997,
    "x" * (78 - len("Subject: ")), "x" * (78 - len("Subject: ") + 1), "a " + "x" * 76,
    "https://example.com/" + "a" * 90,
])
@pytest.mark.parametrize("recipient", ["b@example.com", "jörg@example.com"])
def test_a_long_unbroken_subject_stays_within_the_line_limits_and_reads_back_whole(subject, recipient):
    out, msg = on_the_wire(recipient=recipient, subject=subject, body="x")
    # RFC 5322: 998 octets a line at most, 78 should; every line here can be folded to 78
    assert max(len(line) for line in header_lines(out)) <= 78, header_lines(out)
    assert msg["Subject"] == subject


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e) | st.sampled_from("éß✓ "),
               min_size=1, max_size=998).map(str.strip).filter(bool))
def test_any_one_line_subject_folds_to_78_and_reads_back_whole(subject):
    out, msg = on_the_wire(subject=subject, body="x")
    assert max(len(line) for line in header_lines(out)) <= 78
    assert msg["Subject"] == subject


@pytest.mark.parametrize("recipient,wire", [
    ("user@bücher.de", "user@xn--bcher-kva.de"), ("User@MÜLLER.example", "User@xn--mller-kva.example"),
    ("a@xn--bcher-kva.de", "a@xn--bcher-kva.de"),
])
def test_an_idn_domain_goes_as_a_labels_without_smtputf8(recipient, wire):
    out, msg = on_the_wire(recipient=recipient, from_address="news@bücher.de", subject="Hi", body="x")
    assert (out.recipient, out.sender, out.smtputf8) == (wire, "news@xn--bcher-kva.de", False)
    assert msg["To"] == wire and msg["From"] == "news@xn--bcher-kva.de"
    assert out.message_id.endswith("@xn--bcher-kva.de>")
    assert out.data.isascii()


def test_a_non_ascii_local_part_still_asks_for_smtputf8_whatever_its_domain():
    out, msg = on_the_wire(recipient="jörg@bücher.de", subject="Hi", body="x")
    assert out.smtputf8 and out.recipient == "jörg@bücher.de" and msg["To"] == "jörg@bücher.de"


def test_the_unsubscribe_link_goes_in_both_headers_and_in_each_part_escaped_for_html():
    from email import message_from_bytes, policy

    url = "https://mail.example.com/base/u/tok?a=1&b=\"2\""  # not what PUBLIC_BASE_URL allows: escaping shows
    body = '<p>Bye: <a href="{{unsubscribe_url}}">unsubscribe</a> {{unsubscribe_url}}</p>'
    out = build_message(email_id=1, created_at=CREATED, from_address="a@example.org", recipient="b@example.org",
                        subject="s", body=body, unsubscribe_url=url)
    msg = message_from_bytes(out.data, policy=policy.default)
    # Then the headers are RFC 8058's, each on one line
    assert msg["List-Unsubscribe"] == f"<{url}>" and msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # (folded before the link, the one place it can be, when the line would pass 78 characters)
    assert max(len(line) for line in out.data.split(b"\r\n\r\n")[0].split(b"\r\n")) <= 78
    # And the HTML part holds the escaped link twice, the text part the link itself
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    escaped = "https://mail.example.com/base/u/tok?a=1&amp;b=&quot;2&quot;"
    assert html.count(escaped) == 2 and "{{unsubscribe_url}}" not in html
    assert url in text and "{{unsubscribe_url}}" not in text


def test_without_a_link_there_are_no_unsubscribe_headers_and_the_placeholder_stays():
    out = build_message(email_id=1, created_at=CREATED, from_address="a@example.org", recipient="b@example.org",
                        subject="s", body="x {{unsubscribe_url}}")
    assert b"List-Unsubscribe" not in out.data and b"{{unsubscribe_url}}" in out.data
