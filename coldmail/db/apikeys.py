"""API keys made with `create-api-key`: only a SHA-256 of each is stored."""

from __future__ import annotations

import hashlib
import secrets

from .connection import database


def hash_key(key: str) -> str:
    """Keys are 32 random bytes, so a plain SHA-256 is enough: there is nothing to guess."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(name: str) -> str:
    key = "cm_" + secrets.token_urlsafe(32)
    database.execute_sql("INSERT INTO api_keys (name, key_hash) VALUES (%s, %s)", (name, hash_key(key)))
    return key


def key_hash_exists(key_hash: str) -> bool:
    return database.execute_sql("SELECT 1 FROM api_keys WHERE key_hash = %s", (key_hash,)).fetchone() is not None
