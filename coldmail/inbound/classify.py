"""What an inbound message is, read from its bytes alone: a DSN, an ARF report, an auto-reply, or a message that
may answer one of ours. No database here: `coldmail.inbound.receive` matches what this finds to an email.

Order matters. A DSN and an ARF report are machine reports (RFC 3464, RFC 5965) and often carry
`Auto-Submitted` themselves, so they are read first; an auto-reply (RFC 3834) is next; anything else that names
earlier Message-IDs in In-Reply-To/References is a reply candidate. A bounce is a recipient that failed for
good (5.x.x): a delayed or expired 4.x.x recipient is not one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email import message_from_bytes, message_from_string, policy
from email.message import Message
from email.parser import HeaderParser
from email.utils import parseaddr

from flufl.bounce import all_failures

#: the kinds `receive` answers with (the inbound_messages table's CHECK lists the same)
BOUNCE, COMPLAINT, AUTO_REPLY, REPLY, UNMATCHED = "bounce", "complaint", "auto_reply", "reply", "unmatched"
KINDS = (BOUNCE, COMPLAINT, AUTO_REPLY, REPLY, UNMATCHED)

_MSGID = re.compile(r"<[^<>\s]+>")
#: an enhanced status code (RFC 3463), not a part of a longer dotted number (an IP address, a version)
_STATUS = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_COLDMAIL_ID = re.compile(r"^X-Coldmail-Id:[ \t]*(\d{1,18})[ \t]*$", re.MULTILINE | re.IGNORECASE)
_RETURNED_MSGID = re.compile(r"^Message-ID:[ \t]*(<[^<>\s]+>)", re.MULTILINE | re.IGNORECASE)
#: the senders of non-standard bounces (Exim's, old Sendmail's), for which flufl.bounce's detectors are asked
_DAEMON = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailer)@", re.IGNORECASE)
#: subjects of out-of-office notices: an auto-reply only when a header agrees (a person may write them too)
_AWAY_SUBJECT = re.compile(r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response)|"
                           r"autoreply|away from|on vacation|abwesenheitsnotiz|r[ée]ponse automatique)",
                           re.IGNORECASE)


class NotAMessage(ValueError):
    """The bytes are not an RFC 5322 message: none of the header fields every message has."""


#: a message has at least one of these (RFC 5322 requires From and Date; a bare relay hand-over has Received)
_MESSAGE_HEADERS = ("From", "Date", "Message-ID", "Received", "Return-Path", "To", "Subject")


@dataclass(frozen=True)
class Failure:
    """A recipient a DSN reports as failed for good."""
    address: str
    status: str | None
    diagnostic: str | None


@dataclass(frozen=True)
class Classified:
    """What the message is and what it names: `message_ids` of ours it may answer or report on, best first, and
    `coldmail_ids` from the X-Coldmail-Id of a returned copy. `kind` is REPLY for any message that names
    earlier Message-IDs; it stays one only if one of them is ours."""
    kind: str
    dedupe_key: str
    message_ids: tuple[str, ...] = ()
    coldmail_ids: tuple[int, ...] = ()
    failures: tuple[Failure, ...] = ()
    #: a complaint's feedback type (abuse, fraud, ...)
    feedback_type: str | None = None
    subject: str = ""


def parse(raw: bytes) -> Message:
    """The message, or NotAMessage (the email package reads any bytes as some message)."""
    if not raw.strip():
        raise NotAMessage("the body is empty: send one RFC 5322 message")
    try:
        message = message_from_bytes(raw, policy=policy.compat32)
    except RecursionError:  # the parser recurses per nested part: a few thousand levels exhaust the stack
        raise NotAMessage("the message nests its parts too deep to be read") from None
    if not any(message.get(name) is not None for name in _MESSAGE_HEADERS):
        raise NotAMessage("the body is not an RFC 5322 message: it has no From, Date, Message-ID, Received, "
                          "Return-Path, To or Subject header")
    return message


#: the longest Message-ID kept as it is for a dedupe key (characters; up to 4 bytes each in UTF-8)
_LONGEST_KEY = 500


def dedupe_key(message: Message, raw: bytes) -> str:
    """Its Message-ID, or a hash of its bytes when it has none: the same message delivered twice has the same."""
    found = _MSGID.search(_header(message, "Message-ID"))
    if found and len(found.group(0)) > _LONGEST_KEY:  # the key is indexed, and an index entry is 2.7 KB at most
        return "message-id-sha256:" + hashlib.sha256(found.group(0).encode("utf-8", "replace")).hexdigest()
    return found.group(0) if found else "sha256:" + hashlib.sha256(raw).hexdigest()


def classify(raw: bytes) -> Classified:
    # PostgreSQL's text and jsonb take no NUL: one in a header would fail the statements that store what it names
    raw = raw.replace(b"\x00", b"")
    message = parse(raw)
    key = dedupe_key(message, raw)
    subject = _header(message, "Subject")
    report = _report_type(message)
    if report == "delivery-status":
        return _dsn(message, key, subject)
    if report == "feedback-report":
        return _arf(message, key, subject)
    if _looks_like_bounce(message):
        return _plain_bounce(message, raw, key, subject)
    names = _references(message)
    if _is_auto_reply(message, subject):
        return Classified(AUTO_REPLY, key, names, subject=subject)
    if names:
        return Classified(REPLY, key, names, subject=subject)
    return Classified(UNMATCHED, key, subject=subject)


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    return "" if value is None else " ".join(str(value).split())


def _report_type(message: Message) -> str | None:
    if message.get_content_type() != "multipart/report":
        return None
    return (message.get_param("report-type") or "").lower() or None


def _references(message: Message) -> tuple[str, ...]:
    """The Message-IDs a message answers: its In-Reply-To first (the one it replies to), then References from
    the newest back (RFC 5322 lists them oldest first)."""
    in_reply_to = _MSGID.findall(_header(message, "In-Reply-To"))
    references = _MSGID.findall(_header(message, "References"))
    return tuple(dict.fromkeys(in_reply_to + references[::-1]))


# --- DSN (RFC 3464) -------------------------------------------------------------------------------------------

def _dsn(message: Message, key: str, subject: str) -> Classified:
    failures: list[Failure] = []
    returned: Message | None = None
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            failures.extend(_failed_recipients(part))
        elif kind in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers") and returned is None:
            returned = _returned(part)
    ids, coldmail = _original_names(returned)
    return Classified(BOUNCE if failures else UNMATCHED, key, ids, coldmail, tuple(failures), subject=subject)


def _failed_recipients(part: Message) -> list[Failure]:
    """The recipients of a message/delivery-status part that failed with a 5.x.x status: the email package
    reads its blocks of fields as messages, the first the per-message one."""
    blocks = part.get_payload()
    if isinstance(blocks, str):  # an unparsed block: read the fields ourselves
        blocks = [HeaderParser().parsestr(chunk) for chunk in re.split(r"\r?\n\s*\r?\n", blocks) if chunk.strip()]
    failed = []
    for block in blocks[1:] if len(blocks) > 1 else blocks:
        recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
        if not recipient:
            continue
        action = _header(block, "Action").lower()
        status_match = _STATUS.search(_header(block, "Status"))
        status = status_match.group(0) if status_match else None
        permanent = status is not None and status.startswith("5")
        if permanent and action in ("failed", ""):
            failed.append(Failure(recipient, status, _header(block, "Diagnostic-Code") or None))
    return failed


def _address(value: str | None) -> str | None:
    """`rfc822; user@example.com` → user@example.com."""
    if not value:
        return None
    kind, _, address = str(value).partition(";")
    address = (address if _ else kind).strip().strip("<>").strip()
    return address or None


def _returned(part: Message) -> Message | None:
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload[0] if payload else None
    if isinstance(payload, str):
        return HeaderParser().parsestr(part.get_payload(decode=True).decode("utf-8", "replace")
                                       if part.get("Content-Transfer-Encoding") else payload)
    return None


def _original_names(returned: Message | None) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The Message-ID and X-Coldmail-Id of a returned message (or its headers)."""
    if returned is None:
        return (), ()
    ids = tuple(_MSGID.findall(_header(returned, "Message-ID"))[:1])
    coldmail = _header(returned, "X-Coldmail-Id")
    return ids, ((int(coldmail),) if coldmail.isascii() and coldmail.isdigit() and len(coldmail) < 19 else ())


