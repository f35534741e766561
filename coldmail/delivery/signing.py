"""DKIM-signing a sender's messages: its sealed key opened and parsed once, then reused for every message.

A claimed row carries its sender's `dkim_domain`, `dkim_selector` and sealed
`dkim_key_enc`. Opening (Fernet) and parsing (PEM) cost more than the
signature's hashing, so both are done once per sealed value and kept: a new
key is a new sealed value (Fernet tokens never repeat), so a replaced key is
never served from the cache, and a key no configured Fernet key opens is not
kept (it raises SecretUnreadable each time: the email is held).
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Any, Mapping

from ..crypto import PasswordBox
from ..errors import ConfigError
from ..mail.dkim import DkimKey, UnusableKey, load_private_key, sign
from ..mail.message import Outgoing

#: senders' keys kept parsed per worker process (a few KiB each)
KEYS_KEPT = 1024


class Signer:
    def __init__(self, box: PasswordBox) -> None:
        self._box = box
        self._key = lru_cache(maxsize=KEYS_KEPT)(self._open)

    def sign(self, message: Outgoing, row: Mapping[str, Any]) -> Outgoing:
        """`message` signed with its sender's key, or as it is when the sender has none. Raises
        SecretUnreadable when no configured key opens the stored one (the email is held), ConfigError when
        the key opens but cannot sign (the API checked it: a key stored by hand)."""
        sealed = row.get("dkim_key_enc")
        if not sealed:
            return message
        key = self._key(sealed, row["dkim_domain"], row["dkim_selector"])
        return dataclasses.replace(message, data=sign(message.data, key))

    def _open(self, sealed: str, domain: str, selector: str) -> DkimKey:
        pem = self._box.open(sealed, what="DKIM key")
        try:
            return DkimKey(domain=domain, selector=selector, private_key=load_private_key(pem))
        except UnusableKey as e:
            raise ConfigError(f"the sender's DKIM key cannot sign: {e}") from None
