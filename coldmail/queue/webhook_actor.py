"""The webhook actor, on a queue of its own (QUEUE_NAME.webhooks) and below the send actor in priority: a
worker thread free to take either takes an email first."""

from __future__ import annotations

import random

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from ..delivery.retry import DRAMATIQ_MAX_RETRIES
from ..settings import Settings
from ..webhooks.delivery import LEASE_S, Outcome, WebhookDeliverer
from .sending import SENDS

ACTOR_NAME = "deliver_webhook"
#: Dramatiq runs the lowest value first; the send actor has 0
PRIORITY = 100
#: when every webhook slot of the process is taken, the delivery is put back for between these (ms), at random:
#: messages put back together must not come back together, or most find the slots taken again (a batch of
#: 100 takes a tenth of a second; after a drain, the deliveries went at ~500/s through slots mostly free)
BUSY_DELAY_MS = (250, 1000)


def webhook_queue_name(settings: Settings) -> str:
    return f"{settings.queue_name}.webhooks"


class _CloseThreads(dramatiq.Middleware):
    """A worker thread's Poster (its aiohttp session and loop) is closed by the thread as it stops."""

    def __init__(self, deliverer: WebhookDeliverer) -> None:
        self.deliverer = deliverer

    def before_worker_thread_shutdown(self, broker, thread) -> None:
        self.deliverer.close_thread()


def declare_webhook_actor(broker: RedisBroker, settings: Settings) -> dramatiq.Actor:
    """Declare `deliver_webhook(delivery_ids)`: a list of ids, claimed and posted by one thread. A message lost
    with its worker or its Redis loses nothing: the delivery's row is handed over again
    (coldmail.webhooks.handover)."""
    deliverer = WebhookDeliverer(settings, give_way=SENDS.wait_idle)
    broker.add_middleware(_CloseThreads(deliverer))

    def deliver_webhook(delivery_ids: int | list[int]) -> None:
        ids = [delivery_ids] if isinstance(delivery_ids, int) else list(delivery_ids)  # one id: an older message
        outcomes = deliverer.deliver_many(ids)
        busy = [i for i in ids if outcomes.get(i) is Outcome.BUSY]
        if busy:
            actor.send_with_options(args=(busy,), delay=random.randint(*BUSY_DELAY_MS))

    actor = dramatiq.actor(deliver_webhook, broker=broker, actor_name=ACTOR_NAME,
                           queue_name=webhook_queue_name(settings), priority=PRIORITY,
                           max_retries=DRAMATIQ_MAX_RETRIES, time_limit=int((LEASE_S + 30) * 1000))
    return actor

