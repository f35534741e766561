"""The outbound guard: every connection an API user can make the server open goes through here.

A sender's relay or mailbox and a webhook's URL are the user's choice, so the
server must not become their way into its own network: a host is resolved once,
every address it resolves to must be public, and the connection is made to the
address that was checked, never to the name again (DNS may answer differently
the second time). `ALLOW_PRIVATE_NETWORKS=true` lifts the rule for local set-ups;
the operator's own `SMTP_URL` is trusted and does not come through here.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass

from .errors import BadRequest

#: the port a relay's or mailbox's URL without one goes to, by scheme
DEFAULT_PORTS = {"smtp": 25, "smtps": 465, "imap": 143, "imaps": 993}


def port_of(parts) -> int:
    """The port of a split relay or mailbox URL (urllib.parse.SplitResult): its own, or its scheme's."""
    return parts.port or DEFAULT_PORTS[parts.scheme]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddress(BadRequest):
    """The host resolves to an address API users may not reach (loopback, private, link-local, …)."""


class UnresolvableHost(BadRequest):
    """The host name does not resolve."""


def refusal(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address an API user may reach, or None if it is one.

    IPv4 inside IPv6 (`::ffff:127.0.0.1`, 6to4, NAT64's well-known prefix) is judged by its IPv4
    address, so no spelling of a private address passes as a public one.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return refusal(embedded)
    for name, test in _REFUSED:
        if test(ip):
            return name
    if not ip.is_global:
        return "not globally routable"
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_REFUSED = (
    ("unspecified", lambda ip: ip.is_unspecified),
    ("loopback", lambda ip: ip.is_loopback),
    ("link-local", lambda ip: ip.is_link_local),
    ("multicast", lambda ip: ip.is_multicast),
    ("private", lambda ip: ip.is_private),
    ("reserved", lambda ip: ip.is_reserved),
)


@dataclass(frozen=True)
class Destination:
    """A host as the user named it, and the addresses it resolved to that passed the guard."""

    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def resolve(host: str, port: int, *, allow_private: bool) -> Destination:
    """Resolve `host` (a name or an address in any spelling getaddrinfo takes, such as `2130706433`)
    and check every address it gives; refuse the host if any of them is not public.

    One private address among public ones refuses the host: a name that answers both is a rebinding
    attempt, or a misconfiguration that would connect somewhere unintended half of the time.
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UnresolvableHost(f"host {host!r} does not resolve") from None
    addresses = tuple(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    if not allow_private:
        for ip in addresses:
            reason = refusal(ip)
            if reason is not None:
                # the kind of address, not the address: what the server's DNS answers for internal names
                # is not the API user's to learn
                raise BlockedAddress(f"host {host!r} resolves to a {reason} address; API users may only "
                                     "reach public addresses (ALLOW_PRIVATE_NETWORKS=true allows others)")
    return Destination(host=host, port=port, addresses=addresses)


def connect(destination: Destination, *, timeout: float) -> socket.socket:
    """A TCP connection to the first checked address of `destination` that answers, within `timeout` in all
    (each address gets what the ones before it left)."""
    deadline = time.monotonic() + timeout
    error: OSError | None = None
    for ip in destination.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            return socket.create_connection((str(ip), destination.port), timeout=remaining)
        except OSError as e:
            error = e
    raise error or socket.timeout(f"no address of {destination.host!r} answered within {timeout:g}s")
