"""Sealing and opening stored secrets (senders' SMTP passwords and DKIM keys) with COLDMAIL_SECRET_KEY: the one place.

The variable may list several Fernet keys (MultiFernet): the first seals, every
one opens. That is how a key is rotated: put the new key first and keep the old
one after it, re-seal what is stored (`python run.py rotate-secrets`), then drop
the old key. A secret that no configured key opens raises SecretUnreadable:
what is waiting for it is held, not failed (coldmail.delivery.deliverer).
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import BadRequest, SecretUnreadable


def make_key() -> str:
    return Fernet.generate_key().decode()


class PasswordBox:
    def __init__(self, secret_keys: tuple[str, ...]) -> None:
        """`secret_keys`: Settings.secret_keys, newest first (checked there); empty: nothing can be sealed."""
        self._fernet = MultiFernet([Fernet(key) for key in secret_keys]) if secret_keys else None

    def seal(self, secret: str, *, what: str = "SMTP password") -> str:
        """`secret` encrypted with the first key; BadRequest (naming `what`) when no key is configured."""
        if self._fernet is None:
            raise BadRequest(f"storing a sender's {what} needs COLDMAIL_SECRET_KEY to be set on the server")
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str, *, what: str = "SMTP password") -> str:
        """The secret; SecretUnreadable when no configured key opens it (the message names `what`, never the
        secret)."""
        if self._fernet is None:
            raise SecretUnreadable(f"a stored {what} cannot be opened: COLDMAIL_SECRET_KEY is not set")
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(f"no key of COLDMAIL_SECRET_KEY opens the sender's stored {what} "
                                   "(was the key changed?)") from None

    def opens(self, sealed: str) -> bool:
        """Whether a configured key opens `sealed` (GET /senders shows it; the start-up check logs it)."""
        try:
            self.open(sealed)
        except SecretUnreadable:
            return False
        return True

    def reseal(self, sealed: str) -> str:
        """`sealed` sealed again with the first key, so the others can be dropped; SecretUnreadable if no
        configured key opens it."""
        if self._fernet is None:
            raise SecretUnreadable("COLDMAIL_SECRET_KEY is not set")
        try:
            return self._fernet.rotate(sealed.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable("no key of COLDMAIL_SECRET_KEY opens a stored secret") from None
