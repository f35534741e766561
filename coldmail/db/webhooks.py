"""Webhook endpoints and their deliveries: the API's statements, the hand-over's, and a worker's.

A delivery is written by the email statement that reports its event
(coldmail.db.outbox). The scheduler hands the due ones to Dramatiq (`take_due`,
marking them `queued_until` so that the next run does not hand them again, but
one whose message Redis lost is handed again after it); a worker thread claims
one (`claim`: a lease, and a claim number that fences its outcome, as emails do),
posts it, and records what came of it. A worker killed mid-post leaves a lease
that runs out: the delivery is handed over again. Nothing is lost; a delivery may
arrive twice, with the same msg_id (`webhook-id`) for the receiver to dedupe.
"""

from __future__ import annotations

from typing import Any

from .connection import database
from .rows import dicts, one

_COLUMNS = "id, url, events, created_at"


def create(account: str, *, url: str, events: list[str], secret_enc: str) -> dict[str, Any]:
    return one(database.execute_sql(
        f"INSERT INTO webhooks (account, url, events, secret_enc) VALUES (%s, %s, %s, %s) RETURNING {_COLUMNS}",
        (account, url, events, secret_enc)))


def list_for(account: str) -> list[dict[str, Any]]:
    return dicts(database.execute_sql(f"SELECT {_COLUMNS} FROM webhooks WHERE account = %s ORDER BY id",
                                      (account,)))


def get(account: str, webhook_id: int) -> dict[str, Any] | None:
    """The account's endpoint with its sealed secret; None if it has no such endpoint."""
    return one(database.execute_sql(f"SELECT {_COLUMNS}, secret_enc FROM webhooks WHERE account = %s AND id = %s",
                                    (account, webhook_id)))


def delete(account: str, webhook_id: int) -> bool:
    """Remove the endpoint and its deliveries, delivered or not (it is not there to take them)."""
    return database.execute_sql("DELETE FROM webhooks WHERE account = %s AND id = %s",
                                (account, webhook_id)).rowcount == 1


def deliveries(account: str, webhook_id: int, *, limit: int) -> list[dict[str, Any]]:
    """The endpoint's latest deliveries first."""
    return dicts(database.execute_sql(
        "SELECT id, event_type, msg_id, status, attempts, last_status_code, last_error, created_at, "
        "delivered_at, CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at "
        "FROM webhook_deliveries WHERE account = %s AND webhook_id = %s ORDER BY id DESC LIMIT %s",
        (account, webhook_id, limit)))


_TAKE_DUE = """
UPDATE webhook_deliveries d SET queued_until = now() + %(requeue_s)s * interval '1 second'
FROM (
    SELECT account, id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
      AND (queued_until IS NULL OR queued_until < now()) AND (lease_until IS NULL OR lease_until < now())
    ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
) due
WHERE d.account = due.account AND d.id = due.id
RETURNING d.id
"""


def take_due(*, limit: int, requeue_s: float) -> list[int]:
    """The ids of deliveries due and neither handed over nor claimed, oldest first, now marked handed over
    for `requeue_s` (after which one still pending is handed over again: Redis or a worker lost it)."""
    rows = database.execute_sql(_TAKE_DUE, {"limit": limit, "requeue_s": requeue_s}).fetchall()
    return sorted(delivery_id for (delivery_id,) in rows)


def forget_handed_over() -> int:
    """Redis came back empty: every handed-over delivery must be handed over again."""
    return database.execute_sql("UPDATE webhook_deliveries SET queued_until = NULL "
                                "WHERE status = 'pending' AND queued_until IS NOT NULL").rowcount


_CLAIM = """
UPDATE webhook_deliveries d
SET lease_until = now() + %(lease_s)s * interval '1 second', claims = d.claims + 1, queued_until = NULL
FROM webhooks w
WHERE d.id = %(id)s AND d.status = 'pending' AND d.next_attempt_at <= now()
  AND (d.lease_until IS NULL OR d.lease_until < now())
  AND w.account = d.account AND w.id = d.webhook_id
RETURNING d.id, d.account, d.webhook_id, d.event_type, d.msg_id, d.payload, d.attempts, d.claims, d.created_at,
          w.url, w.secret_enc
"""


def claim(delivery_id: int, *, lease_s: float) -> dict[str, Any] | None:
    """Take a due delivery for posting, with its endpoint's URL and sealed secret; None if it is not due,
    done, or claimed by another thread whose lease still runs."""
    return one(database.execute_sql(_CLAIM, {"id": delivery_id, "lease_s": lease_s}))


