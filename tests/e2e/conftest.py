"""Fixtures for tests that run coldmail as real processes."""

from __future__ import annotations

import pytest

from tests.support.http import Http
from tests.support.processes import start_dramatiq, start_run_py, stop, wait_healthy, wait_worker_ready


@pytest.fixture
def http(port):
    return Http(f"http://127.0.0.1:{port}")


@pytest.fixture
def api_and_worker(base_env, sink, port, http):
    """`run.py api` and one Dramatiq worker process of 4 threads, sending to the sink: the races' stage."""
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port))
    api = start_run_py(env, "api")
    worker = start_dramatiq(env, processes=1, threads=4)
    try:
        wait_healthy(http.base_url, api)
        wait_worker_ready(worker)
        yield
    finally:
        stop(worker, api)
