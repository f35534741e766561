"""Bearer API keys and the account each belongs to: static ones from COLDMAIL_API_KEYS, hashed ones from the
database. The middleware puts the key's account on the request (`account_of`); handlers pass it down, and
every statement a user's request runs names it.

A key is checked, and then narrowed to its account, in this one place: a scope
(a send-only key, say) would be one more thing the lookup returns and the
middleware checks, without a change to any table that holds emails or senders.
"""

from __future__ import annotations

import hmac
import time

from aiohttp import web

from ..db import database
from ..db.apikeys import account_of_key, hash_key
from .errors import error_response

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
#: paths under these need no key: /u/{token}'s token is its own credential (one-click unsubscribe)
PUBLIC_PREFIXES = ("/u/",)
#: how long a key found in the database is trusted without asking again
CACHE_S = 30.0

ACCOUNT = web.RequestKey("account", str)


def account_of(request: web.Request) -> str:
    """The account of the request's key: what the request may see and change."""
    return request[ACCOUNT]


class KeyChecker:
    def __init__(self, static_keys: tuple[tuple[str, str], ...], run_blocking) -> None:
        """`static_keys`: (account, key) pairs (Settings.api_keys)."""
        self._static_hashes = [(hash_key(key), account) for account, key in static_keys]
        self._run_blocking = run_blocking
        self._seen: dict[str, tuple[str, float]] = {}

    async def account(self, key: str) -> str | None:
        """The account `key` belongs to, or None when it is no key of ours."""
        digest = hash_key(key)
        # Compare every static hash in constant time, and do not stop at the first match.
        matched = None
        for known, account in self._static_hashes:
            if hmac.compare_digest(digest, known):
                matched = account
        if matched is not None:
            return matched
        seen = self._seen.get(digest)
        if seen is not None and time.monotonic() - seen[1] < CACHE_S:
            return seen[0]

        def lookup() -> str | None:
            with database.connection_context():
                return account_of_key(digest)

        account = await self._run_blocking(lookup)
        if account is not None:
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[digest] = (account, time.monotonic())
        return account


def auth_middleware(checker: KeyChecker):
    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        challenge = {"WWW-Authenticate": 'Bearer realm="coldmail"'}
        if scheme.lower() != "bearer" or not key:
            return error_response(401, "unauthorized", "send Authorization: Bearer <api key>", headers=challenge)
        # A key is printable ASCII (RFC 6750's token68); aiohttp hands other bytes over as lone surrogates,
        # which no key holds and hashing could not encode
        account = await checker.account(key) if key.isascii() and key.isprintable() else None
        if account is None:
            return error_response(401, "unauthorized", "the API key is not valid", headers=challenge)
        request[ACCOUNT] = account
        return await handler(request)

    return middleware
