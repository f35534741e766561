"""Database proxy and pool; all SQL of coldmail lives in this package."""

from .connection import database, open_database, ensure_database

__all__ = ["database", "open_database", "ensure_database"]
