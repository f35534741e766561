"""COLDMAIL_SECRET_KEY with real processes: `python run.py` with a dramatiq worker child checks the stored
secrets at start, holds the email of a sender whose secret no key opens, and sends it once the key is back."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from cryptography.fernet import Fernet

from tests.support.db import event_kinds, sql
from tests.support.metrics import parse
from tests.support.payloads import email
from tests.support.processes import ROOT, start_run_py, wait_healthy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

K1, K2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
PASSWORD = "e2e-Secret-42"


def test_a_bad_key_in_the_list_stops_start_up_naming_its_position(base_env):
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "api"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**base_env, "COLDMAIL_NO_BOOTSTRAP": "1",
                                             "COLDMAIL_SECRET_KEY": f"{K1},{K2[:-3]}"})
    assert result.returncode == 2
    assert "COLDMAIL_SECRET_KEY (key 2 of 2)" in result.stderr and K2[:-3] not in result.stderr


def test_the_worker_holds_what_no_key_opens_and_sends_it_once_the_key_is_back(base_env, sink, port, http):
    # Given a sender whose relay password was sealed with K1, and a service started with K2 only
    sql("INSERT INTO senders (id, smtp_url, smtp_password_enc) VALUES ('k1sender', %s, %s)",
        sink.url, Fernet(K1).encrypt(PASSWORD.encode()).decode())
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port), RETRY_BACKOFF_SECONDS="60",
               RETRY_BACKOFF_MAX_SECONDS="120", COLDMAIL_SECRET_KEY=K2)
    proc = start_run_py(env)
    try:
        wait_healthy(http.base_url, proc)
        # Then its start-up log names the sender, never the secret
        wait_for(lambda: "1 of 1 open with no configured key" in proc.output(), timeout_s=10, what="the check")
        assert "'k1sender'" in proc.output()
        # When an email of that sender is due now
        status, body = http.post("/emails", email("held until K1 is back", senderId="k1sender"))
        assert status == 201, body
        email_id = int(body["jobId"])
        # Then the worker process holds it: PENDING, no attempt spent, a `held` event, counted
        wait_for(lambda: "held" in event_kinds(email_id), timeout_s=15, what="the hold")
        assert sql("SELECT status, attempts FROM emails WHERE id = %s", email_id) == [("PENDING", 0)]
        with urllib.request.urlopen(http.base_url + "/metrics", timeout=10) as resp:
            metrics = parse(resp.read().decode())
        assert metrics("coldmail_emails_held_total", reason="secret_unreadable") == 1
        # And GET flags the sender
        assert http.get("/senders/k1sender")[1]["secretReadable"] is False
        assert not sink.arrivals
    finally:
        assert proc.terminate() == 0, proc.output()
    assert PASSWORD not in proc.output()
    # When K1 is back after K2 and the service restarts
    proc = start_run_py(dict(env, COLDMAIL_SECRET_KEY=f"{K2},{K1}"))
    try:
        wait_healthy(http.base_url, proc)
        # Then the email goes now (its hold had nearly a minute to run), once
        wait_for(lambda: sink.arrivals, timeout_s=15, what="the held email's send")
        assert sink.subjects() == ["held until K1 is back"]
        # (the worker records a send just after the relay took it)
        wait_for(lambda: sql("SELECT status, attempts FROM emails WHERE id = %s", email_id) == [("SENT", 1)],
                 timeout_s=5, what="the send recorded")
    finally:
        proc.terminate()
    assert PASSWORD not in proc.output()
