"""Builds a worker process's Deliverer from settings: the one place its parts are chosen."""

from __future__ import annotations

import redis

from ..caps import Caps
from ..crypto import PasswordBox
from ..mail.helo import helo_name
from ..mail.transports import OutboxTransport, Relay, SmtpTransport
from ..settings import Settings
from ..unsubscribe.links import links_for
from .deliverer import Deliverer
from .inflight import InFlight
from .liveness import worker_id
from .recorder import Recorder
from .retry import RetryPolicy
from .routing import Router
from .signing import Signer


def build_deliverer(settings: Settings, *, redis_client: redis.Redis, worker: str | None = None) -> Deliverer:
    """A Deliverer for the worker process `worker` (coldmail.delivery.liveness; a new id when None), with SMTP
    and outbox transports, the caps and the sender slots on `redis_client`, and its recorder thread."""
    worker = worker or worker_id()
    caps = Caps(settings, redis_client)
    box = PasswordBox(settings.secret_keys)
    router = Router(
        smtp=SmtpTransport(timeout_s=settings.smtp_timeout_s, idle_s=settings.smtp_idle_s,
                           allow_private=settings.allow_private_networks,
                           local_hostname=helo_name(settings.smtp_helo_name, default_from=settings.default_from)),
        outbox=OutboxTransport(settings.outbox_dir),
        default_relay=Relay.from_url(settings.smtp_url, trusted=True) if settings.smtp_url else None,
        passwords=box)
    inflight = InFlight(redis_client, worker=worker, limit=settings.sender_concurrency, lifetime_s=settings.lease_s,
                        dead_worker_s=settings.dead_worker_s)
    return Deliverer(settings, caps=caps, router=router, signer=Signer(box), recorder=Recorder(caps.mark_done),
                     retry=RetryPolicy.from_settings(settings), links=links_for(settings), worker=worker,
                     inflight=inflight)
