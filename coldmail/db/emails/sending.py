"""A worker's statements: claim emails for sending, then record what became of each.

A claim numbers itself (`claims`, one more each time the email is claimed) and
names the worker process that holds it (`worker_id`, for the sweep). Every
outcome is a compare-and-set on SENDING *and that number*, so a claim whose
lease was taken back (by the sweep, and perhaps claimed again by another
worker) records nothing, even after the email was claimed again: fencing costs
a parameter, not a round trip.
"""

from __future__ import annotations

from typing import Any

from psycopg2.extras import Json

from ..connection import database
from ..outbox import outbox, returning
from ..senders import PLACING_SELECT
from ..rows import dicts
from .columns import EMAIL_COLUMNS, FAILED, PENDING, SENDING, SENT, SUPPRESSED
from .due import MOVE_KIND, PAUSED_UNTIL, due_at

_CLAIM = f"""
WITH asked AS (
    SELECT e.id, x.reason AS suppressed_for, coalesce(s.paused, false) AS paused
    FROM emails e
    LEFT JOIN suppressions x ON x.account = e.account AND x.address = e.recipient_key
    LEFT JOIN senders s ON s.account = e.account AND s.id = e.sender_id
    WHERE e.id = ANY(%(ids)s::bigint[]) AND e.status = {PENDING}
      AND e.next_attempt_at <= now() + %(early_s)s * interval '1 second'
), c AS (
    UPDATE emails SET status = {SENDING}, lease_until = now() + %(lease_s)s * interval '1 second',
                      claims = claims + 1, worker_id = %(worker)s, updated_at = now()
    WHERE id IN (SELECT id FROM asked WHERE suppressed_for IS NULL AND NOT paused) AND status = {PENDING}
      AND next_attempt_at <= now() + %(early_s)s * interval '1 second'
    RETURNING {EMAIL_COLUMNS}
), suppressed AS (
    UPDATE emails e SET status = {SUPPRESSED}, queued_at = NULL, lease_until = NULL, updated_at = now()
    FROM asked WHERE e.id = asked.id AND asked.suppressed_for IS NOT NULL AND e.status = {PENDING}
    RETURNING {returning("e.")}, asked.suppressed_for
), ws AS ({outbox("suppressed", "email.suppressed", detail="jsonb_build_object('reason', src.suppressed_for)")}
), paused AS (
    UPDATE emails e SET queued_at = NULL, next_attempt_at = {PAUSED_UNTIL}, updated_at = now()
    FROM asked WHERE e.id = asked.id AND asked.suppressed_for IS NULL AND asked.paused AND e.status = {PENDING}
    RETURNING e.id, e.next_attempt_at
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'claimed', jsonb_build_object('attempt', attempts + 1) FROM c
    UNION ALL
    SELECT id, 'suppressed', jsonb_build_object('reason', suppressed_for) FROM suppressed
    UNION ALL
    SELECT id, 'deferred', jsonb_build_object('reason', 'paused', 'nextAttemptAt', next_attempt_at) FROM paused
)
SELECT c.*, greatest(0, extract(epoch FROM c.next_attempt_at - now()))::float AS wait_s,
       s.from_address, s.smtp_url, s.smtp_password_enc, s.dkim_domain, s.dkim_selector,
       s.dkim_key_enc, {PLACING_SELECT}
FROM c LEFT JOIN senders s ON s.account = c.account AND s.id = c.sender_id
ORDER BY c.next_attempt_at, c.id
"""


def claim(email_ids: list[int], *, lease_s: float, early_s: float = 0.0, worker: str | None = None
          ) -> list[dict[str, Any]]:
    """Take the PENDING emails among `email_ids` that are due within `early_s` for sending (SENDING with a
    lease held by `worker`), soonest first; the others are not ours to send (yet).

    The suppression list is checked here again, in the same statement: an email whose address was
    suppressed at any time before it becomes SUPPRESSED (its `suppressed` event names the reason) instead of
    being claimed, however it got past acceptance. An email of a paused sender is not claimed either: it
    stays PENDING, out of the hand-over's way until the sender resumes (`deferred`, reason `paused`; no
    attempt spent). `wait_s` in each row
    says how long until it is due: the caller waits that out; `claims` is the claim's number, which every
    outcome below must name."""
    return dicts(database.execute_sql(_CLAIM, {"ids": email_ids, "lease_s": lease_s, "early_s": early_s,
                                               "worker": worker}))


_SECONDS_UNTIL_DUE = ("SELECT id, extract(epoch FROM next_attempt_at - now())::float FROM emails "
                      f"WHERE id = ANY(%s::bigint[]) AND status = {PENDING}")


def seconds_until_due(email_ids: list[int]) -> dict[int, float]:
    """For emails that could not be claimed: seconds until each still PENDING one is due."""
    return dict(database.execute_sql(_SECONDS_UNTIL_DUE, (email_ids,)).fetchall())


