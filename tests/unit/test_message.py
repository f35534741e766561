"""Building the message that goes on the wire."""

from datetime import datetime, timezone

from coldmail.mail.message import build_message, html_to_text, looks_like_html, message_id_for

CREATED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


def test_message_id_is_stable_per_email_and_unique_across_emails():
    a = message_id_for(7, CREATED, "me@example.org")
    assert a == message_id_for(7, CREATED, "me@example.org")
    assert a != message_id_for(8, CREATED, "me@example.org")
    assert a.startswith("<7.") and a.endswith("@example.org>")


def test_headers_and_plain_body():
    msg = build_message(email_id=1, created_at=CREATED, from_address="a@example.org", recipient="b@example.com",
                        subject="Hi", body="plain words")
    assert (msg["From"], msg["To"], msg["Subject"]) == ("a@example.org", "b@example.com", "Hi")
    assert msg["Date"] and msg["Message-ID"] == message_id_for(1, CREATED, "a@example.org")
    assert msg.get_content_type() == "text/plain"


def test_html_body_gets_a_text_alternative():
    msg = build_message(email_id=1, created_at=CREATED, from_address="a@example.org", recipient="b@example.com",
                        subject="Hi", body="<p>One</p><p>Two &amp; <a href='x'>three</a></p><script>x()</script>")
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    text = msg.get_body(("plain",)).get_content()
    assert "One" in text and "Two & three" in text and "x()" not in text


def test_html_detection_is_not_fooled_by_comparisons():
    assert looks_like_html("<b>x</b>") and looks_like_html("<br/>")
    assert not looks_like_html("2 < 3 and 5 > 4") and not looks_like_html("a<>b")
    assert html_to_text("<ul><li>a</li><li>b</li></ul>").split() == ["a", "b"]
