"""One address, one spelling: the form a suppression is stored and matched in.

`User@Bücher.example` and `user@xn--bcher-kva.example` reach the same mailbox as
far as coldmail can tell, so both are one entry of the suppression list and one
`recipient_key` of an email: the local part lower-case (RFC 5321 lets a server
tell case apart, but no provider does, and a suppression must err on the side of
not sending), the domain in its ASCII (IDNA, UTS #46) form, lower-case.
"""

from __future__ import annotations

import idna


def normalise(address: str) -> str:
    """`address` as suppressions store it; ValueError when it has no `local@domain` shape or its domain is not
    a valid internationalised name."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an address: {address!r}")
    if not domain.isascii():
        # as email-validator makes a recipient's ascii_domain, so that every address it accepts normalises
        try:
            mapped = idna.uts46_remap(domain, std3_rules=False, transitional=False)
            domain = ".".join(idna.alabel(label).decode("ascii") for label in mapped.split("."))
        except (idna.IDNAError, UnicodeError) as e:
            raise ValueError(f"not a valid domain: {e}") from None
    return f"{local.lower()}@{domain.lower()}"
