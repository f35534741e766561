"""What an EHLO name may be: a name with a dot or an address literal, never localhost."""

from __future__ import annotations

from coldmail.mail.helo import is_address_literal, usable


def is_literal_or_fqdn(name: str) -> bool:
    return usable(name) or is_address_literal(name)
