"""The send actor: thin; it asks the process's Deliverer to send the email ids of one message."""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from ..delivery.deliverer import Deliverer
from ..delivery.outcomes import Outcome, Result
from ..delivery.retry import DRAMATIQ_MAX_RETRIES
from .sending import SENDS

log = logging.getLogger(__name__)

ACTOR_NAME = "send_email"

#: set at process boot by coldmail.queue.middleware.DeliveryMiddleware
_deliverer: dict[str, Deliverer] = {}
#: the outcomes of the message this worker thread just ran. Actors must return None (a return value
#: without Dramatiq's Results middleware is logged as a warning), so middleware reads them here.
_last = threading.local()


def last_outcomes() -> list[tuple[int, Outcome]]:
    """In after_process_message: (email id, outcome) for each email the send actor just dealt with in this
    thread (those it came to before an exception, if it raised)."""
    return getattr(_last, "outcomes", [])


def install_deliverer(deliverer: Deliverer | None) -> None:
    if deliverer is None:
        _deliverer.pop("current", None)
    else:
        _deliverer["current"] = deliverer


def declare_send_actor(broker: RedisBroker, *, queue_name: str, horizon_s: float,
                       time_limit_ms: int) -> dramatiq.Actor:
    """Declare `send_email(*email_ids)` on `broker`, without Dramatiq's retries (see coldmail.delivery.retry)."""

    def send_email(*email_ids: int) -> None:
        _last.outcomes = outcomes = []
        deliverer = _deliverer.get("current")
        if deliverer is None:
            raise RuntimeError("no Deliverer in this process: was process_boot emitted?")
        with SENDS.sending():  # webhook deliveries of this process wait for none to be in flight
            deliverer.deliver_many(list(email_ids), outcomes)
        for email_id, outcome in outcomes:
            if outcome.result is Result.NOT_YET and outcome.due_in_s <= horizon_s:
                actor.send_with_options(args=(email_id,), delay=max(1, int(outcome.due_in_s * 1000)))

    actor = dramatiq.actor(
        send_email, broker=broker, actor_name=ACTOR_NAME, queue_name=queue_name, max_retries=DRAMATIQ_MAX_RETRIES,
        time_limit=time_limit_ms)
    return actor
