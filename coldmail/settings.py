"""Settings: the only reader of the environment (and of `.env` when present).

Every value is parsed once into a frozen dataclass that is passed down; a bad
value stops start-up with a ConfigError that names the variable.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlsplit

from .accounts import ACCOUNT_NAME_RULE, DEFAULT_ACCOUNT, is_account_name
from .errors import ConfigError


def _url(schemes: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError(f"{name}={_redact(raw)!r} is not a URL of the form {schemes[0]}://host:port/…")
        try:
            parts.port
        except ValueError:
            raise ConfigError(f"{name}={_redact(raw)!r} has a bad port") from None
        return raw

    return parse


def _int(minimum: int, maximum: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise ConfigError(f"{name}={raw!r} must be {bound}")
        return value

    return parse


def _float(minimum: float, maximum: float = float("inf")) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if not value >= minimum:
            raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
        if value > maximum:
            raise ConfigError(f"{name}={raw!r} must be at most {maximum:g}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name}={raw!r} must be one of {', '.join(choices)}")
        return value

    return parse


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise ConfigError(f"{name}={raw!r} must be true or false")
    return value == "true"


def _text(name: str, raw: str) -> str:
    return raw


def _optional_smtp_url(name: str, raw: str) -> str | None:
    if not raw.strip():
        return None
    return _url(("smtp", "smtps"))(name, raw.strip())


def _keys(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    """(account, key) for each entry: `key` (account `default`) or `account:key`. Messages never repeat a key."""
    keys: list[tuple[str, str]] = []
    for number, entry in enumerate((e.strip() for e in raw.split(",") if e.strip()), 1):
        account, colon, key = entry.partition(":")
        if not colon:
            account, key = DEFAULT_ACCOUNT, entry
        if not is_account_name(account):
            raise ConfigError(f"{name}: entry {number} names an account that is not {ACCOUNT_NAME_RULE}")
        if len(key) < 8:
            raise ConfigError(f"{name}: entry {number} holds a key shorter than 8 characters")
        if not (key.isascii() and key.isprintable()) or " " in key:
            raise ConfigError(f"{name}: entry {number} holds a key with characters other than printable ASCII, "
                              "which no Authorization header can carry")
        keys.append((account, key))
    by_key: dict[str, str] = {}
    for account, key in keys:
        if by_key.setdefault(key, account) != account:
            raise ConfigError(f"{name} gives one key to two accounts ({by_key[key]!r} and {account!r})")
    return tuple(keys)


def _fernet_keys(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated Fernet keys, newest first: the first encrypts, all decrypt (a rotation in progress).
    A bad one is named by its position, never echoed: it is a secret."""
    entries = [k.strip() for k in raw.split(",")] if raw.strip() else []
    if not entries:
        return ()
    from cryptography.fernet import Fernet

    for position, key in enumerate(entries, 1):
        where = f"{name} (key {position} of {len(entries)})"
        if not key:
            raise ConfigError(f"{where} is empty: separate the keys with single commas")
        try:
            Fernet(key)
            # Fernet's decoding ignores stray characters; a key that does not encode back is a typo
            canonical = base64.urlsafe_b64encode(base64.urlsafe_b64decode(key)).decode() == key
        except (ValueError, TypeError):
            canonical = False
        if not canonical:
            raise ConfigError(f"{where} is not a Fernet key (32 url-safe base64 bytes; "
                              "make one with `python run.py make-secret-key`)")
    return tuple(entries)


def _helo_name(name: str, raw: str) -> str | None:
    """A fully qualified domain name or an address literal, never `localhost`; empty: found at start
    (coldmail.mail.helo)."""
    from .mail.helo import is_address_literal, usable

    value = raw.strip()
    if not value:
        return None
    if not (usable(value) or is_address_literal(value)):
        raise ConfigError(f"{name}={raw!r} must be a fully qualified domain name that resolves to this host "
                          "(mail.example.com), or an address literal ([192.0.2.10]); never localhost")
    return value


