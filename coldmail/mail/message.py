"""Turn a stored email into the RFC 5322 bytes that go on the wire.

Plain-ASCII addresses (nearly every email) are built with the email package's
compat32 classes: ten times less CPU than EmailMessage's header registry, which
cost a worker more than a millisecond per email. An internationalised address
needs SMTPUTF8 and takes the EmailMessage path.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email import quoprimime
from email.charset import QP, Charset
from email.header import Header
from email.message import EmailMessage, Message
from email.utils import format_datetime, formatdate
from html import escape
from html.parser import HTMLParser

from email_validator import EmailNotValidError, validate_email

_TAG = re.compile(r"<\s*/?\s*[a-zA-Z][a-zA-Z0-9]*(\s[^>]*)?/?\s*>")


def looks_like_html(body: str) -> bool:
    return _TAG.search(body) is not None


class _TextExtractor(HTMLParser):
    """The readable text of an HTML body, for the plain-text alternative."""

    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).splitlines())
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


def message_id_for(email_id: int, created_at: datetime, from_address: str) -> str:
    """A Message-ID that is the same on every attempt, so a receiver can drop a repeat."""
    domain = from_address.rpartition("@")[2] or "localhost"
    stamp = int(created_at.timestamp() * 1_000_000)
    return f"<{email_id}.{stamp}.coldmail@{domain}>"


@dataclass(frozen=True)
class Outgoing:
    """One message ready for a transport: its envelope and its bytes."""

    message_id: str
    sender: str
    recipient: str
    data: bytes
    #: an address is not ASCII: the relay must offer SMTPUTF8
    smtputf8: bool = False


#: a non-ASCII Subject as quoted-printable encoded words: readable, and folded under 78 characters
_UTF8 = Charset("utf-8")
_UTF8.header_encoding = QP
#: a run of characters too long to fit on one folded line after "Subject: ": compat32 cannot fold inside it
#: (a 998-character word made a 1007-octet line, over RFC 5322's 998) and moves it to a line of its own,
#: which changes the subject read back; encoded words can be cut anywhere
_UNFOLDABLE = re.compile(r"\S{%d,}" % (78 - len("Subject: ") + 1))


def _subject(subject: str) -> str | Header:
    """The Subject as it goes in the header: as is when it folds into lines of 78, else RFC 2047 words."""
    if subject.isascii() and _UNFOLDABLE.search(subject) is None:
        return subject
    return Header(subject, _UTF8, header_name="Subject")


def on_the_wire(address: str) -> str:
    """`address` with its domain in IDNA A-labels (xn--) when only the domain is not ASCII: such a message
    needs no SMTPUTF8, which many relays lack. A non-ASCII local part has no ASCII form: it stays as it is."""
    if address.isascii():
        return address
    try:
        return validate_email(address, check_deliverability=False).ascii_email or address
    except EmailNotValidError:
        return address


class _Wire(policy.Compat32):
    """compat32 folds every header through email.header.Header, most of the cost of a message; a short
    printable ASCII value has nothing to fold."""

    def _fold(self, name, value, sanitize):
        if isinstance(value, str) and len(name) + len(value) < 76 and value.isascii() and value.isprintable():
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


#: SMTP wants CRLF line ends, and smtplib does not convert the bytes it is given
_WIRE = _Wire(linesep="\r\n")


def _text_part(text: str, subtype: str) -> Message:
    """A text/`subtype` part in UTF-8 quoted-printable, encoded once by the email package's own encoder:
    MIMEText's charset handling parses its Content-Type again for each parameter it sets (a third of a
    message's cost)."""
    part = Message()
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(quoprimime.body_encode(text.encode("utf-8").decode("latin-1")))
    return part


#: in a body, replaced by the email's unsubscribe link
UNSUBSCRIBE_PLACEHOLDER = "{{unsubscribe_url}}"


def _with_link(body: str, html: bool, url: str) -> str:
    """`body` with the placeholder replaced by `url`, escaped in HTML (an attribute's quotes included)."""
    if UNSUBSCRIBE_PLACEHOLDER not in body:
        return body
    return body.replace(UNSUBSCRIBE_PLACEHOLDER, escape(url, quote=True) if html else url)


def build_message(*, email_id: int, created_at: datetime, from_address: str, recipient: str,
                  subject: str, body: str, date: datetime | None = None,
                  unsubscribe_url: str | None = None, thread: list[str] | None = None) -> Outgoing:
    """The message; with `unsubscribe_url`, it carries RFC 8058's one-click List-Unsubscribe headers and the
    body's {{unsubscribe_url}} becomes that link (without it, the placeholder stays as written). `thread`: the
    Message-IDs of the emails it follows up, oldest first: In-Reply-To names the last, References all (RFC 5322
    3.6.4), so mail clients show it in their thread."""
    from_address, recipient = on_the_wire(from_address), on_the_wire(recipient)
    message_id = message_id_for(email_id, created_at, from_address)
    headers = {
        "From": from_address,
        "To": recipient,
        "Subject": _subject(subject),
        "Date": format_datetime(date) if date else formatdate(localtime=False, usegmt=True),
        "Message-ID": message_id,
        "X-Coldmail-Id": str(email_id),
    }
    if thread:
        headers["In-Reply-To"] = thread[-1]
        headers["References"] = " ".join(thread)
    html = looks_like_html(body)
    if unsubscribe_url is not None:
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        body = _with_link(body, html, unsubscribe_url)
    if (from_address + recipient).isascii():
        msg = _text_part(html_to_text(body) if html else body, "plain")
        if html:
            # "=_" never occurs in quoted-printable text, so the generator need not search the parts for
            # the boundary (a regular expression compiled per message)
            alternative = Message()
            alternative["Content-Type"] = f'multipart/alternative; boundary="=_{secrets.token_hex(12)}"'
            alternative.set_payload([msg, _text_part(body, "html")])
            msg = alternative
        msg["MIME-Version"] = "1.0"
        for name, value in headers.items():
            msg[name] = value
        return Outgoing(message_id, from_address, recipient, msg.as_bytes(policy=_WIRE))
    modern = EmailMessage()
    for name, value in headers.items():
        if isinstance(value, Header):
            # as encoded words folded by compat32: EmailMessage's folder moves a word too long for the first
            # line to a line of its own, and the subject reads back with a leading space
            modern.set_raw(name, value.encode(linesep="\n"))
        else:
            modern[name] = value
    if html:
        modern.set_content(html_to_text(body))
        modern.add_alternative(body, subtype="html")
    else:
        modern.set_content(body)
    return Outgoing(message_id, from_address, recipient, modern.as_bytes(policy=policy.SMTPUTF8),
                    smtputf8=True)
