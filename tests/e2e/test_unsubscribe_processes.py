"""One-click unsubscribe with real processes: `python run.py` with a dramatiq worker child, no
COLDMAIL_SECRET_KEY. The worker process signs the link it writes into the message with the key stored in the
database; the API process, and after a restart new processes, verify it."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.support.db import sql
from tests.support.payloads import email
from tests.support.processes import start_run_py, wait_healthy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def fetch(url: str, *, data: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_link_a_worker_process_wrote_unsubscribes_at_the_api_before_and_after_a_restart(
        base_env, sink, port, http):
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    env.pop("COLDMAIL_SECRET_KEY", None)
    proc = start_run_py(env)
    try:
        wait_healthy(http.base_url, proc)
        # Given an email sent by the worker process, and another to the same recipient for much later
        status, body = http.post("/emails", email("first", body="Bye: {{unsubscribe_url}}"))
        assert status == 201, body
        email_id = int(body["jobId"])
        status, later = http.post("/emails", email("later", scheduledAt="2099-01-01T00:00:00Z"))
        assert status == 201, later
        wait_for(lambda: sink.arrivals, timeout_s=20, what="the message")
        message = sink.arrivals[0].message
        link = message["List-Unsubscribe"].strip().strip("<>")
        assert link.startswith(f"http://127.0.0.1:{port}/u/") and link in message.get_content()
    finally:
        assert proc.terminate() == 0, proc.output()

    # When the service is started again (new API and worker processes, the same database)
    proc = start_run_py(env)
    try:
        wait_healthy(http.base_url, proc)
        # Then the link's page is there, and its one-click POST suppresses the recipient
        assert fetch(link)[0] == 200
        status, answer = fetch(link, data=b"List-Unsubscribe=One-Click")
        assert status == 200, answer
        assert sql("SELECT reason, email_id FROM suppressions") == [("unsubscribed", email_id)]
        assert sql("SELECT status FROM emails WHERE id = %s", int(later["jobId"])) == [("SUPPRESSED",)]
        # And the link with one character changed is not found
        forged = link[:-3] + ("A" if link[-3] != "A" else "B") + link[-2:]
        assert fetch(forged, data=b"List-Unsubscribe=One-Click")[0] == 404
    finally:
        assert proc.terminate() == 0, proc.output()
