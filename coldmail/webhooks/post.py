"""One POST to an endpoint, through the outbound guard (coldmail.net).

aiohttp's client with a resolver that is coldmail.net.resolve: every address a
name resolves to must be public (unless ALLOW_PRIVATE_NETWORKS=true), and a
connection is opened only to an address that was checked (DNS may have changed
since the endpoint was registered). A worker thread's Poster keeps one event
loop and one ClientSession for all its posts, keeps a checked resolution for
RESOLVED_TTL_S per host (the host is resolved and checked anew once that runs
out; a refusal is never kept), and keeps a connection to an endpoint open for
the next post, KEEPALIVE_S at most when idle: a TCP (and TLS) handshake per post
cost more than the post. A kept connection still goes to the address that was
checked when it was opened. POST /webhooks/{id}/test resolves anew and opens a
connection of its own every time. aiohttp does not ask its resolver about an IP
literal, so those are checked here first.
No redirect is followed (a 3xx is a failed attempt), nothing is read from the
answer but its status, and the whole exchange has TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from .. import net
from ..errors import BadRequest

TIMEOUT_S = 10.0
#: how long a worker keeps a host's checked addresses before resolving and checking it again
RESOLVED_TTL_S = 30.0
#: how long an idle connection to an endpoint is kept for the next post: below the shortest idle timeout
#: common servers apply (Node's 5 s), so that a post rarely meets a connection the server is closing
KEEPALIVE_S = 4.0


@dataclass(frozen=True)
class Answer:
    """What came of one attempt: the status code (None if none came) and, unless 2xx, why it failed."""

    code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Request:
    """One post of a batch: `headers()` is called as the post starts (each attempt is signed at its time)."""

    url: str
    body: bytes
    headers: Callable[[], dict[str, str]]


class CheckedCache:
    """Checked resolutions (net.Destination) per host and port, each kept RESOLVED_TTL_S; refusals are not
    kept. Shared by a process's threads."""

    def __init__(self, ttl_s: float = RESOLVED_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, int, bool], tuple[float, net.Destination]] = {}

    def get(self, host: str, port: int, allow_private: bool) -> net.Destination | None:
        with self._lock:
            kept = self._kept.get((host, port, allow_private))
        if kept is None or kept[0] <= time.monotonic():
            return None
        return kept[1]

    def put(self, destination: net.Destination, allow_private: bool) -> None:
        with self._lock:
            if len(self._kept) > 1000:
                self._kept.clear()
            self._kept[(destination.host, destination.port, allow_private)] = (
                time.monotonic() + self.ttl_s, destination)

    def resolve(self, host: str, port: int, *, allow_private: bool) -> net.Destination:
        """net.resolve, or what it answered less than ttl_s ago for the same host and port."""
        destination = self.get(host, port, allow_private)
        if destination is None:
            destination = net.resolve(host, port, allow_private=allow_private)  # BadRequest if refused
            self.put(destination, allow_private)
        return destination


class GuardedResolver(AbstractResolver):
    def __init__(self, *, allow_private: bool, cache: CheckedCache | None = None) -> None:
        self.allow_private = allow_private
        self.cache = cache

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        destination = self.cache.get(host, port, self.allow_private) if self.cache else None
        if destination is None:
            loop = asyncio.get_running_loop()
            destination = await loop.run_in_executor(
                None, functools.partial(net.resolve, host, port, allow_private=self.allow_private))
            if self.cache:
                self.cache.put(destination, self.allow_private)
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


def _session(resolver: GuardedResolver, *, keep_alive: bool = False) -> aiohttp.ClientSession:
    connector = (aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, keepalive_timeout=KEEPALIVE_S)
                 if keep_alive else aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True))
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                                 trust_env=False, cookie_jar=aiohttp.DummyCookieJar())


async def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool,
               session: aiohttp.ClientSession | None = None, cache: CheckedCache | None = None) -> Answer:
    """POST `body`; an Answer, never an exception for what the endpoint or the network does. Without
    `session`, one is opened for this post alone (its resolver keeps nothing); with one, it must have been
    made by _session with a resolver of the same allow_private, and `cache` is that resolver's."""
    try:
        check_url(url, allow_private=allow_private)
        parts = urlsplit(url)
        if _is_literal(parts.hostname):
            port = parts.port or 443
            if cache is None or cache.get(parts.hostname, port, allow_private) is None:
                destination = await asyncio.get_running_loop().run_in_executor(None, functools.partial(
                    net.resolve, parts.hostname, port, allow_private=allow_private))
                if cache is not None:
                    cache.put(destination, allow_private)
        if session is not None:
            code = await _post_with(session, url, body, headers)
        else:
            async with _session(GuardedResolver(allow_private=allow_private)) as own:
                code = await _post_with(own, url, body, headers)
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


async def _post_with(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> int:
    async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
        return response.status


class Poster:
    """A worker thread's way to post: one event loop and one ClientSession for all its posts (not one per
    post), which keeps connections alive between posts and whose resolver keeps checked addresses in `cache`
    (shared by the process's Posters). `close()` when the thread is done with it."""

    def __init__(self, *, allow_private: bool, cache: CheckedCache) -> None:
        self.allow_private = allow_private
        self.cache = cache
        self.loop = asyncio.new_event_loop()
        self.session: aiohttp.ClientSession | None = None

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        return self.loop.run_until_complete(self._post(url, body, headers))

    def post_many(self, requests: list[Request], *, per_endpoint: int, start_by: float) -> list[Answer | None]:
        """Post `requests`, the answers in their order. Each endpoint (URL) gets its first post alone, then,
        if that one was answered with a 2xx, up to `per_endpoint` at once, started in order; one that fails
        or hangs gets one at a time. None for a request not started by `start_by` (time.monotonic())."""
        return self.loop.run_until_complete(self._post_many(requests, per_endpoint, start_by))

    async def _post_many(self, requests: list[Request], per_endpoint: int, start_by: float) -> list[Answer | None]:
        answers: list[Answer | None] = [None] * len(requests)

        async def one(i: int) -> None:
            if time.monotonic() <= start_by:
                request = requests[i]
                answers[i] = await self._post(request.url, request.body, request.headers())

        async def endpoint(indexes: list[int]) -> None:
            await one(indexes[0])
            first = answers[indexes[0]]
            width = asyncio.Semaphore(per_endpoint if first is not None and first.ok else 1)

            async def limited(i: int) -> None:
                async with width:
                    await one(i)

            await asyncio.gather(*(limited(i) for i in indexes[1:]))

        by_url: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            by_url.setdefault(request.url, []).append(i)
        await asyncio.gather(*(endpoint(indexes) for indexes in by_url.values()))
        return answers

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        if self.session is None or self.session.closed:
            self.session = _session(GuardedResolver(allow_private=self.allow_private, cache=self.cache),
                                    keep_alive=True)
        else:
            # the loop ran only during posts: let it see what the kept connections received meanwhile (an
            # endpoint that closed one), so that the post below does not go out on a closed connection
            await asyncio.sleep(0)
        return await post(url, body, headers, allow_private=self.allow_private, session=self.session,
                          cache=self.cache)

    def close(self) -> None:
        """Close the session (its kept connections) and the loop; safe to call twice."""
        if self.loop.is_closed():
            return
        if self.session is not None and not self.session.closed:
            self.loop.run_until_complete(self.session.close())
        self.loop.close()
