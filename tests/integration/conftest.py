"""The service in this test process: API + scheduler + a Dramatiq worker, through aiohttp's test client."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient, TestServer

from coldmail.api.app import create_app
from coldmail.api.body import SERVER_OPTIONS
from coldmail.queue.setup import Queue, build_queue
from coldmail.serve import embedded_worker_ctx
from coldmail.settings import Settings


@dataclass
class Service:
    client: TestClient
    settings: Settings
    queue: Queue


@pytest.fixture
def make_service(aiohttp_client, make_settings, sink):
    async def make(*, worker: bool = True, scheduler: bool = True, **overrides) -> Service:
        overrides.setdefault("SMTP_URL", sink.url)
        if overrides["SMTP_URL"] is None:
            del overrides["SMTP_URL"]
        settings = make_settings(**overrides)
        queue = build_queue(settings)
        app = create_app(settings, queue, with_scheduler=scheduler)
        if worker:
            app.cleanup_ctx.append(embedded_worker_ctx(settings, queue))
        server = TestServer(app)
        await server.start_server(**SERVER_OPTIONS)  # aiohttp_client would start it without them
        client = await aiohttp_client(server)
        return Service(client=client, settings=settings, queue=queue)

    return make


@pytest.fixture
async def service(make_service) -> Service:
    return await make_service()


@pytest.fixture
def client(service) -> TestClient:
    return service.client