def _optional_public_url(name: str, raw: str) -> str | None:
    """The base of links sent to recipients: http(s)://host[:port][/path], with no credentials, query or
    fragment (a link is built by appending /u/{token}); unset: None (Settings.public_base fills it in)."""
    raw = raw.strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={_redact(raw)!r} is not a URL of the form https://host[:port][/path]")
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"{name}={_redact(raw)!r} has a bad port") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{name} must not hold a user or password: it is written into every email")
    if parts.query or parts.fragment or "?" in raw or "#" in raw:
        raise ConfigError(f"{name}={raw!r} must have no query (?…) or fragment (#…): links are built by "
                          "appending /u/{token}")
    if not raw.isascii() or any(c.isspace() or not c.isprintable() for c in raw):
        raise ConfigError(f"{name}={raw!r} must be printable ASCII without spaces (percent-encode the rest)")
    return raw.rstrip("/")


def _optional_dir(name: str, raw: str) -> str | None:
    if not raw.strip():
        return None
    if not Path(raw.strip()).is_dir():
        raise ConfigError(f"{name}={raw!r} is not a directory: create it (empty) before the processes start")
    return raw.strip()


def _redact(url: str) -> str:
    """A URL fit for a log line: the password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


redact_url = _redact


def _var(env: str, default: str | None, parse: Callable[[str, str], object], doc: str):
    return field(metadata={"env": env, "default": default, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    database_url: str = _var(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/coldmail",
        _url(("postgresql", "postgres")), "PostgreSQL; the database is created if missing")
    redis_url: str = _var(
        "REDIS_URL", "redis://127.0.0.1:6379/0", _url(("redis", "rediss")),
        "Dramatiq broker and rate-limit counters")
    smtp_url: str | None = _var(
        "SMTP_URL", "", _optional_smtp_url,
        "smtp://user:pass@host:port (STARTTLS when offered, ?starttls=require to insist; with a user, STARTTLS "
        "is required unless ?starttls=never) or smtps://… (implicit TLS); unset: write .eml files to OUTBOX_DIR")
    outbox_dir: str = _var("OUTBOX_DIR", "./var/outbox", _text, "where the file transport writes")
    default_from: str = _var("DEFAULT_FROM", "coldmail@localhost", _text, "From address of a sender that has none")
    rate_limit_per_hour: int = _var("RATE_LIMIT_PER_HOUR", "100", _int(1), "default cap of a sender per window")
    rate_limit_window_s: int = _var("RATE_LIMIT_WINDOW_SECONDS", "3600", _int(1), "window length of the cap")
    global_rate_limit_per_s: int = _var(
        "GLOBAL_RATE_LIMIT_PER_SECOND", "0", _int(0), "cap on all sends together (0: off)")
    api_keys: tuple[tuple[str, str], ...] = _var(
        "COLDMAIL_API_KEYS", "", _keys,
        "comma-separated static API keys, besides those made with create-api-key; each `key` (account "
        "`default`) or `account:key`")
    host: str = _var("HOST", "127.0.0.1", _text, "where the API listens")
    port: int = _var("PORT", "8080", _int(0, 65535), "where the API listens")
    public_base_url: str | None = _var(
        "PUBLIC_BASE_URL", "", _optional_public_url,
        "the address recipients reach the API at (https://mail.example.com); unsubscribe links are built on it; "
        "unset: http://HOST:PORT")
    allow_private_networks: bool = _var(
        "ALLOW_PRIVATE_NETWORKS", "false", _bool,
        "let API users point senders' relays and webhooks at loopback, private and link-local addresses, and "
        "webhooks at http:// URLs (local set-ups and tests); the operator's own SMTP_URL is always trusted")
    secret_keys: tuple[str, ...] = _var(
        "COLDMAIL_SECRET_KEY", "", _fernet_keys,
        "Fernet key that encrypts senders' SMTP passwords and webhooks' signing secrets; a comma-separated list rotates keys: the first "
        "encrypts, all decrypt (`python run.py rotate-secrets` re-encrypts with the first)")
    smtp_helo_name: str | None = _var(
        "SMTP_HELO_NAME", "", _helo_name,
        "the name coldmail gives in EHLO (never localhost); unset: the machine's FQDN, else DEFAULT_FROM's "
        "domain, else the connection's address as a literal ([192.0.2.10]), with an error logged at start")
    # Tuning; the defaults suit production, tests shrink them.
    handover_horizon_s: float = _var(
        "HANDOVER_HORIZON_SECONDS", "60", _float(1), "emails due within this are handed to Dramatiq")
    handover_interval_s: float = _var(
        "HANDOVER_INTERVAL_SECONDS", "0.5", _float(0.05), "how often the scheduler hands over due emails")
    handover_batch: int = _var("HANDOVER_BATCH", "2000", _int(1), "emails handed over per scheduler run at most")
    send_batch: int = _var(
        "SEND_BATCH", "10", _int(1, 1000),
        "emails due together that one queue message carries: a worker thread claims, sends (one after the "
        "other, each at its time) and records them together, in a few round trips instead of ten per email")
    send_batch_spread_ms: int = _var(
        "SEND_BATCH_SPREAD_MS", "5", _int(0, 1000), "emails due at most this far apart may share a message")
    sweep_interval_s: float = _var(
        "SWEEP_INTERVAL_SECONDS", "5", _float(0.1), "how often the recovery sweep runs")
    requeue_after_s: float = _var(
        "REQUEUE_AFTER_SECONDS", "10", _float(0.5),
        "a handed-over email not sent this long after its time is handed over again (once no message waits "
        "in the queue: a long queue is slow, not lossy)")
    lease_s: float = _var("LEASE_SECONDS", "120", _float(1), "how long a claimed (SENDING) email is held")
    dead_worker_s: float = _var(
        "DEAD_WORKER_SECONDS", "10", _float(0.5),
        "a worker process silent this long is taken for dead: the messages it had fetched go back to the queue, "
        "and the emails it was sending are taken back at once (not LEASE_SECONDS after their claim)")
    sender_concurrency: int = _var(
        "SENDER_CONCURRENCY", "2", _int(1, 1000),
        "sends of one sender in SMTP conversations at once, across every worker: one sender's slow relay "
        "cannot take every worker thread; an email over it is given back unsent and goes again shortly")
    smtp_timeout_s: float = _var(
        "SMTP_TIMEOUT_SECONDS", "30", _float(0.1),
        "longest one SMTP send may take, connection through the reply to DATA: a relay still talking then is cut off")
    smtp_idle_s: float = _var(
        "SMTP_IDLE_SECONDS", "30", _float(0), "how long an idle SMTP connection is kept open for reuse")
    max_attempts: int = _var("MAX_ATTEMPTS", "8", _int(1), "SMTP attempts before an email is FAILED")
    retry_backoff_s: float = _var("RETRY_BACKOFF_SECONDS", "30", _float(0), "first retry delay; doubles each time")
    retry_backoff_max_s: float = _var("RETRY_BACKOFF_MAX_SECONDS", "3600", _float(0), "longest retry delay")
    shutdown_s: float = _var(
        "SHUTDOWN_SECONDS", "30", _float(1), "how long a stopping worker lets in-flight sends finish")
    worker_processes: int = _var(
        "WORKER_PROCESSES", "2", _int(0, 64),
        "worker processes `python run.py` runs beside the API (the dramatiq CLI, as its child); "
        "0: worker threads inside the API process")
    worker_threads: int = _var("WORKER_THREADS", "16", _int(1, 256), "threads per worker process of `python run.py`")
    worker_poll_ms: int = _var(
        "WORKER_POLL_MS", "20", _int(1, 10000), "Dramatiq's poll interval; bounds the lateness of delayed messages")
    queue_name: str = _var("QUEUE_NAME", "coldmail", _text, "Dramatiq queue of the send actor")
    webhook_retry_backoff_s: float = _var(
        "WEBHOOK_RETRY_BACKOFF_SECONDS", "5", _float(0),
        "first retry delay of a webhook delivery (non-2xx or no answer); doubles each time with jitter, an hour "
        "at most")
    webhook_retry_window_s: float = _var(
        "WEBHOOK_RETRY_WINDOW_SECONDS", "86400", _float(0),
        "a webhook delivery is retried until an attempt fails this long after its event, then marked failed")
    webhook_concurrency: int = _var(
        "WEBHOOK_CONCURRENCY", "2", _int(1, 256),
        "worker threads per worker process posting webhooks at once (their queue is QUEUE_NAME.webhooks): a "
        "slow or dead receiver holds these, never the threads that send email")
    webhook_yield_s: float = _var(
        "WEBHOOK_YIELD_SECONDS", "5", _float(0, 5),
        "a webhook batch first waits until its worker process has no email send in flight, this long at most, "
        "so that deliveries take the gaps between sends (0: no waiting)")
    imap_poll_s: float = _var(
        "IMAP_POLL_SECONDS", "60", _float(0.1),
        "how often each sender's mailbox (its imapUrl) is read for replies, bounces and complaints; a mailbox "
        "that fails waits longer each time (twice as long after each failure, an hour at most)")
    db_pool_size: int = _var("DB_POOL_SIZE", "16", _int(1, 1000), "PostgreSQL connections per process at most")
    log_level: str = _var("LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"), "log level")
    log_format: str = _var("LOG_FORMAT", "text", _choice("text", "json"), "text or json (one object a line)")
    metrics_dir: str | None = _var(
        "PROMETHEUS_MULTIPROC_DIR", "", _optional_dir,
        "a directory the API and worker processes of one host share, so /metrics adds up every process's "
        "figures (prometheus_client's multiprocess mode; set it in the environment, not .env); "
        "unset: /metrics shows the API process's own, enough for `python run.py`")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dotenv: str | Path | None = ".env") -> Settings:
        """Read the environment; `.env` (when present) fills only what the environment lacks."""
        if environ is None:
            env = dict(os.environ)
            if dotenv and Path(dotenv).is_file():
                from dotenv import dotenv_values

                for key, value in dotenv_values(dotenv).items():
                    if value is not None:
                        env.setdefault(key, value)
        else:
            env = dict(environ)
        values = {}
        for f in fields(cls):
            meta = f.metadata
            raw = env.get(meta["env"], meta["default"])
            values[f.name] = meta["parse"](meta["env"], raw)
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        if self.lease_s <= self.smtp_timeout_s:
            raise ConfigError(
                f"LEASE_SECONDS={self.lease_s} must be longer than SMTP_TIMEOUT_SECONDS={self.smtp_timeout_s}, "
                "or a slow send would be taken for a dead one")

    @property
    def handover_lead_ms(self) -> int:
        """How long before its time a message is released to the workers: two polls (the delay queue's, then
        the work queue's) and a little, so that it reaches a worker thread in time; the thread claims it and
        waits out the rest, so nothing goes out early."""
        return 2 * self.worker_poll_ms + 10

    @property
    def public_base(self) -> str:
        """Where recipients reach the API, without a trailing slash: PUBLIC_BASE_URL, else http://HOST:PORT."""
        if self.public_base_url is not None:
            return self.public_base_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def replace(self, **changes) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)

    def __repr__(self) -> str:
        return "Settings(<redacted>)"


def documented() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for each setting: the README's table is made from this."""
    return [(f.metadata["env"], f.metadata["default"], f.metadata["doc"]) for f in fields(Settings)]
