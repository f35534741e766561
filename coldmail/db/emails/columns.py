"""The email statements' column lists, from the Email model, and the statuses, from EmailStatus."""

from __future__ import annotations

from ...status import EmailStatus
from ..models import Email
from ..rows import column_list, fields_but

#: a whole email: what a claim sends from, and what cancel and reschedule answer with
EMAIL_COLUMNS = column_list(Email._meta.sorted_fields)

#: what a new email's answer, log line and hand-over need: not its body (up to 1 MiB) nor the other columns
STORED_FIELDS = [Email.id, Email.account, Email.sender_id, Email.status, Email.scheduled_at, Email.next_attempt_at,
                 Email.queued_at, Email.idempotency_key, Email.payload_hash, Email.recipient_time_zone]
STORED_COLUMNS = column_list(STORED_FIELDS)

#: what a listing shows: never the body, which may be a megabyte per row, nor the hand-over's and the claim's
#: bookkeeping, nor the account (the caller's own)
LIST_COLUMNS = column_list(fields_but(Email, Email.account, Email.body, Email.queued_at, Email.lease_until,
                                      Email.claims, Email.worker_id, Email.recipient_key, Email.bounced_at,
                                      Email.idempotency_key, Email.payload_hash))


def _literal(status: EmailStatus) -> str:
    return f"'{status.value}'"


# The statuses as SQL literals for the statements' f-strings (`WHERE status = {PENDING}`): in its text, a
# statement reads as it runs, and the partial indexes on a status match it even when it is prepared.
PENDING = _literal(EmailStatus.PENDING)
SENDING = _literal(EmailStatus.SENDING)
SENT = _literal(EmailStatus.SENT)
FAILED = _literal(EmailStatus.FAILED)
CANCELLED = _literal(EmailStatus.CANCELLED)
SUPPRESSED = _literal(EmailStatus.SUPPRESSED)
BOUNCED = _literal(EmailStatus.BOUNCED)
