"""Putting an address on an account's suppression list, and what that is counted and logged as.

Every way in (the API, a hard bounce at RCPT TO) comes through `suppress`, so each
new entry is counted once by reason, and the emails it stopped are counted too.
The address itself is never logged: the entry and the emails' events say it.
"""

from __future__ import annotations

import logging
from typing import Any

from . import metrics
from .db import suppressions

log = logging.getLogger(__name__)


def suppress(account: str, address: str, *, reason: str, sender_id: str | None = None,
             email_id: int | None = None) -> tuple[dict[str, Any], bool]:
    """Add `address` to the account's list (idempotent) and stop its PENDING emails; (entry, created). The
    caller holds a connection, and may hold a transaction the entry is to be part of."""
    entry, created = suppressions.add(account, address, reason=reason, sender_id=sender_id, email_id=email_id)
    if created:
        metrics.SUPPRESSIONS.labels(reason).inc()
        log.info("account %r: an address was suppressed (%s, sender %r, email %r); %d pending email(s) stopped",
                 account, reason, sender_id, email_id, entry["stopped"])
    if entry["stopped"]:
        metrics.SUPPRESSED.labels("listed").inc(entry["stopped"])
    return entry, created
