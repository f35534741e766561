"""Unsubscribe links: `{PUBLIC_BASE_URL}/u/{token}`, for the worker that writes them into messages and for the
API that reads them back.

The signing keys come from COLDMAIL_SECRET_KEY when it is set (each entry stretched
into a key of its own: coldmail.unsubscribe.tokens.derive_key), else from the
database, where the first process to need one stores a random key: a fresh clone
works, and links stay valid across restarts and processes. With COLDMAIL_SECRET_KEY
set, a key stored before still verifies, so links already sent keep working after
it is set. Keys are read once, on first use, inside the caller's database
connection (`ready`).
"""

from __future__ import annotations

import threading
from typing import Callable

from ..db import unsubscribes
from ..settings import Settings
from .tokens import TokenSigner, derive_key

#: the route under which the API serves the links
PATH_PREFIX = "/u/"


class Links:
    def __init__(self, base: str, load_keys: Callable[[], list[bytes]]) -> None:
        """`base`: PUBLIC_BASE_URL (Settings.public_base); `load_keys()`: the signing keys, the first signs (see
        links_for)."""
        self.base = base
        self._load_keys = load_keys
        self._signer: TokenSigner | None = None
        self._lock = threading.Lock()

    def ready(self) -> None:
        """Load the signing keys if not yet done: the first call needs a database connection."""
        if self._signer is None:
            with self._lock:
                if self._signer is None:
                    self._signer = TokenSigner(self._load_keys())

    def url(self, account: str, email_id: int) -> str:
        return f"{self.base}{PATH_PREFIX}{self._ready_signer().sign(account, email_id)}"

    def email_of(self, token: str) -> tuple[str, int] | None:
        """(account, email id) the token was signed for, or None when it is forged or altered."""
        return self._ready_signer().verify(token)

    def _ready_signer(self) -> TokenSigner:
        self.ready()
        assert self._signer is not None
        return self._signer


def links_for(settings: Settings) -> Links:
    """The links of this service: on PUBLIC_BASE_URL, signed with COLDMAIL_SECRET_KEY's keys (and verified
    with a key stored before it was set too), else with the key stored in the database."""

    def load_keys() -> list[bytes]:
        if not settings.secret_keys:
            return [unsubscribes.signing_key()]
        keys = [derive_key(key) for key in settings.secret_keys]
        stored = unsubscribes.stored_signing_key()
        return keys + [stored] if stored is not None else keys

    return Links(settings.public_base, load_keys)
