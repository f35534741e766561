"""/u/{token}: one-click unsubscribe (RFC 8058), reached without an API key (the token is the credential).

POST is what mailbox providers send (a form body `List-Unsubscribe=One-Click`;
any body is taken, none is read) and what the page's button sends: the recipient
goes on the email's account's suppression list at once. GET only shows that
button, because link scanners and previews fetch every link they see.

A token that is not ours is 404 in the form its caller reads: a JSON error for a
POST (a provider's machine, like every API client, reads the API's error shape),
a small HTML page for a GET (a person's browser, which would show JSON as text).
"""

from __future__ import annotations

from aiohttp import web

from .. import metrics
from ..db import unsubscribes
from ..errors import NotFound
from ..unsubscribe.links import PATH_PREFIX, Links
from ..unsubscribe.page import confirm_page, done_page, not_found_page
from .context import AppContext, ctx_key

routes = web.RouteTableDef()
links_key = web.AppKey("unsubscribe_links", Links)


def _html(request: web.Request, page: str, *, status: int = 200) -> web.Response:
    """A page that keeps its link to itself: never cached, never sent on as a Referer, never framed; it may
    only post to the links themselves."""
    base = request.app[links_key].base
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8", headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": f"default-src 'none'; form-action 'self' {base}{PATH_PREFIX}; "
                                   "frame-ancestors 'none'; base-uri 'none'"})


def _wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


@routes.get(PATH_PREFIX + "{token}")
async def unsubscribe_page(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    links = request.app[links_key]
    token = request.match_info["token"]

    def find() -> bool:
        links.ready()
        named = links.email_of(token)
        return named is not None and unsubscribes.email_exists(*named)

    if not await ctx.run_db(find):
        return _html(request, not_found_page(), status=404)
    # the button posts to the very link that was followed (it verified: only base64url characters)
    return _html(request, confirm_page(f"{links.base}{PATH_PREFIX}{token}"))


@routes.post(PATH_PREFIX + "{token}")
async def unsubscribe(request: web.Request) -> web.Response:
    ctx: AppContext = request.app[ctx_key]
    links = request.app[links_key]
    token = request.match_info["token"]

    def run() -> bool | None:
        links.ready()
        named = links.email_of(token)
        return None if named is None else unsubscribes.unsubscribe(*named)

    first = await ctx.run_db(run)
    if first is None:
        raise NotFound("no such unsubscribe link")
    if first:
        metrics.UNSUBSCRIBES.inc()
    if _wants_html(request):
        return _html(request, done_page())
    return web.json_response({"status": "unsubscribed"})
