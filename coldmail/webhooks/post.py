"""One POST to an endpoint, through the outbound guard (coldmail.net).

aiohttp's client with a resolver that is coldmail.net.resolve: every address a
name resolves to must be public (unless ALLOW_PRIVATE_NETWORKS=true), and the
connection goes to an address that was checked, resolved anew for every attempt
(DNS may have changed since the endpoint was registered: no cache). aiohttp
does not ask its resolver about an IP literal, so those are checked here first.
No redirect is followed (a 3xx is a failed attempt), nothing is read from the
answer but its status, and the whole exchange has TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from .. import net
from ..errors import BadRequest

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Answer:
    """What came of one attempt: the status code (None if none came) and, unless 2xx, why it failed."""

    code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


class GuardedResolver(AbstractResolver):
    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        destination = await loop.run_in_executor(
            None, functools.partial(net.resolve, host, port, allow_private=self.allow_private))
        return [ResolveResult(hostname=host, host=str(ip), port=port,
                              family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)
                for ip in destination.addresses]

    async def close(self) -> None:
        """Nothing held."""


def check_url(url: str, *, allow_private: bool) -> None:
    """https only unless ALLOW_PRIVATE_NETWORKS (then http too); BadRequest otherwise."""
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise BadRequest("a webhook URL must be https://host/… (http:// only with ALLOW_PRIVATE_NETWORKS=true)")


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool) -> Answer:
    """POST `body`; an Answer, never an exception for what the endpoint or the network does."""
    try:
        check_url(url, allow_private=allow_private)
        parts = urlsplit(url)
        if _is_literal(parts.hostname):
            await asyncio.get_running_loop().run_in_executor(None, functools.partial(
                net.resolve, parts.hostname, parts.port or 443, allow_private=allow_private))
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=allow_private),
                                         use_dns_cache=False, force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                                         trust_env=False, cookie_jar=aiohttp.DummyCookieJar()) as session:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                code = response.status
    except BadRequest as e:  # the guard refused the address (its message names no address)
        return Answer(code=None, error=str(e))
    except asyncio.TimeoutError:
        return Answer(code=None, error=f"no answer within {TIMEOUT_S:g}s")
    except aiohttp.ClientConnectorError as e:
        cause = e.__cause__ if isinstance(e.__cause__, BadRequest) else None
        return Answer(code=None, error=str(cause) if cause else f"cannot connect: {e.os_error.strerror or e}")
    except (aiohttp.ClientError, OSError) as e:
        return Answer(code=None, error=f"{type(e).__name__}: {e}")
    if 200 <= code < 300:
        return Answer(code=code, error=None)
    return Answer(code=code, error=f"HTTP {code}")