def _event_from_update(update: str, *, webhook: str | None = None, webhook_detail: str = "%(detail)s::jsonb"
                       ) -> str:
    """`update` (an UPDATE of emails without RETURNING), its audit event %(kind)s with %(detail)s, and when
    `webhook` names an event type the deliveries to the endpoints subscribed to it (`webhook_detail` in their
    data: the audit event's detail unless said otherwise)."""
    deliveries = f", wh AS ({outbox('u', webhook, detail=webhook_detail)})" if webhook else ""
    return f"""
WITH u AS ({update} RETURNING {returning()}), ev AS (
    INSERT INTO email_events (email_id, kind, detail) SELECT id, %(kind)s, %(detail)s FROM u
){deliveries}
SELECT id FROM u
"""


def _change(sql: str, kind: str, detail: dict, params: dict) -> bool:
    cursor = database.execute_sql(sql, dict(params, kind=kind, detail=Json(detail)))
    return cursor.fetchone() is not None


_MARK_SENT = f"""
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(claims)s::int[], %(message_ids)s::text[], %(replies)s::text[])
        AS t(id, claim, message_id, reply)
), u AS (
    UPDATE emails e SET status = {SENT}, sent_at = now(), message_id = input.message_id, attempts = attempts + 1,
                        lease_until = NULL, last_error = NULL, updated_at = now()
    FROM input WHERE e.id = input.id AND e.status = {SENDING} AND e.claims = input.claim
    RETURNING {returning("e.")}, input.reply
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'sent', jsonb_build_object('reply', reply, 'messageId', message_id) FROM u
), wh AS ({outbox("u", "email.sent", detail="jsonb_build_object('reply', src.reply)")}
)
SELECT id FROM u
UNION ALL
-- recorded by an earlier try of the same claim whose answer was lost with its connection (this statement
-- sees the rows as they were before it, so none comes twice)
SELECT e.id FROM emails e JOIN input USING (id)
WHERE e.status = {SENT} AND e.claims = input.claim AND e.message_id = input.message_id
"""


def mark_sent(sent: list[tuple[int, int, str, str]]) -> set[int]:
    """Record (email id, claim number, Message-ID, the relay's reply) sends in one statement; return the ids
    recorded (one missing had lost its claim: the sweep took it back). Safe to repeat."""
    cursor = database.execute_sql(_MARK_SENT, {
        "ids": [s[0] for s in sent], "claims": [s[1] for s in sent], "message_ids": [s[2] for s in sent],
        "replies": [s[3] for s in sent]})
    return {row[0] for row in cursor.fetchall()}


_MARK_FAILED = _event_from_update(
    f"UPDATE emails SET status = {FAILED}, attempts = attempts + 1, lease_until = NULL, "
    f"last_error = %(error)s, updated_at = now() "
    f"WHERE id = %(id)s AND status = {SENDING} AND claims = %(claim)s", webhook="email.failed")


def mark_failed(email_id: int, *, claim: int, error: str, code: int | None) -> bool:
    return _change(_MARK_FAILED, "failed", {"code": code, "error": error},
                   {"id": email_id, "claim": claim, "error": error})


_MARK_BOUNCED = f"""
WITH u AS (
    UPDATE emails SET status = {FAILED}, attempts = attempts + 1, lease_until = NULL, last_error = %(error)s,
                      bounced_at = now(), updated_at = now()
    WHERE id = %(id)s AND status = {SENDING} AND claims = %(claim)s RETURNING {returning()}
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'failed', %(detail)s::jsonb FROM u UNION ALL SELECT id, 'bounced', %(detail)s::jsonb FROM u
), wf AS ({outbox("u", "email.failed")}
), wb AS ({outbox("u", "email.bounced", detail="%(detail)s::jsonb")}
)
SELECT id FROM u
"""


def mark_bounced(email_id: int, *, claim: int, error: str, code: int | None) -> bool:
    """FAILED by a hard bounce: the relay refused the recipient as nonexistent (coldmail.delivery.retry), so
    `bounced_at` counts it toward its sender's bounce rate; a `failed` and a `bounced` event. The caller
    suppresses the address in the same transaction."""
    detail = Json({"code": code, "error": error})
    cursor = database.execute_sql(_MARK_BOUNCED, {"id": email_id, "claim": claim, "error": error, "detail": detail})
    return bool(cursor.fetchall())


_RETRY_LATER = _event_from_update(
    f"UPDATE emails SET status = {PENDING}, attempts = attempts + 1, queued_at = NULL, lease_until = NULL, "
    "next_attempt_at = now() + %(delay_s)s * interval '1 second', last_error = %(error)s, updated_at = now() "
    f"WHERE id = %(id)s AND status = {SENDING} AND claims = %(claim)s", webhook="email.deferred",
    webhook_detail="jsonb_build_object('reason', 'attempt_failed') || %(detail)s::jsonb")


