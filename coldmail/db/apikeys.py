"""API keys made with `create-api-key`: only a SHA-256 of each is stored, with the account it belongs to."""

from __future__ import annotations

import hashlib
import secrets

from .connection import database
from .models import Account, ApiKey


def hash_key(key: str) -> str:
    """Keys are 32 random bytes, so a plain SHA-256 is enough: there is nothing to guess."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(name: str, *, account: str) -> str:
    """A new key of `account` (made if it is new); the key itself is returned once and never stored."""
    key = "cm_" + secrets.token_urlsafe(32)
    with database.atomic():
        Account.insert(id=account).on_conflict_ignore().execute()
        ApiKey.insert(name=name, key_hash=hash_key(key), account=account).execute()
    return key


def account_of_key(key_hash: str) -> str | None:
    """The account of the stored key with this hash, or None when there is none."""
    return ApiKey.select(ApiKey.account).where(ApiKey.key_hash == key_hash).scalar()
