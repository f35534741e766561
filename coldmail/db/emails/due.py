"""When an email is due, as SQL fragments: the one place every statement that places an email in time asks.

An email asked for a time is due then, or now if that has passed (`due_at`): the
INSERT of new emails, reschedule, a cap's pull-forward and a release all apply
it, so a rule on sending times (windows, pacing) extends `due_at` alone. Moves
by a delay from now (a retry's backoff, a cap's wait) ask for no time and do not
go through it.
"""

from __future__ import annotations


def due_at(asked: str, *, earliest: str = "now()") -> str:
    """When an email asked for at `asked` (an SQL expression) is due: then, or `earliest` if that is later."""
    return f"greatest({asked}, {earliest})"


def queued_if_near(due: str) -> str:
    """The hand-over mark of an email due at `due`: now() when that is within the statement's `%(horizon_s)s`
    (its request hands it over), else NULL (the scheduler will when it comes near)."""
    return f"CASE WHEN {due} <= now() + %(horizon_s)s * interval '1 second' THEN now() END"


def delay_ms(due: str) -> str:
    """Milliseconds from now until `due`, 0 once it has passed: the Dramatiq delay of its hand-over."""
    return f"greatest(0, (extract(epoch FROM {due} - now()) * 1000))::bigint"


#: when a paused sender's email, moved out of the way, is looked at again if nothing resumes it first (resuming
#: the sender brings its emails back at once: coldmail.db.emails.handover.resume_paused); a safety net, not a
#: schedule
PAUSED_UNTIL = "now() + interval '1 day'"

#: whether email `e` is one a pause moved out of the way: its last event is the `deferred` (reason `paused`) that
#: moved it. Resuming brings those back; placing a paused sender's emails again leaves them
HELD_BY_PAUSE = """(SELECT v.kind || ':' || coalesce(v.detail->>'reason', '') FROM email_events v
       WHERE v.email_id = e.id ORDER BY v.id DESC LIMIT 1) IS NOT DISTINCT FROM 'deferred:paused'"""

#: the event kind of a move without an attempt, for a reason (an SQL text expression): `rate_limited` for the
#: hourly cap (as it always was), `deferred` for the rest (window, daily_limit, gap, paused); the detail names
#: the reason and the new time
MOVE_KIND = "CASE WHEN {reason} = 'hourly_limit' THEN 'rate_limited' ELSE 'deferred' END"