# --- non-standard bounces (Exim's default, old Sendmail's...) -------------------------------------------------

def _looks_like_bounce(message: Message) -> bool:
    """A bounce that is no DSN: sent by a mailer daemon with a null return path, or naming X-Failed-Recipients
    (Exim's). Only these are given to flufl.bounce's heuristics, which a person's reply must never reach."""
    if message.get("X-Failed-Recipients"):
        return True
    sender = parseaddr(_header(message, "From"))[1]
    return bool(_DAEMON.match(sender)) and _header(message, "Return-Path") in ("", "<>")


def _plain_bounce(message: Message, raw: bytes, key: str, subject: str) -> Classified:
    text = raw.decode("utf-8", "replace")
    # flufl.bounce's detectors call str methods on headers: read from the decoded text, an 8-bit byte in one
    # (a localized From) is a replacement character, not a Header object they raise on
    _temporary, permanent = all_failures(message_from_string(text, policy=policy.compat32))
    # the returned copy follows the report; the outer headers come first, so a returned header is a later one
    body = text.replace("\r\n", "\n").split("\n\n", 1)[-1]
    # the status is the report's: the outer headers' dotted numbers (Exim 4.97.1, an IP) are none
    status = _STATUS.search(body)
    failures = tuple(Failure(address.decode("ascii", "replace"), status.group(0) if status else None, None)
                     for address in sorted(permanent))
    ids = tuple(dict.fromkeys(_RETURNED_MSGID.findall(body)))
    coldmail = tuple(int(n) for n in dict.fromkeys(_COLDMAIL_ID.findall(body)))
    if failures and (status is None or status.group(1) == "5"):
        return Classified(BOUNCE, key, ids, coldmail, failures, subject=subject)
    return Classified(UNMATCHED, key, ids, coldmail, subject=subject)


