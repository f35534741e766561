"""A sender's mailbox URL, as stored (without its password): `imaps://user@host:993/INBOX` or `imap://…`.

`imap://` goes to STARTTLS and, since a mailbox always needs a password, insists
on it unless the URL says `?starttls=never` (the password then goes in clear,
for a server you trust on a network you trust), as for SMTP relays.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from .. import net
from ..errors import ConfigError

STARTTLS_OPTIONS = ("auto", "require", "never")
DEFAULT_FOLDER = "INBOX"


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    implicit_tls: bool
    #: `?starttls=`: auto and require both insist (there is always a password); never: a password may go in clear
    starttls: str
    username: str
    folder: str

    @property
    def require_starttls(self) -> bool:
        return not self.implicit_tls and self.starttls != "never"

    @classmethod
    def from_url(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps") or not parts.hostname:
            raise ConfigError("not an IMAP URL: scheme must be imap:// or imaps:// with a host")
        if not parts.username:
            raise ConfigError("an IMAP URL needs a user: imaps://user@host/INBOX")
        starttls = parse_qs(parts.query).get("starttls", ["auto"])[-1].lower()
        if starttls not in STARTTLS_OPTIONS:
            raise ConfigError(f"IMAP URL option starttls must be one of {', '.join(STARTTLS_OPTIONS)}")
        implicit = parts.scheme == "imaps"
        return cls(host=parts.hostname, port=net.port_of(parts), implicit_tls=implicit,
                   starttls=starttls, username=unquote(parts.username),
                   folder=unquote(parts.path.lstrip("/")) or DEFAULT_FOLDER)
