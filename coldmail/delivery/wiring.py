"""Builds a worker process's Deliverer from settings: the one place its parts are chosen."""

from __future__ import annotations

import redis

from ..caps import Caps
from ..crypto import PasswordBox
from ..mail.transports import OutboxTransport, Relay, SmtpTransport
from ..settings import Settings
from .deliverer import Deliverer
from .recorder import Recorder
from .retry import RetryPolicy
from .routing import Router


def build_deliverer(settings: Settings, *, redis_client: redis.Redis) -> Deliverer:
    """A Deliverer with SMTP and outbox transports, the caps on `redis_client`, and its recorder thread."""
    caps = Caps(settings, redis_client)
    router = Router(
        smtp=SmtpTransport(timeout_s=settings.smtp_timeout_s, idle_s=settings.smtp_idle_s,
                           allow_private=settings.allow_private_networks),
        outbox=OutboxTransport(settings.outbox_dir),
        default_relay=Relay.from_url(settings.smtp_url, trusted=True) if settings.smtp_url else None,
        passwords=PasswordBox(settings.secret_keys))
    return Deliverer(settings, caps=caps, router=router, recorder=Recorder(caps.mark_done),
                     retry=RetryPolicy.from_settings(settings))