# --- ARF (RFC 5965) -------------------------------------------------------------------------------------------

def _arf(message: Message, key: str, subject: str) -> Classified:
    feedback_type, returned = None, None
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/feedback-report":
            fields = part.get_payload()
            block = fields[0] if isinstance(fields, list) and fields else HeaderParser().parsestr(str(fields))
            feedback_type = _header(block, "Feedback-Type").lower() or None
        elif kind in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers") and returned is None:
            returned = _returned(part)
    ids, coldmail = _original_names(returned)
    return Classified(COMPLAINT, key, ids, coldmail, feedback_type=feedback_type, subject=subject)


# --- auto-replies (RFC 3834 and the common non-standard headers) ----------------------------------------------

def _is_auto_reply(message: Message, subject: str) -> bool:
    auto_submitted = _header(message, "Auto-Submitted").lower()
    precedence = _header(message, "Precedence").lower()
    if (auto_submitted and auto_submitted.split(";")[0].strip() != "no") or precedence == "auto_reply":
        return True
    if message.get("X-Autoreply") or message.get("X-Autorespond"):
        return True
    # weaker signs, each common on auto-replies but not only on them: they count with an away subject
    agrees = (precedence in ("bulk", "junk", "list") or message.get("X-Auto-Response-Suppress") is not None
              or message.get("X-Autogenerated") is not None or message.get("X-AutoReply-From") is not None)
    return agrees and _AWAY_SUBJECT.search(subject) is not None
