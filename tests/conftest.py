"""Fixtures that talk to the real things: PostgreSQL (a database per session), Redis (a dedicated db,
flushed between tests) and an aiosmtpd sink on a free port.

A missing PostgreSQL or Redis skips on a laptop but fails in CI (CI=true).
Set COLDMAIL_TEST_REDIS_DB to run two test sessions side by side (a session of N xdist workers takes N dbs
from it).

Every fixture imports what it needs (psycopg2, redis, aiosmtpd, coldmail) itself, so that `pytest tests/unit`
runs with nothing but pytest installed.
"""

from __future__ import annotations

import os

import pytest

from tests.support.net import free_port

CI = os.environ.get("CI") == "true"
PG_SERVER = os.environ.get("COLDMAIL_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("COLDMAIL_TEST_REDIS", "redis://127.0.0.1:6379")
#: with pytest-xdist each worker (gw0, gw1, ...) takes the next db, as it takes its own database by its pid
REDIS_DB = int(os.environ.get("COLDMAIL_TEST_REDIS_DB", "13")) + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
TEST_DB = f"coldmail_test_{os.getpid()}"
API_KEY = "test-key-0123456789"
MARKER = "coldmail:test-db"

#: short windows and intervals, so time-based behaviour shows within seconds
FAST = {
    "HANDOVER_HORIZON_SECONDS": "10",
    "HANDOVER_INTERVAL_SECONDS": "0.2",
    "SWEEP_INTERVAL_SECONDS": "0.5",
    "REQUEUE_AFTER_SECONDS": "3",
    "LEASE_SECONDS": "6",
    "SMTP_TIMEOUT_SECONDS": "2",
    "SMTP_IDLE_SECONDS": "5",
    "RETRY_BACKOFF_SECONDS": "0.3",
    "RETRY_BACKOFF_MAX_SECONDS": "2",
    "MAX_ATTEMPTS": "4",
    "RATE_LIMIT_PER_HOUR": "100000",
    "WORKER_PROCESSES": "1",
    "WORKER_THREADS": "4",
    "SHUTDOWN_SECONDS": "8",
    "DB_POOL_SIZE": "12",
}


def _unavailable(message: str):
    if CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def database_url():
    """A fresh database for this session, migrated, dropped at the end."""
    import psycopg2

    from coldmail.db import database, ensure_database, open_database
    from coldmail.db.migrations import migrate

    url = f"{PG_SERVER}/{TEST_DB}"
    try:
        ensure_database(url)
    except Exception as e:  # noqa: BLE001 - any failure to reach PostgreSQL means: no database here
        _unavailable(f"No PostgreSQL: {e}")
    open_database(url, max_connections=20)
    migrate()
    yield url
    database.close_all()
    conn = psycopg2.connect(PG_SERVER + "/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def redis_url():
    import redis

    url = f"{REDIS_SERVER}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as e:
        _unavailable(f"No connection to Redis server: {e}")
    if client.dbsize() and not client.exists(MARKER):
        pytest.fail(f"Redis db {REDIS_DB} holds keys that are not a coldmail test's; "
                    "set COLDMAIL_TEST_REDIS_DB to an empty db")
    client.flushdb()
    client.set(MARKER, "1")
    yield url
    client.flushdb()
    client.set(MARKER, "1")  # the db stays ours for the next session
    client.close()


@pytest.fixture
def redis_client(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def clean_state(redis_url: str) -> None:
    import redis

    from coldmail.db import database

    with database.connection_context():
        database.execute_sql("TRUNCATE email_events, emails, senders, api_keys, webhooks, webhook_deliveries, "
                             "suppressions, inbound_messages RESTART IDENTITY CASCADE")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.set(MARKER, "1")
    client.close()


@pytest.fixture
def sink():
    from tests.support.sink import SmtpSink

    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def base_env(database_url, redis_url, tmp_path):
    """The environment of a coldmail process in a test: real services, short timings, clean state."""
    clean_state(redis_url)
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "COLDMAIL_API_KEYS": API_KEY,
        "OUTBOX_DIR": str(tmp_path / "outbox"),
        "QUEUE_NAME": "coldmail",
        "LOG_LEVEL": "info",
        # the senders of most tests relay through the loopback sink; tests of the outbound guard unset it
        "ALLOW_PRIVATE_NETWORKS": "true",
        **FAST,
    }


@pytest.fixture
def make_settings(base_env):
    from coldmail.settings import Settings

    def make(**overrides) -> Settings:
        env = dict(base_env)
        env.update({k: str(v) for k, v in overrides.items()})
        return Settings.from_env(env, dotenv=None)

    return make


@pytest.fixture
def auth():
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def port():
    return free_port()


@pytest.fixture(scope="session")
def dovecot():
    """A Dovecot IMAP server of this session's own (tests/support/dovecot.py); skipped without the Debian
    package dovecot-imapd on a laptop, a failure in CI."""
    from tests.support.dovecot import DOVECOT, Dovecot

    if not os.path.exists(DOVECOT):
        _unavailable(f"No Dovecot at {DOVECOT}: install the Debian package dovecot-imapd")
    try:
        server = Dovecot({}).start()
    except (RuntimeError, OSError) as e:
        _unavailable(f"Dovecot did not start: {e}")
    yield server
    server.stop()


_mailbox_users = iter(range(1, 1_000_000))


@pytest.fixture
def imap_user(dovecot):
    """A user of the session's Dovecot with an empty mailbox of its own: (name, password)."""
    import secrets

    user, password = f"user{next(_mailbox_users)}", secrets.token_urlsafe(12)
    dovecot.add_user(user, password)
    return user, password
