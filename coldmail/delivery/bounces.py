"""A hard bounce at RCPT TO: the email fails, its address is suppressed, and its sender may pause itself.

All three in one transaction, so a bounce is never recorded without its
suppression, and the bounce rate that decides the pause includes it. The pause
is one compare-and-set (coldmail.db.pauses): however many workers see the rate
pass at once, one pauses the sender, and only it logs and counts the pause.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import metrics
from ..db import database, pauses
from ..db.emails import sending
from ..logs import email_fields
from ..suppressing import suppress
from .retry import Verdict

log = logging.getLogger(__name__)


def record_hard_bounce(row: dict[str, Any], verdict: Verdict) -> bool:
    """The claimed email `row` hard-bounced; False when its claim had been taken back (nothing changed)."""
    with database.connection_context():
        with database.atomic():
            if not sending.mark_bounced(row["id"], claim=row["claims"], error=verdict.error, code=verdict.code):
                return False
            suppress(row["account"], row["recipient"], reason="bounced", sender_id=row["sender_id"],
                     email_id=row["id"])
            paused = pauses.pause_if_bouncing(row["account"], row["sender_id"])
    metrics.BOUNCES.inc()
    log.error("email %r: hard bounce, failed and its address suppressed (sender %r): %s", row["id"],
              row["sender_id"], verdict.error, extra=email_fields(row))
    if paused is not None:
        max_rate, bounces, sends = paused
        metrics.PAUSES.inc()
        log.warning("sender %r of account %r: paused, %d hard bounces in its last %d sends exceed its "
                    "maxBounceRate %g; its emails wait until PUT {\"paused\": false}", row["sender_id"],
                    row["account"], bounces, sends, max_rate)
    return True
