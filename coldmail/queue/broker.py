"""The Dramatiq Redis broker, built from settings with timeouts that keep a hung Redis from hanging us."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from ..delivery.retry import DRAMATIQ_MAX_RETRIES
from ..errors import ServiceUnavailable
from ..settings import Settings, redact_url

START_HINT = ('start it with: redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
              '--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log')


def url_with_timeouts(url: str, *, timeout_s: float) -> str:
    """redis-py reads timeouts from RedisBroker's URL query string only; keyword arguments are ignored."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("socket_timeout", str(timeout_s))
    query.setdefault("socket_connect_timeout", str(timeout_s))
    query.setdefault("health_check_interval", "10")
    return parts._replace(query=urlencode(query)).geturl()


def build_broker(settings: Settings, *, timeout_s: float = 2.0, extra_middleware=()) -> RedisBroker:
    """A RedisBroker with Dramatiq's retries off for our actor (attempts are counted in PostgreSQL)."""
    middleware = [AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(),
                  Retries(max_retries=DRAMATIQ_MAX_RETRIES)]
    middleware.extend(extra_middleware)
    broker = RedisBroker(url=url_with_timeouts(settings.redis_url, timeout_s=timeout_s), middleware=middleware)
    dramatiq.set_broker(broker)
    return broker


def check_redis(client: redis.Redis, url: str) -> None:
    """Fail with the URL and how to start Redis if it does not answer."""
    try:
        client.ping()
    except redis.RedisError as e:
        raise ServiceUnavailable(f"cannot reach Redis at {redact_url(url)}: {e}; {START_HINT}") from None
