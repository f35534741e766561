"""`python run.py [all|api|migrate|create-api-key NAME [--account ACCOUNT]|make-secret-key|rotate-secrets]`."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile

from .accounts import ACCOUNT_NAME_RULE, DEFAULT_ACCOUNT, is_account_name
from .errors import ConfigError, ServiceUnavailable
from .settings import Settings

log = logging.getLogger("coldmail")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description="coldmail: schedule email over HTTP, send it on time.")
    parser.add_argument("--log-format", choices=("text", "json"), help="overrides LOG_FORMAT")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("all", help="API and scheduler, with WORKER_PROCESSES worker processes as children "
                              "(0: worker threads in the API process); the default")
    sub.add_parser("api", help="API and scheduler only; run workers with `dramatiq coldmail.worker`")
    sub.add_parser("migrate", help="create the database if missing and bring its schema up to date")
    key = sub.add_parser("create-api-key", help="print a new API key once; only its hash is stored")
    key.add_argument("name")
    key.add_argument("--account", type=_account, default=DEFAULT_ACCOUNT,
                     help=f"the account the key belongs to and sees alone (default: {DEFAULT_ACCOUNT}); "
                          f"made if new")
    sub.add_parser("make-secret-key", help="print a new COLDMAIL_SECRET_KEY (encrypts SMTP passwords)")
    sub.add_parser("rotate-secrets", help="seal every stored secret again with the first key of "
                                          "COLDMAIL_SECRET_KEY, so that the keys after it can be dropped")
    return parser


def _account(name: str) -> str:
    if not is_account_name(name):
        raise argparse.ArgumentTypeError(f"{name!r} is not an account name ({ACCOUNT_NAME_RULE})")
    return name


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "all"
    if command == "make-secret-key":
        from .crypto import make_key

        print(make_key())
        return 0
    try:
        settings = Settings.from_env()
        from .logs import configure_logging

        configure_logging(settings, log_format=args.log_format)
        return _run(command, settings, args)
    except ConfigError as e:
        print(f"coldmail: configuration error: {e}", file=sys.stderr)
        return 2
    except ServiceUnavailable as e:
        print(f"coldmail: {e}", file=sys.stderr)
        return 3


def _prepare_database(settings: Settings) -> None:
    from .db import ensure_database, open_database
    from .db.migrations import migrate

    ensure_database(settings.database_url)
    open_database(settings.database_url, max_connections=settings.db_pool_size)
    applied = migrate()
    if applied:
        log.info("database migrated to version %d", applied[-1])


def _rotate_secrets(settings: Settings) -> int:
    """Exit 0 when every stored secret is now sealed with the first key; 1 when some opened with no key."""
    from .crypto import PasswordBox
    from .stored_secrets import rotate

    if not settings.secret_keys:
        raise ConfigError("rotate-secrets needs COLDMAIL_SECRET_KEY: the new key first, then the old ones")
    done = rotate(PasswordBox(settings.secret_keys))
    print(f"re-sealed {done.resealed} stored secret(s) with the first key of COLDMAIL_SECRET_KEY")
    if done.unreadable:
        senders = ", ".join(f"{sender!r} of account {account!r}" for account, sender in done.unreadable)
        print(f"{len(done.unreadable)} stored secret(s) open with no configured key and were left as they are "
              f"(senders {senders}): add the key that sealed them and run rotate-secrets again", file=sys.stderr)
    if done.unreadable_webhooks:
        webhooks = ", ".join(f"{webhook_id} of account {account!r}" for account, webhook_id in done.unreadable_webhooks)
        print(f"{len(done.unreadable_webhooks)} webhook signing secret(s) open with no configured key and were "
              f"left as they are (webhooks {webhooks}): add the key that sealed them and run rotate-secrets again",
              file=sys.stderr)
    return 1 if done.unreadable or done.unreadable_webhooks else 0


def _run(command: str, settings: Settings, args) -> int:
    _prepare_database(settings)
    if command == "migrate":
        print("database is up to date")
        return 0
    if command == "create-api-key":
        from .db import database
        from .db.apikeys import create_api_key

        with database.connection_context():
            print(create_api_key(args.name, account=args.account))
        return 0
    if command == "rotate-secrets":
        return _rotate_secrets(settings)
    with_workers = command == "all"
    metrics_dir = None
    if with_workers and settings.worker_processes and not settings.metrics_dir:
        # The sends run in child processes: their figures reach the API's /metrics through a shared
        # directory, set before prometheus_client is first imported (it reads it at import).
        metrics_dir = tempfile.mkdtemp(prefix="coldmail-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        settings = settings.replace(metrics_dir=metrics_dir)
    from .serve import serve

    try:
        serve(settings, with_workers=with_workers, log_format=args.log_format or settings.log_format)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
