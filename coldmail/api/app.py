"""The aiohttp app factory: it receives settings and the queue, builds the services handlers ask, and owns
its resources in cleanup_ctx."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from ..crypto import PasswordBox
from ..intake.service import Intake
from ..mailbox.poller import MailboxPoller
from ..metrics import scrape_registry
from ..queue.setup import Queue
from ..scheduler import start_scheduler
from ..senders import Senders
from ..settings import Settings
from ..stored_secrets import check_at_start
from ..unsubscribe.links import links_for
from ..webhooks.handover import WebhookHandOver
from . import inbound, senders, suppressions, unsubscribe, webhooks
from .auth import KeyChecker, auth_middleware
from .body import MAX_BODY_BYTES
from .context import AppContext, ctx_key
from .errors import errors_middleware
from .handlers import metrics_key, routes
from .metrics_middleware import metrics_middleware

log = logging.getLogger(__name__)


async def _plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp names itself and Python in Server:, with their versions: a map to known flaws, and nothing a
    client needs."""
    response.headers["Server"] = "coldmail"


def create_app(settings: Settings, queue: Queue, *, with_scheduler: bool = True) -> web.Application:
    executor = ThreadPoolExecutor(max_workers=settings.db_pool_size, thread_name_prefix="coldmail-db")
    caps = queue.handover.caps
    intake = Intake(settings=settings, handover=queue.handover, caps=caps)
    ctx = AppContext(settings=settings, executor=executor, intake=intake,
                     senders=Senders(settings=settings, caps=caps, intake=intake), redis=queue.broker.client)
    checker = KeyChecker(settings.api_keys, ctx.run)
    app = web.Application(client_max_size=MAX_BODY_BYTES,
                          middlewares=[metrics_middleware, errors_middleware, auth_middleware(checker)])
    app.on_response_prepare.append(_plain_server_header)
    app[ctx_key] = ctx
    app[metrics_key] = scrape_registry(settings)
    app.add_routes(routes)
    app.add_routes(senders.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(suppressions.routes)
    app.add_routes(inbound.routes)
    app[unsubscribe.links_key] = links_for(settings)
    app.add_routes(unsubscribe.routes)

    async def executor_ctx(app: web.Application):
        yield
        intake.close()
        executor.shutdown(wait=True, cancel_futures=False)

    app.cleanup_ctx.append(executor_ctx)

    async def secrets_ctx(app: web.Application):
        """Say at start which senders' stored secrets no configured key opens (a changed key holds their
        emails), and let go those held for secrets that open again."""
        try:
            await ctx.run(check_at_start, PasswordBox(settings.secret_keys))
        except Exception as e:  # noqa: BLE001 - a check, not a reason to refuse to start
            log.warning("stored secrets not checked at start: %s", e)
        yield

    app.cleanup_ctx.append(secrets_ctx)

    if with_scheduler:
        async def scheduler_ctx(app: web.Application):
            poller = MailboxPoller(settings)
            scheduler = start_scheduler(settings, queue.handover, WebhookHandOver(settings, queue.webhook_actor),
                                        poller)
            log.info("scheduler started: hand-over every %.2fs, horizon %.0fs, mailboxes read every %gs",
                     settings.handover_interval_s, settings.handover_horizon_s, settings.imap_poll_s)
            yield
            scheduler.shutdown(wait=True)
            await asyncio.get_running_loop().run_in_executor(None, poller.stop)

        app.cleanup_ctx.append(scheduler_ctx)
    return app
