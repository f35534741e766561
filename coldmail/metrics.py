"""Prometheus metrics: every metric coldmail defines, and what GET /metrics shows.

The HTTP figures are counted by api/metrics_middleware.py, the sends' by
queue/metrics_middleware.py (in the process that sent them), the others where
they happen; no module but this one defines a metric.

One process (`python run.py`) keeps its figures in memory. With several
(`python run.py api` and `dramatiq coldmail.worker --processes N`), each
process writes its figures to files in PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode) and the API's /metrics adds them up.
The emails waiting and under way are counted in PostgreSQL at scrape time:
the truth for every process and host.
"""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from .db import database
from .db.emails.reads import count_live
from .db.mailboxes import count_by_status as count_mailboxes
from .db.webhooks import oldest_pending_age_s
from .errors import ConfigError
from .settings import Settings
from .status import EmailStatus

log = logging.getLogger(__name__)

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LATE_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)

# -- the API's figures
ACCEPTED = Counter("coldmail_emails_accepted", "Emails stored by the schedule and batch endpoints "
                   "(a replayed idempotency key is not counted again)")
CANCELLED = Counter("coldmail_emails_cancelled", "Emails cancelled with POST /emails/{id}/cancel")
UNSUBSCRIBES = Counter("coldmail_unsubscribes", "Emails whose recipient unsubscribed with their one-click "
                       "link (POST /u/{token}), each counted once")
RESCHEDULED = Counter("coldmail_emails_rescheduled", "Emails moved with PATCH /emails/{id}")
HTTP_REQUESTS = Counter("coldmail_http_requests", "HTTP requests answered, by route and status",
                        ["method", "route", "status"])
HTTP_SECONDS = Histogram("coldmail_http_request_duration_seconds", "Time to answer an HTTP request",
                         ["method", "route"], buckets=_SECONDS)

# -- the workers' figures
SENT = Counter("coldmail_emails_sent", "Emails the SMTP relay accepted (or written to the outbox)")
FAILED = Counter("coldmail_emails_failed", "Emails failed for good: an SMTP 5xx, or their last attempt used up")
RETRIED = Counter("coldmail_send_retries", "Send attempts that failed (SMTP 4xx, connection) and will be retried")
RATE_LIMITED = Counter("coldmail_emails_rate_limited", "Emails moved to later because their sender was at its "
                       "cap: by the hand-over's plan (API process) or the worker's check before a send")
MOVED = Counter("coldmail_emails_moved", "Emails moved to later without an attempt, by reason: window (outside "
                "their sender's sending window), daily_limit, hourly_limit, gap (between the sender's sends), "
                "paused", ["reason"])
HELD = Counter("coldmail_emails_held", "Claimed emails held back PENDING without an attempt, by reason "
               "(secret_unreadable: no key of COLDMAIL_SECRET_KEY opens their sender's stored password)", ["reason"])
SEND_SECONDS = Histogram("coldmail_send_duration_seconds", "One SMTP transaction (or outbox write)",
                         buckets=_SECONDS)
LATENESS = Histogram("coldmail_send_lateness_seconds", "Time an email was sent minus its scheduledAt",
                     buckets=_LATE_SECONDS)
BOUNCES = Counter("coldmail_hard_bounces", "Emails failed by a hard bounce (RCPT TO refused: no such mailbox or "
                  "domain), their address suppressed")
PAUSES = Counter("coldmail_sender_pauses", "Senders paused because their hard-bounce rate passed maxBounceRate")

# -- the suppression list's figures (any process)
SUPPRESSIONS = Counter("coldmail_suppressions", "Addresses put on a suppression list, by reason", ["reason"])
SUPPRESSED = Counter("coldmail_emails_suppressed", "Emails stopped because their address is suppressed, by where "
                     "(accepted: at acceptance; listed: PENDING when the address was listed; claim: at the claim)",
                     ["at"])
INBOUND = Counter("coldmail_inbound_messages", "Inbound messages read (POST /inbound, mailbox polling), by kind "
                  "(bounce, complaint, auto_reply, reply, unmatched; duplicate: seen before, nothing changed)",
                  ["kind"])
REPLY_CANCELLED = Counter("coldmail_emails_cancelled_by_reply", "PENDING emails of a sequence cancelled because "
                          "their recipient replied")
MESSAGES = Counter("coldmail_worker_messages", "Emails a worker dealt with, by what came of each (sent, failed, "
                   "retry, rate_limited, released, held, skipped, not_yet), and messages that raised (error)",
                   ["outcome"])

