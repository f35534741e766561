"""Broker + send and webhook actors + worker middleware, built the same way in every process."""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from ..caps import Caps
from ..db import database
from ..db.emails import handover as handover_rows
from ..settings import Settings
from .actors import declare_send_actor
from .broker import build_broker
from .handover import HandOver
from .metrics_middleware import MetricsMiddleware
from .middleware import DeliveryMiddleware
from .webhook_actor import declare_webhook_actor


@dataclass
class Queue:
    broker: RedisBroker
    actor: dramatiq.Actor
    handover: HandOver
    webhook_actor: dramatiq.Actor


def _back_to_scheduler(email_ids: list[int], later: list[tuple]) -> None:
    """Emails requests stored that were not handed over (Redis refused, or their slot is not near), and
    those over their sender's cap ((id, ms)) or moved by its pacing ((id, ms, reason, instant)), moved to when they may
    go: the scheduler hands them over later."""
    with database.connection_context():
        handover_rows.unqueue(email_ids)
        handover_rows.hold_back([(item[0], item[1]) for item in later],
                                {item[0]: item[2] for item in later if len(item) > 2},
                                {item[0]: item[3] for item in later if len(item) > 3})


def build_queue(settings: Settings, *, redis_timeout_s: float = 2.0) -> Queue:
    """A send actor's limit must cover a send that times out at every step, then some."""
    broker = build_broker(settings, timeout_s=redis_timeout_s,
                          extra_middleware=[DeliveryMiddleware(settings), MetricsMiddleware(settings)])
    time_limit_ms = int((settings.lease_s + 60) * 1000)
    actor = declare_send_actor(
        broker, queue_name=settings.queue_name, horizon_s=settings.handover_horizon_s, time_limit_ms=time_limit_ms)
    handover = HandOver(actor, caps=Caps(settings, broker.client), lead_ms=settings.handover_lead_ms,
                        batch=settings.send_batch, spread_ms=settings.send_batch_spread_ms, back_to_scheduler=_back_to_scheduler)
    return Queue(broker=broker, actor=actor, handover=handover, webhook_actor=declare_webhook_actor(broker, settings))
