"""Encrypting senders' SMTP passwords at rest with a Fernet key from COLDMAIL_SECRET_KEY."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from .errors import BadRequest, ConfigError


def make_key() -> str:
    return Fernet.generate_key().decode()


class PasswordBox:
    def __init__(self, secret_key: str | None) -> None:
        self._fernet = Fernet(secret_key) if secret_key else None

    def seal(self, password: str) -> str:
        if self._fernet is None:
            raise BadRequest("storing an SMTP password needs COLDMAIL_SECRET_KEY to be set on the server")
        return self._fernet.encrypt(password.encode()).decode()

    def open(self, sealed: str) -> str:
        if self._fernet is None:
            raise ConfigError("a sender's SMTP password is stored encrypted, and COLDMAIL_SECRET_KEY is not set")
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ConfigError("COLDMAIL_SECRET_KEY does not open a stored SMTP password (was the key changed?)") from None
