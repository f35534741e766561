"""Logging: one line per event, as text or as JSON objects (`--log-format json` / LOG_FORMAT=json)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from .settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


def email_fields(row: dict) -> dict:
    """`extra=` for a line about one email: JSON lines carry its id, account and sender as fields."""
    return {"email_id": row["id"], "account": row.get("account"), "sender_id": row["sender_id"]}


def configure_logging(settings: Settings, *, log_format: str | None = None) -> None:
    """Format every handler of the root logger; a process that has none (run.py) gets one on stderr.

    The dramatiq CLI installs its own handlers in worker processes (they pipe
    to the parent); those are reformatted, not replaced, so lines are not doubled.
    """
    fmt = log_format or settings.log_format
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(process)d %(name)s %(message)s",
            rename_fields={"levelname": "level", "asctime": "time", "name": "logger"})
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(settings.log_level.upper())
    for noisy in ("apscheduler", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
