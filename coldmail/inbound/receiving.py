"""`receive`: one inbound message, classified, matched to the account's email, and acted on once."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import metrics
from ..db import database, inbound, pauses
from ..suppressing import suppress
from .classify import AUTO_REPLY, BOUNCE, COMPLAINT, REPLY, UNMATCHED, Classified, classify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """What a message was (`kind`, one of coldmail.inbound.KINDS) and the account's email it was about."""
    kind: str
    email_id: int | None


def receive(account: str, raw: bytes, *, sender_id: str | None = None) -> Received:
    """Classify the raw RFC 5322 message `raw` for `account` and apply what it means to the account's email it
    names (only the sender's when `sender_id` is given: a message read from that sender's mailbox). Blocking
    (Peewee); callable from any thread. Raises NotAMessage for bytes that are no message. A message the account
    had before (same Message-ID, or the same bytes when it has none) answers as it did then and changes nothing,
    unless it named none of the account's emails then: it is matched again."""
    found = classify(raw)
    with database.connection_context():
        with database.atomic():
            # seen before and it found an email: it acted then. Seen before without one, it changed nothing, and
            # may find one now (read first from another sender's mailbox, whose emails only it is matched to)
            if not inbound.first_seen(account, found.dedupe_key):
                kind, email_id = inbound.seen_before(account, found.dedupe_key)
                if email_id is not None:
                    metrics.INBOUND.labels("duplicate").inc()
                    log.info("inbound message of account %r seen before (%s, email %r): nothing changed",
                             account, kind, email_id)
                    return Received(kind, email_id)
            received, after = _act(account, found, sender_id)
            inbound.record(account, found.dedupe_key, received.kind, received.email_id)
    metrics.INBOUND.labels(received.kind).inc()
    after()
    return received


def _act(account: str, found: Classified, sender_id: str | None):
    """Apply the effect inside the caller's transaction; return (what it was, what to log after the commit)."""
    if found.kind == UNMATCHED:  # no report of a failure, no reply: nothing to look up (a delay notice, say)
        return Received(UNMATCHED, None), lambda: log.info(
            "inbound message for account %r is no reply, bounce, complaint or auto-reply: nothing changed", account)
    email = inbound.find_sent(account, message_ids=found.message_ids, email_ids=found.coldmail_ids,
                              sender_id=sender_id)
    if email is None:
        kind = UNMATCHED if found.kind == REPLY else found.kind
        return Received(kind, None), lambda: log.info(
            "inbound %s for account %r names none of its emails: nothing changed", kind, account)
    email_id = email["id"]
    if found.kind == BOUNCE:
        return Received(BOUNCE, email_id), _bounce(account, email, found)
    if found.kind == COMPLAINT:
        inbound.complained(account, email_id, detail={"feedbackType": found.feedback_type})
        suppress(account, email["recipient"], reason="complained", sender_id=email["sender_id"], email_id=email_id)
        return Received(COMPLAINT, email_id), lambda: log.warning(
            "email %r: its recipient complained (%s); address suppressed", email_id, found.feedback_type)
    if found.kind == AUTO_REPLY:
        inbound.auto_replied(account, email_id, detail={"subject": found.subject[:200]})
        return Received(AUTO_REPLY, email_id), lambda: log.info(
            "email %r: an auto-reply came; its sequence goes on", email_id)
    cancelled = inbound.replied(account, email_id, detail={"subject": found.subject[:200]})
    return Received(REPLY, email_id), lambda: _log_reply(email_id, cancelled or [])


def _log_reply(email_id: int, cancelled: list[int]) -> None:
    if cancelled:
        metrics.REPLY_CANCELLED.inc(len(cancelled))
    log.info("email %r: its recipient replied; %d pending email(s) of its sequence cancelled %s", email_id,
             len(cancelled), cancelled)


def _bounce(account: str, email: dict, found: Classified):
    failure = found.failures[0]
    detail = {"recipient": failure.address, "status": failure.status, "diagnostic": failure.diagnostic,
              "source": "dsn"}
    error = " ".join(filter(None, (failure.status, failure.diagnostic))) or "bounced"
    changed = inbound.bounce(account, email["id"], detail=detail, error=error)
    suppress(account, email["recipient"], reason="bounced", sender_id=email["sender_id"], email_id=email["id"])
    paused = pauses.pause_if_bouncing(account, email["sender_id"]) if changed else None

    def after() -> None:
        if changed:
            metrics.BOUNCES.inc()
        log.warning("email %r: a DSN reports it bounced (%s); address suppressed (sender %r)", email["id"],
                    failure.status, email["sender_id"])
        if paused is not None:
            metrics.PAUSES.inc()
            log.warning("sender %r of account %r: paused, %d hard bounces in its last %d sends exceed its "
                        "maxBounceRate %g", email["sender_id"], account, paused[1], paused[2], paused[0])
    return after
