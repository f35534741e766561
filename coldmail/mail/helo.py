"""The name coldmail gives in EHLO: SMTP_HELO_NAME, else the machine's FQDN, else DEFAULT_FROM's domain.

Spam filters score a HELO of `localhost` or of a bare host name (a message
relayed through Postfix showed `Received: from localhost`), so neither is ever
given. When no usable name is found, EHLO gives the connection's own address
as an address literal (`[192.0.2.10]`), which RFC 5321 (4.1.4) prescribes for
a client without a meaningful name, and the worker logs at start that
SMTP_HELO_NAME should be set. Refusing to start instead would stop a fresh
clone that only writes to the outbox, which never says EHLO.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket

log = logging.getLogger(__name__)

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
#: labels, a dot at least, and a top-level label that is not all digits (192.0.2.10 is not a name)
_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\.(?![0-9]+\Z){_LABEL}\Z")
#: names that point back at the machine itself (RFC 6761; Debian's /etc/hosts default)
_LOCAL = re.compile(r"(?:\A|\.)(?:localhost|localdomain)\Z|\Alocalhost\.", re.IGNORECASE)


def usable(name: str) -> bool:
    """A fully qualified domain name (a dot at least) that is not the machine's local name."""
    return _NAME.match(name) is not None and _LOCAL.search(name) is None


def is_address_literal(name: str) -> bool:
    """`[192.0.2.10]` or `[IPv6:2001:db8::1]` (RFC 5321 4.1.3)."""
    if not (name.startswith("[") and name.endswith("]")):
        return False
    inner = name[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            return ipaddress.ip_address(inner[5:]).version == 6
        return ipaddress.ip_address(inner).version == 4
    except ValueError:
        return False


def helo_name(configured: str | None, *, default_from: str, fqdn: str | None = None) -> str | None:
    """The EHLO name for the worker's SMTP connections (None: each connection's address literal, see
    address_literal). `configured` is SMTP_HELO_NAME, checked by the settings."""
    if configured:
        return configured
    fqdn = socket.getfqdn() if fqdn is None else fqdn
    if usable(fqdn):
        return fqdn
    domain = default_from.rpartition("@")[2]
    if usable(domain):
        log.warning("SMTP_HELO_NAME is not set and this machine's name %r is not a fully qualified domain "
                    "name: EHLO gives DEFAULT_FROM's domain %r; set SMTP_HELO_NAME to a name that resolves to "
                    "this host", fqdn, domain)
        return domain
    log.error("SMTP_HELO_NAME is not set, and neither this machine's name %r nor DEFAULT_FROM's domain %r is a "
              "fully qualified domain name: EHLO gives the connection's address instead ([192.0.2.10]), which "
              "spam filters score; set SMTP_HELO_NAME to a name that resolves to this host", fqdn, domain)
    return None


def address_literal(sock: socket.socket) -> str:
    """The local address of a connected socket as an EHLO address literal."""
    address = ipaddress.ip_address(sock.getsockname()[0].partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is None:
            return f"[IPv6:{address}]"
        address = address.ipv4_mapped
    return f"[{address}]"
