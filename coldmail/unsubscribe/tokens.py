"""Unsubscribe tokens: an email's id and account, signed, in a few dozen URL-safe characters.

The token is its recipient's only credential, so it is a MAC, not an id: 16 bytes
of HMAC-SHA256 over (id, account), then the id (8 bytes) and the account, in
unpadded base64url. Several keys may verify (a rotation in progress); the first
signs. A token that is not exactly what signing would write (another alphabet,
padding, stray bits in its last character) is refused, so no two strings are one
token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from typing import Sequence

from ..accounts import is_account_name

_MAC_BYTES = 16
_ID = struct.Struct(">Q")
#: 16 + 8 + a 64-character account, in base64url: a longer string is no token
MAX_TOKEN_CHARS = 120
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
#: what a COLDMAIL_SECRET_KEY is stretched with into a signing key: never the Fernet key itself, which also
#: seals stored secrets
_LABEL = b"coldmail unsubscribe token v1"


def derive_key(fernet_key: str) -> bytes:
    """The signing key belonging to one COLDMAIL_SECRET_KEY entry (HMAC-SHA256 of a fixed label)."""
    return hmac.new(base64.urlsafe_b64decode(fernet_key), _LABEL, hashlib.sha256).digest()


class TokenSigner:
    def __init__(self, keys: Sequence[bytes]) -> None:
        """`keys`: the first signs, every one verifies."""
        if not keys:
            raise ValueError("a TokenSigner needs at least one key")
        self._keys = tuple(keys)

    def sign(self, account: str, email_id: int) -> str:
        message = _ID.pack(email_id) + account.encode()
        return _encode(_mac(self._keys[0], message) + message)

    def verify(self, token: str) -> tuple[str, int] | None:
        """(account, email id) that `token` names, or None when no key signed it (forged, altered, cut)."""
        raw = _decode(token)
        if raw is None or len(raw) <= _MAC_BYTES + _ID.size:
            return None
        mac, message = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        # every key is tried, whatever matched: the time taken says nothing about which
        if not sum(hmac.compare_digest(mac, _mac(key, message)) for key in self._keys):
            return None
        (email_id,) = _ID.unpack(message[:_ID.size])
        try:
            account = message[_ID.size:].decode()
        except UnicodeDecodeError:
            return None
        return (account, email_id) if is_account_name(account) else None


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(token: str) -> bytes | None:
    if len(token) > MAX_TOKEN_CHARS or _ALPHABET.fullmatch(token) is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if _encode(raw) == token else None
