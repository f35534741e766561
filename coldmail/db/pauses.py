"""A sender's pause and its bounce rate: the share of hard bounces among its last sends.

A send here is an email its sender got to the recipient's server with an answer
about the recipient: SENT (`sent_at`), or refused as nonexistent (`bounced_at`,
with no `sent_at`); an email sent and reported bounced later has both. The rate
is read from the two partial indexes on those columns, so no index is added to
the path of every send.
"""

from __future__ import annotations

from .connection import database

#: the sends the rate looks at, and how many it needs before it may pause a sender
RECENT_SENDS = 100
MIN_SENDS = 20

_RECENT = """
SELECT count(*) FILTER (WHERE bounced) AS bounces, count(*) AS sends FROM (
    SELECT * FROM (
        (SELECT sent_at AS at, bounced_at IS NOT NULL AS bounced FROM emails
         WHERE account = %(account)s AND sender_id = %(sender)s AND sent_at IS NOT NULL
         ORDER BY sent_at DESC LIMIT %(n)s)
        UNION ALL
        (SELECT bounced_at, true FROM emails
         WHERE account = %(account)s AND sender_id = %(sender)s AND bounced_at IS NOT NULL AND sent_at IS NULL
         ORDER BY bounced_at DESC LIMIT %(n)s)
    ) u ORDER BY at DESC LIMIT %(n)s
) recent
"""


def bounce_counts(account: str, sender_id: str) -> tuple[int, int]:
    """(hard bounces, sends) among the account's sender's last RECENT_SENDS sends."""
    row = database.execute_sql(_RECENT, {"account": account, "sender": sender_id, "n": RECENT_SENDS}).fetchone()
    return int(row[0]), int(row[1])


_PAUSE_IF_BOUNCING = f"""
WITH recent AS ({_RECENT})
UPDATE senders s SET paused = true, updated_at = now()
FROM recent
WHERE s.account = %(account)s AND s.id = %(sender)s AND NOT s.paused AND s.max_bounce_rate IS NOT NULL
  AND recent.sends >= %(min)s AND recent.bounces > s.max_bounce_rate * recent.sends
RETURNING s.max_bounce_rate, recent.bounces, recent.sends
"""


def pause_if_bouncing(account: str, sender_id: str) -> tuple[float, int, int] | None:
    """Pause the account's sender if its hard bounces among its last sends (MIN_SENDS at least) exceed its
    max_bounce_rate; (max rate, bounces, sends) when this call paused it, else None. One statement: of two
    workers that both see the rate pass, one pauses the sender (the other finds it paused)."""
    row = database.execute_sql(_PAUSE_IF_BOUNCING, {"account": account, "sender": sender_id, "n": RECENT_SENDS,
                                                    "min": MIN_SENDS}).fetchone()
    return (float(row[0]), int(row[1]), int(row[2])) if row is not None else None


_SET = """
WITH before AS (SELECT paused FROM senders WHERE account = %(account)s AND id = %(sender)s FOR UPDATE)
UPDATE senders s SET paused = coalesce(%(paused)s, s.paused),
                     max_bounce_rate = CASE WHEN %(set_rate)s THEN %(rate)s ELSE s.max_bounce_rate END,
                     updated_at = now()
FROM before WHERE s.account = %(account)s AND s.id = %(sender)s
RETURNING before.paused AS was_paused, s.paused
"""


def set_pause(account: str, sender_id: str, *, paused: bool | None, max_bounce_rate: float | None,
              set_rate: bool) -> tuple[bool, bool]:
    """Set the sender's `paused` (None: leave it) and, when `set_rate`, its `max_bounce_rate` (None: off);
    (paused before, paused now). The sender exists (its PUT made it in the same transaction)."""
    row = database.execute_sql(_SET, {"account": account, "sender": sender_id, "paused": paused,
                                      "rate": max_bounce_rate, "set_rate": set_rate}).fetchone()
    return bool(row[0]), bool(row[1])
