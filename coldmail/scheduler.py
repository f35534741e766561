"""APScheduler jobs of the API process: hand over emails as they come due, and recover lost ones; hand over
webhook deliveries (coldmail.webhooks.handover); start polls of senders' mailboxes (coldmail.mailbox).

Several API processes may run these at once: the hand-over takes rows with
SKIP LOCKED and every sweep is a compare-and-set, so each email is handed
over once per round however many schedulers run.
"""

from __future__ import annotations

import logging
import time

import redis
from apscheduler.schedulers.background import BackgroundScheduler

from . import metrics
from .db import database
from .db.emails import handover as handover_rows, recovery as recovery_rows
from .delivery.liveness import Liveness
from .delivery.retry import RetryPolicy
from .mailbox.poller import MailboxPoller
from .queue.handover import HandOver
from .queue.recovery import QueueRecovery
from .settings import Settings
from .webhooks.handover import WebhookHandOver

log = logging.getLogger(__name__)

#: batches one hand-over run takes at most, so a huge backlog cannot starve the sweep
MAX_BATCHES_PER_RUN = 10


class Jobs:
    def __init__(self, settings: Settings, handover: HandOver, recovery: QueueRecovery,
                 liveness: Liveness | None = None) -> None:
        self.settings = settings
        self.handover = handover
        self.recovery = recovery
        self.liveness = liveness
        #: since when this process has reached Redis on every sweep (monotonic); None while it did not
        self._redis_up_since: float | None = None

    def hand_over_due(self) -> int:
        """Give Dramatiq every email due within the horizon, in due order, with its exact delay."""
        handed = 0
        try:
            if self.recovery.redis_forgot():
                with database.connection_context():
                    lost = recovery_rows.requeue_all_queued()
                self.recovery.remember()
                if lost:
                    log.warning("Redis came back empty: handing over %d queued email(s) again", lost)
        except redis.RedisError as e:
            log.warning("Redis unreachable (%s); hand-over waits", e)
            return 0
        for _ in range(MAX_BATCHES_PER_RUN):
            taken_at = time.monotonic()  # the delays count from here (planning may rebuild caps meanwhile)
            with database.connection_context():
                dealt, batch = handover_rows.take_due(horizon_s=self.settings.handover_horizon_s,
                                                      limit=self.settings.handover_batch,
                                                      plan=self.handover.caps.plan)
            failed = self.handover.send(batch, probe=True, since=taken_at) if batch else []
            if failed:
                with database.connection_context():
                    handover_rows.unqueue(failed)
            handed += len(batch) - len(failed)
            if failed or dealt < self.settings.handover_batch:
                break
        if handed:
            log.debug("handed %d email(s) to Dramatiq", handed)
        return handed

    def sweep(self) -> None:
        """Take back claims whose worker died, and hand over again what Redis or a worker lost."""
        dead = self._dead_workers()
        with database.connection_context():
            expired = recovery_rows.expire_leases(max_attempts=RetryPolicy.from_settings(self.settings).max_attempts,
                                                  dead_workers=dead)
        if dead:
            log.warning("worker(s) %s silent for %.0fs: their leases end now", ", ".join(dead),
                        self.settings.dead_worker_s)
        for email_id, status in expired:
            if status == "FAILED":
                metrics.FAILED.inc()
                log.error("email %r: lease expired (its worker stopped mid-send) on its last attempt; FAILED",
                          email_id)
            else:
                log.warning("email %r: lease expired (its worker stopped mid-send); back to PENDING", email_id)
        try:
            self.recovery.requeue_from_dead_workers()
            waiting = self.recovery.waiting()
        except redis.RedisError as e:
            log.warning("Redis unreachable (%s); recovery sweep waits", e)
            return
        if waiting:
            # Emails late because the queue is long are not lost: handing them over again would
            # only lengthen it. What a dead worker held is back already; the rest waits its turn.
            return
        with database.connection_context():
            stale = recovery_rows.requeue_stale(after_s=self.settings.requeue_after_s)
        if stale:
            log.warning("%d handed-over email(s) not sent %.0fs after their time: handing over again",
                        stale, self.settings.requeue_after_s)

    def _dead_workers(self) -> list[str]:
        """The lease holders known dead (coldmail.queue.liveness). None while Redis has not been reachable for
        DEAD_WORKER_SECONDS in a row: a live worker could not beat while it was not, and must not be taken
        for dead for that."""
        if self.liveness is None:
            return []
        try:
            with database.connection_context():
                holders = recovery_rows.lease_holders()
            dead = self.liveness.dead(holders)
        except redis.RedisError:
            self._redis_up_since = None
            return []
        now = time.monotonic()
        if self._redis_up_since is None:
            self._redis_up_since = now
        return dead if now - self._redis_up_since >= self.settings.dead_worker_s else []


def _guarded(job, name: str):
    def run():
        try:
            job()
        except Exception:
            log.exception("scheduler job %s failed; it runs again at its next interval", name)
    run.__name__ = name
    return run


#: how often the poller looks for due mailboxes at most (each is due every IMAP_POLL_SECONDS)
MAILBOX_TICK_S = 1.0


def start_scheduler(settings: Settings, handover: HandOver, webhooks: WebhookHandOver,
                    mailboxes: MailboxPoller | None = None) -> BackgroundScheduler:
    recovery = QueueRecovery(handover.broker, queue_name=settings.queue_name, dead_worker_s=settings.dead_worker_s)
    liveness = Liveness(handover.broker.client, dead_worker_s=settings.dead_worker_s,
                        forget_after_s=2 * max(settings.lease_s, settings.dead_worker_s))
    jobs = Jobs(settings, handover, recovery, liveness)
    # Once before the API takes requests: otherwise a request's hand-over into a fresh Redis could come
    # before the first check that Redis forgot, which would then hand that email over a second time.
    _guarded(jobs.hand_over_due, "hand_over_due")()
    scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
    scheduler.add_job(_guarded(jobs.hand_over_due, "hand_over_due"), "interval",
                      seconds=settings.handover_interval_s, id="hand_over_due")
    scheduler.add_job(_guarded(jobs.sweep, "sweep"), "interval", seconds=settings.sweep_interval_s, id="sweep")
    scheduler.add_job(_guarded(webhooks.run, "hand_over_webhooks"), "interval",
                      seconds=settings.handover_interval_s, id="hand_over_webhooks")
    if mailboxes is not None:
        # the job only claims due mailboxes and starts their polls on the poller's threads: a slow
        # mailbox never holds the scheduler, nor the other mailboxes
        scheduler.add_job(_guarded(mailboxes.tick, "poll_mailboxes"), "interval",
                          seconds=min(settings.imap_poll_s, MAILBOX_TICK_S), id="poll_mailboxes")
    scheduler.start()
    return scheduler