# -- the mailbox poller's figures (the API process)
MAILBOX_POLLS = Counter("coldmail_mailbox_polls", "Polls of senders' mailboxes (imapUrl), by what came of each "
                        "(ok, login_failed: the server refused the user and password, failed: anything else)",
                        ["outcome"])
for _outcome in ("ok", "login_failed", "failed"):
    MAILBOX_POLLS.labels(_outcome)
MAILBOX_MESSAGES = Counter("coldmail_mailbox_messages", "Messages read from senders' mailboxes and handed to the "
                           "inbound classifier")

WEBHOOK_DELIVERIES = Counter("coldmail_webhook_deliveries", "Webhook delivery attempts, by what came of each "
                             "(delivered, retry: will be tried again, failed: its retries are used up)", ["outcome"])
for _outcome in ("delivered", "retry", "failed"):
    WEBHOOK_DELIVERIES.labels(_outcome)  # every outcome shows, at 0, before it first happens


def multiprocess_mode() -> bool:
    """Whether this process writes its figures to PROMETHEUS_MULTIPROC_DIR (decided when
    prometheus_client was imported, from the process environment)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def check_mode(settings: Settings) -> None:
    """Refuse a directory set in `.env` only: prometheus_client reads the process environment at import."""
    if settings.metrics_dir and not multiprocess_mode():
        raise ConfigError("PROMETHEUS_MULTIPROC_DIR is set in .env only; prometheus_client reads it from the "
                          "process environment when it is imported: export it (or set it in supervisord.conf)")


class _ThisProcess:
    """The default registry's figures (this process's metrics, process and GC stats)."""

    def collect(self):
        return REGISTRY.collect()


class LiveEmails:
    """`coldmail_emails{status="PENDING"|"SENDING"}`: counted at scrape time, so it holds across processes
    and restarts. Finished emails are not counted here (their number only grows, and counting it would
    cost a scan of the whole history): their counters say how many finish."""

    LIVE = (EmailStatus.PENDING.value, EmailStatus.SENDING.value)

    def collect(self):
        try:
            with database.connection_context():
                counts = count_live()
        except Exception as e:  # a scrape reports what it can; a failed count is left out, not shown as 0
            log.warning("metrics: counting the emails waiting and under way failed: %s", e)
            return
        family = GaugeMetricFamily("coldmail_emails", "Emails waiting (PENDING) and being sent (SENDING), "
                                   "counted in PostgreSQL", labels=["status"])
        for status in self.LIVE:
            family.add_metric([status], counts.get(status, 0))
        yield family


class OldestWebhookEvent:
    """`coldmail_webhook_oldest_pending_seconds`: the age of the oldest event not yet delivered to an endpoint
    (0 when none waits), from PostgreSQL at scrape time. A receiver down for long shows here."""

    def collect(self):
        try:
            with database.connection_context():
                age = oldest_pending_age_s()
        except Exception as e:  # as LiveEmails: left out, not shown as 0
            log.warning("metrics: finding the oldest undelivered webhook event failed: %s", e)
            return
        yield GaugeMetricFamily("coldmail_webhook_oldest_pending_seconds", "Age of the oldest webhook event "
                                "not yet delivered (0: none waits)", value=age or 0.0)


class Mailboxes:
    """`coldmail_mailboxes{state="ok"|"failing"|"never"}`: senders' mailboxes by polling state, counted in
    PostgreSQL at scrape time (a mailbox failing in any process shows)."""

    STATES = ("ok", "failing", "never")

    def collect(self):
        try:
            with database.connection_context():
                counts = count_mailboxes()
        except Exception as e:  # as LiveEmails: left out, not shown as 0
            log.warning("metrics: counting mailboxes by state failed: %s", e)
            return
        family = GaugeMetricFamily("coldmail_mailboxes", "Senders' mailboxes by polling state (failing: the last "
                                   "poll failed, e.g. a refused login)", labels=["state"])
        for state in self.STATES:
            family.add_metric([state], counts.get(state, 0))
        yield family


def scrape_registry(settings: Settings) -> CollectorRegistry:
    """What /metrics shows: this process's figures, or all processes' in multiprocess mode, and the counts."""
    check_mode(settings)
    registry = CollectorRegistry()
    if settings.metrics_dir:
        multiprocess.MultiProcessCollector(registry, path=settings.metrics_dir)
    else:
        registry.register(_ThisProcess())
    registry.register(LiveEmails())
    registry.register(OldestWebhookEvent())
    registry.register(Mailboxes())
    return registry


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition (blocking: it counts in PostgreSQL) and its content type, as Accept asks."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
