"""Turn a stored email into the RFC 5322 message that goes on the wire."""

from __future__ import annotations

import re
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formatdate
from html.parser import HTMLParser

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


def build_message(*, email_id: int, created_at: datetime, from_address: str, recipient: str,
                  subject: str, body: str, date: datetime | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = from_address
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date) if date else formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id_for(email_id, created_at, from_address)
    msg["X-Coldmail-Id"] = str(email_id)
    if looks_like_html(body):
        msg.set_content(html_to_text(body))
        msg.add_alternative(body, subtype="html")
    else:
        msg.set_content(body)
    return msg
