"""API keys made with `create-api-key`: only a SHA-256 of each is stored."""

from __future__ import annotations

import hashlib
import secrets

from .models import ApiKey


def hash_key(key: str) -> str:
    """Keys are 32 random bytes, so a plain SHA-256 is enough: there is nothing to guess."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(name: str) -> str:
    key = "cm_" + secrets.token_urlsafe(32)
    ApiKey.insert(name=name, key_hash=hash_key(key)).execute()
    return key


def key_hash_exists(key_hash: str) -> bool:
    return ApiKey.select().where(ApiKey.key_hash == key_hash).exists()