def retry_later(email_id: int, *, claim: int, delay_s: float, error: str, code: int | None) -> bool:
    return _change(_RETRY_LATER, "attempt_failed", {"code": code, "error": error, "retryInSeconds": round(delay_s, 3)},
                   {"id": email_id, "claim": claim, "delay_s": delay_s, "error": error})


#: email.deferred's detail: why, and when the email is tried next
_DEFERRED = ("jsonb_build_object('reason', {reason}, 'nextAttemptAt', "
             """to_char(src.next_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))""")

_MOVE = f"""
WITH u AS (
    UPDATE emails SET status = {PENDING}, queued_at = NULL, lease_until = NULL, updated_at = now(),
                      next_attempt_at = greatest(now(), coalesce(%(at)s::timestamptz,
                                                                 now() + %(delay_s)s * interval '1 second'))
    WHERE id = %(id)s AND status = {SENDING} AND claims = %(claim)s RETURNING {returning()}, next_attempt_at
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, {MOVE_KIND.format(reason="%(reason)s")},
           jsonb_build_object('reason', %(reason)s::text, 'nextAttemptAt', next_attempt_at) FROM u
), wh AS ({outbox("u", "email.deferred", detail=_DEFERRED.format(
    reason="CASE WHEN %(reason)s = 'hourly_limit' THEN 'rate_limited' ELSE %(reason)s END"))}
)
SELECT id FROM u
"""


def move(email_id: int, *, claim: int, reason: str, delay_s: float = 0.0, at: Any = None) -> bool:
    """Put a claimed email back PENDING for `at` (or `delay_s` from now), unsent and with no attempt used,
    because its sender's pacing does not let it go now (`reason`: hourly_limit, daily_limit, gap, window); one
    event names the reason and the new time."""
    params = {"id": email_id, "claim": claim, "delay_s": delay_s, "reason": reason, "at": at}
    return database.execute_sql(_MOVE, params).fetchone() is not None


def defer_for_cap(email_id: int, *, claim: int, delay_s: float) -> bool:
    """Put a claimed email back for when its sender's cap frees a slot; no attempt is used."""
    return move(email_id, claim=claim, delay_s=delay_s, reason="hourly_limit")


_HOLD = f"""
WITH u AS (
    UPDATE emails e SET status = {PENDING}, queued_at = NULL, lease_until = NULL, updated_at = now(),
        last_error = %(error)s,
        next_attempt_at = now() + least(%(max_s)s, %(base_s)s * power(2, least(30, (
            SELECT count(*) FROM email_events v WHERE v.email_id = e.id AND v.kind = 'held')))) * interval '1 second'
    WHERE id = %(id)s AND status = {SENDING} AND claims = %(claim)s RETURNING {returning()}, next_attempt_at
), ev AS (
    INSERT INTO email_events (email_id, kind, detail)
    SELECT id, 'held', jsonb_build_object('reason', %(reason)s, 'error', %(error)s, 'nextAttemptAt', next_attempt_at)
    FROM u
), wh AS ({outbox("u", "email.deferred", detail=_DEFERRED.format(reason="'held'"))}
)
SELECT id FROM u
"""


def hold(email_id: int, *, claim: int, reason: str, error: str, base_s: float, max_s: float) -> bool:
    """Put a claimed email back PENDING, unsent and with no attempt spent, because something it needs is
    missing (its sender's stored secret opens with no configured key): a `held` event says why. It is
    tried again after `base_s`, doubled for each earlier hold of the email, `max_s` at most, and at once
    when the API process starts and finds its sender readable again (`recovery.resume_held`). `error` is shown as
    the email's lastError; it must hold no secret."""
    cursor = database.execute_sql(_HOLD, {"id": email_id, "claim": claim, "reason": reason, "error": error,
                                          "base_s": base_s, "max_s": max_s})
    return cursor.fetchone() is not None


_AFTER_DELAY = "now() + %(delay_s)s * interval '1 second'"
_RELEASE = _event_from_update((
    f"UPDATE emails SET status = {PENDING}, queued_at = NULL, lease_until = NULL, updated_at = now(), "
    f"next_attempt_at = {due_at('next_attempt_at', earliest=_AFTER_DELAY)} "
    "WHERE (id, claims) IN (SELECT * FROM unnest(%(ids)s::bigint[], %(claims)s::int[])) "
    f"AND status = {SENDING}"))


def release(held: list[tuple[int, int]], *, reason: str, delay_s: float = 0.0) -> int:
    """Give claimed (email id, claim number) emails back before their SMTP conversation began (the worker is
    stopping, Redis failed under the cap check, their relay failed for an email before them or their
    sender has its sends in flight already); no attempt is used. They are handed over again in `delay_s`."""
    cursor = database.execute_sql(_RELEASE, {
        "ids": [h[0] for h in held], "claims": [h[1] for h in held], "delay_s": delay_s, "kind": "released",
        "detail": Json({"reason": reason})})
    return len(cursor.fetchall())
