"""The Dramatiq middleware that counts what each send came to (coldmail.metrics), in the process that sent it."""

from __future__ import annotations

import dramatiq

from .. import metrics
from ..delivery.outcomes import Result
from ..delivery.retry import Hold
from ..settings import Settings
from .actors import ACTOR_NAME, last_outcomes

ERROR = "error"


class MetricsMiddleware(dramatiq.Middleware):
    """Counts sends by outcome and times them. Under the dramatiq CLI each worker process writes
    its own figures to PROMETHEUS_MULTIPROC_DIR, and the API's /metrics adds them up."""

    def __init__(self, settings: Settings) -> None:
        metrics.check_mode(settings)
        for outcome in [*(r.value for r in Result), ERROR]:
            metrics.MESSAGES.labels(outcome)  # every outcome shows, at 0, before it first happens
        for reason in Hold:
            metrics.HELD.labels(reason.value)

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        if message.actor_name != ACTOR_NAME:
            return
        if exception is not None:
            metrics.MESSAGES.labels(ERROR).inc()
        for _, outcome in last_outcomes():
            self._count(outcome)

    @staticmethod
    def _count(outcome) -> None:
        metrics.MESSAGES.labels(outcome.result.value).inc()
        if outcome.result is Result.SENT:
            metrics.SENT.inc()
            if outcome.send_s is not None:
                metrics.SEND_SECONDS.observe(outcome.send_s)
            if outcome.late_s is not None:
                metrics.LATENESS.observe(max(0.0, outcome.late_s))
        elif outcome.result is Result.FAILED:
            metrics.FAILED.inc()
        elif outcome.result is Result.RETRY:
            metrics.RETRIED.inc()
        elif outcome.result is Result.RATE_LIMITED:
            metrics.RATE_LIMITED.inc()
            metrics.MOVED.labels("hourly_limit").inc()
        elif outcome.result is Result.MOVED:
            metrics.MOVED.labels(outcome.reason).inc()
        elif outcome.result is Result.HELD:
            metrics.HELD.labels(outcome.reason).inc()