_CLAIM_MANY = _CLAIM.replace("d.id = %(id)s", "d.id = ANY(%(ids)s::bigint[])")


def claim_many(delivery_ids: list[int], *, lease_s: float) -> list[dict[str, Any]]:
    """`claim` for many in one statement: those of `delivery_ids` that are due and not claimed, oldest
    first."""
    rows = dicts(database.execute_sql(_CLAIM_MANY, {"ids": list(delivery_ids), "lease_s": lease_s}))
    return sorted(rows, key=lambda row: row["id"])


_DELIVERED_MANY = """
UPDATE webhook_deliveries d SET status = 'delivered', attempts = d.attempts + 1, delivered_at = now(),
    last_status_code = done.code, last_error = NULL, lease_until = NULL
FROM unnest(%(ids)s::bigint[], %(claims)s::int[], %(codes)s::int[]) AS done(id, claim, code)
WHERE d.id = done.id AND d.status = 'pending' AND d.claims = done.claim
RETURNING d.id
"""


def delivered_many(done: list[tuple[int, int, int]]) -> set[int]:
    """`delivered` for many (id, claim, code) in one statement: the ids recorded (a claim taken back
    meanwhile is not)."""
    if not done:
        return set()
    ids, claims, codes = (list(column) for column in zip(*done))
    rows = database.execute_sql(_DELIVERED_MANY, {"ids": ids, "claims": claims, "codes": codes}).fetchall()
    return {delivery_id for (delivery_id,) in rows}


def release(claimed: list[tuple[int, int]]) -> int:
    """Give back (id, claim) claims not attempted: unclaimed, handed over again by the next run."""
    if not claimed:
        return 0
    ids, claims = (list(column) for column in zip(*claimed))
    return database.execute_sql(
        "UPDATE webhook_deliveries SET lease_until = NULL "
        "WHERE (id, claims) IN (SELECT * FROM unnest(%(ids)s::bigint[], %(claims)s::int[])) "
        "AND status = 'pending'", {"ids": ids, "claims": claims}).rowcount


_DELIVERED = """
UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = now(),
    last_status_code = %(code)s, last_error = NULL, lease_until = NULL
WHERE id = %(id)s AND status = 'pending' AND claims = %(claim)s
"""


def delivered(delivery_id: int, *, claim: int, code: int) -> bool:
    return database.execute_sql(_DELIVERED, {"id": delivery_id, "claim": claim, "code": code}).rowcount == 1


_ATTEMPT_FAILED = """
UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = %(code)s, last_error = %(error)s,
    lease_until = NULL, next_attempt_at = now() + %(delay_s)s * interval '1 second',
    status = CASE WHEN now() >= created_at + %(window_s)s * interval '1 second' THEN 'failed' ELSE 'pending' END
WHERE id = %(id)s AND status = 'pending' AND claims = %(claim)s
RETURNING status
"""


def attempt_failed(delivery_id: int, *, claim: int, code: int | None, error: str, delay_s: float,
                   window_s: float) -> str | None:
    """Record a failed attempt: tried again in `delay_s`, or `failed` once it was made `window_s` or more
    after the event. The new status; None if the claim was taken back meanwhile."""
    row = database.execute_sql(_ATTEMPT_FAILED, {"id": delivery_id, "claim": claim, "code": code, "error": error,
                                                 "delay_s": delay_s, "window_s": window_s}).fetchone()
    return row[0] if row else None


def oldest_pending_age_s() -> float | None:
    """Seconds since the oldest undelivered event was written; None when every one is done."""
    row = database.execute_sql(
        "SELECT extract(epoch FROM now() - created_at)::float FROM webhook_deliveries "
        "WHERE status = 'pending' ORDER BY id LIMIT 1").fetchone()
    return row[0] if row else None


def sealed_secrets(*, for_update: bool = False) -> list[tuple[str, int, str]]:
    """(account, webhook id, sealed secret) of every endpoint: what rotate-secrets re-seals."""
    sql = "SELECT account, id, secret_enc FROM webhooks ORDER BY account, id" + (" FOR UPDATE" if for_update else "")
    return database.execute_sql(sql).fetchall()


def replace_sealed(account: str, webhook_id: int, *, old: str, new: str) -> bool:
    """Compare-and-set: only if the secret is still `old`."""
    return database.execute_sql(
        "UPDATE webhooks SET secret_enc = %(new)s WHERE account = %(account)s AND id = %(id)s "
        "AND secret_enc = %(old)s", {"account": account, "id": webhook_id, "old": old, "new": new}).rowcount == 1
