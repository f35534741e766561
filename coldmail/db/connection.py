"""The process-wide PostgreSQL pool behind a Peewee proxy.

Peewee's pool gives a connection back only when it is closed, so callers use
`database.connection_context()` (the API's executor and the worker middleware do).
"""

from __future__ import annotations

import logging
from urllib.parse import unquote, urlsplit

import peewee
import psycopg2
from psycopg2.extensions import TRANSACTION_STATUS_UNKNOWN
from peewee import DatabaseProxy
from playhouse.pool import PooledPostgresqlDatabase

from ..errors import ServiceUnavailable
from ..settings import redact_url

log = logging.getLogger(__name__)

database = DatabaseProxy()

#: what a query raises when PostgreSQL went away under it
DATABASE_DOWN = (peewee.OperationalError, peewee.InterfaceError, psycopg2.OperationalError, psycopg2.InterfaceError)

START_HINT = "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def _connect_kwargs(url: str) -> dict:
    parts = urlsplit(url)
    kwargs = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "user": unquote(parts.username or "postgres"),
        "connect_timeout": 5,
    }
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    return kwargs


def _dbname(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    return unquote(name) or "coldmail"


def ensure_database(url: str) -> None:
    """Create the database named in `url` if it does not exist yet."""
    name = _dbname(url)
    try:
        conn = psycopg2.connect(dbname="postgres", **_connect_kwargs(url))
    except psycopg2.OperationalError as e:
        raise ServiceUnavailable(
            f"cannot reach PostgreSQL at {redact_url(url)}: {str(e).strip()}; {START_HINT}") from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                log.info("creating database %r", name)
                try:
                    cur.execute(f'CREATE DATABASE "{name}"')
                except psycopg2.errors.DuplicateDatabase:
                    pass  # another process created it first
    finally:
        conn.close()


class _Pool(PooledPostgresqlDatabase):
    """Peewee's pool pings each connection it hands out (SELECT 1) under a process-wide lock:
    a round trip per request and per send, and a queue behind the lock. psycopg2 marks a connection closed once it sees it fail,
    so a broken one fails one call (answered as 503, or re-sent by the sweep) and is dropped."""

    def _is_closed(self, conn) -> bool:
        return bool(conn.closed) or conn.get_transaction_status() == TRANSACTION_STATUS_UNKNOWN


def open_database(url: str, *, max_connections: int = 16) -> PooledPostgresqlDatabase:
    """Point the proxy at a pool for `url` and check that it answers."""
    db = _Pool(
        _dbname(url), max_connections=max_connections, stale_timeout=300, timeout=30,
        **_connect_kwargs(url))
    database.initialize(db)
    try:
        with database.connection_context():
            database.execute_sql("SELECT 1")
    except Exception as e:
        raise ServiceUnavailable(
            f"cannot reach PostgreSQL at {redact_url(url)}: {str(e).strip()}; {START_HINT}") from None
    return db
