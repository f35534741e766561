"""Bearer API keys: static ones from COLDMAIL_API_KEYS and hashed ones from the database."""

from __future__ import annotations

import hmac
import time

from aiohttp import web

from ..db import database
from ..db.apikeys import hash_key, key_hash_exists
from .errors import error_response

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
#: how long a key found in the database is trusted without asking again
CACHE_S = 30.0


class KeyChecker:
    def __init__(self, static_keys: tuple[str, ...], run_blocking) -> None:
        self._static_hashes = [hash_key(k) for k in static_keys]
        self._run_blocking = run_blocking
        self._seen: dict[str, float] = {}

    async def is_valid(self, key: str) -> bool:
        digest = hash_key(key)
        # Compare every static hash in constant time, and do not stop at the first match.
        matched = False
        for known in self._static_hashes:
            matched |= hmac.compare_digest(digest, known)
        if matched:
            return True
        seen_at = self._seen.get(digest)
        if seen_at is not None and time.monotonic() - seen_at < CACHE_S:
            return True

        def lookup() -> bool:
            with database.connection_context():
                return key_hash_exists(digest)

        if await self._run_blocking(lookup):
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[digest] = time.monotonic()
            return True
        return False


def auth_middleware(checker: KeyChecker):
    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        challenge = {"WWW-Authenticate": 'Bearer realm="coldmail"'}
        if scheme.lower() != "bearer" or not key:
            return error_response(401, "unauthorized", "send Authorization: Bearer <api key>", headers=challenge)
        # A key is printable ASCII (RFC 6750's token68); aiohttp hands other bytes over as lone surrogates,
        # which no key holds and hashing could not encode
        if not (key.isascii() and key.isprintable()) or not await checker.is_valid(key):
            return error_response(401, "unauthorized", "the API key is not valid", headers=challenge)
        return await handler(request)

    return middleware
