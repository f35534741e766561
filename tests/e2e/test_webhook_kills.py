"""A worker SIGKILLed while it posts a webhook loses nothing: real `run.py api` and `dramatiq` processes, a
real receiver on loopback that never answers the first attempt. The delivery's claim runs out and it is
handed over again, with the same webhook-id."""

from __future__ import annotations

import time

import pytest
from cryptography.fernet import Fernet

from coldmail.webhooks.delivery import LEASE_S
from tests.support.db import sql
from tests.support.http import schedule
from tests.support.processes import start_dramatiq, start_run_py, stop, wait_healthy
from tests.support.receiver import Receiver
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_worker_sigkilled_mid_delivery_loses_nothing(base_env, sink, port, http):
    receiver = Receiver(hang=True).start()
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), COLDMAIL_SECRET_KEY=Fernet.generate_key().decode())
    api = start_run_py(env, "api")
    worker = None
    try:
        wait_healthy(http.base_url, api)
        status, hook = http.post("/webhooks", {"url": receiver.url, "events": ["email.sent"]})
        assert status == 201, hook
        # Given a worker posting an email.sent delivery to a receiver that does not answer
        worker = start_dramatiq(env, processes=1, threads=4)
        [email_id] = schedule(http, ["killed mid-delivery"])
        wait_for(lambda: receiver.received, timeout_s=30, what="the first attempt")
        assert sql("SELECT lease_until IS NOT NULL, attempts FROM webhook_deliveries") == [(True, 0)]
        # When the worker's process group is SIGKILLed mid-post, the receiver recovers, and a worker starts
        worker.kill()
        killed_at = time.monotonic()
        receiver.hang = False
        worker = start_dramatiq(env, processes=1, threads=4)
        # Then once the dead claim's lease ran out the delivery arrives again, with the same webhook-id
        wait_for(lambda: sql("SELECT status FROM webhook_deliveries") == [("delivered",)], timeout_s=LEASE_S + 20,
                 what="the delivery recorded delivered")
        assert time.monotonic() - killed_at < LEASE_S + 20
        assert len(receiver.received) == 2
        assert receiver.received[0].headers["webhook-id"] == receiver.received[1].headers["webhook-id"]
        assert receiver.received[1].json["data"]["email"]["id"] == email_id
        # And the attempt the kill cut short was never recorded: the one that counts is the second
        assert sql("SELECT attempts, last_status_code FROM webhook_deliveries") == [(1, 200)]
    finally:
        stop(worker, api)
        receiver.stop()
