"""Inbound mail: what a message a relay, a mail filter or a mailbox hands over is, and what it does.

`receive` is the one way in, for `POST /inbound` and the mailbox poller alike: it classifies the message
(`classify`), finds the account's email it is about, and applies the effect in one transaction with the
message's dedupe row, so the same message twice changes nothing the second time.
"""

from __future__ import annotations

from .classify import AUTO_REPLY, BOUNCE, COMPLAINT, KINDS, REPLY, UNMATCHED, NotAMessage
from .receiving import Received, receive

__all__ = ["AUTO_REPLY", "BOUNCE", "COMPLAINT", "KINDS", "REPLY", "UNMATCHED", "NotAMessage", "Received",
           "receive"]
