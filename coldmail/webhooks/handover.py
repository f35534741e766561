"""The scheduler's webhook job: hand the due deliveries to the webhook actor, oldest first.

A delivery handed over is marked for REQUEUE_AFTER_SECONDS; one still pending
and unclaimed after that (Redis lost its message, or was flushed) is handed over
again, and one whose claim ran out (its worker died mid-post) too. Dramatiq is
how a delivery reaches a worker quickly, never where it is kept.
"""

from __future__ import annotations

import logging

import dramatiq
import redis

from ..db import database
from ..db import webhooks as rows
from ..settings import Settings

log = logging.getLogger(__name__)

#: deliveries one run hands over at most
BATCH = 1000
#: deliveries in one Dramatiq message at most (one claim statement, one record statement): few messages, so
#: that few come back while every webhook slot is taken, yet a batch's posts end well within its lease when
#: the receiver answers promptly (a few ms each on a kept connection)
PER_MESSAGE = 100


class WebhookHandOver:
    def __init__(self, settings: Settings, actor: dramatiq.Actor) -> None:
        self.settings = settings
        self.actor = actor

    def run(self) -> int:
        with database.connection_context():
            due = rows.take_due(limit=BATCH, requeue_s=self.settings.requeue_after_s)
        handed = 0
        try:
            for start in range(0, len(due), PER_MESSAGE):
                chunk = due[start:start + PER_MESSAGE]
                self.actor.send(chunk)
                handed += len(chunk)
        except redis.RedisError as e:
            # the rest is handed over again once their mark runs out
            log.warning("Redis unreachable (%s); %d webhook deliveries wait", e, len(due) - handed)
        return handed
