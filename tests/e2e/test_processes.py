"""The processes of the contract, started as a user starts them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from tests.support.payloads import email
from tests.support.processes import ROOT, Proc, start_dramatiq, start_run_py, wait_healthy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_run_py_sends_at_the_scheduled_second_and_stops_cleanly_on_sigterm(base_env, sink, port, http):
    # Given the all-in-one process pointed at an SMTP sink
    proc = start_run_py(dict(base_env, SMTP_URL=sink.url, PORT=str(port)))
    try:
        wait_healthy(http.base_url, proc)
        # When an email is scheduled two seconds ahead
        due = datetime.now(timezone.utc) + timedelta(seconds=2)
        status, body = http.post("/schedule-email", email("e2e-1", scheduledAt=due.isoformat()))
        assert status == 201, body
        # Then it arrives once, in that second
        wait_for(lambda: sink.arrivals, timeout_s=15, what="arrival at the sink")
        arrival = sink.arrivals[0]
        assert due.timestamp() <= arrival.at < due.timestamp() + 1
        assert arrival.message["Message-ID"] and arrival.message["Date"]
        time.sleep(0.5)
        assert len(sink.arrivals) == 1
    finally:
        # And SIGTERM stops it promptly with exit code 0
        started = time.monotonic()
        code = proc.terminate(timeout_s=15)
        assert code == 0, proc.output()
        assert time.monotonic() - started < 10


def test_run_py_without_smtp_url_writes_an_eml_at_the_scheduled_second(base_env, port, http, tmp_path):
    outbox = tmp_path / "outbox"
    proc = start_run_py(dict(base_env, OUTBOX_DIR=str(outbox), PORT=str(port)))
    try:
        wait_healthy(http.base_url, proc)
        due = datetime.now(timezone.utc) + timedelta(seconds=2)
        status, body = http.post("/schedule-email", email("e2e-outbox", scheduledAt=due.isoformat()))
        assert status == 201
        eml = outbox / f"{body['jobId']}.eml"
        wait_for(eml.exists, timeout_s=15, interval_s=0.01, what=str(eml))
        assert due.timestamp() - 0.01 <= eml.stat().st_mtime < due.timestamp() + 1
        assert "Subject: e2e-outbox" in eml.read_text()
    finally:
        proc.terminate()


def test_api_process_with_dramatiq_cli_workers(base_env, sink, port, http):
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port))
    api = start_run_py(env, "api")
    workers = start_dramatiq(env, processes=2, threads=2)
    try:
        wait_healthy(http.base_url, api)
        ids = [http.post("/emails", email(f"cli-{i}"))[1]["jobId"] for i in range(10)]
        wait_for(lambda: len(sink.arrivals) >= 10, timeout_s=30, what="10 arrivals")
        # (a send is recorded a moment after the relay has it: the recorder commits sends in groups)
        wait_for(lambda: all(http.get(f"/emails/{job_id}")[1]["status"] == "SENT" for job_id in ids),
                 timeout_s=5, what="all 10 recorded SENT")
        assert sorted(sink.subjects()) == sorted(f"cli-{i}" for i in range(10))
    finally:
        codes = (workers.terminate(), api.terminate())
    assert codes == (0, 0), workers.output() + api.output()


def run_cli(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, capture_output=True, text=True,
                          env={**__import__("os").environ, "COLDMAIL_NO_BOOTSTRAP": "1", **env}, timeout=timeout)


def test_bad_config_stops_start_up_naming_the_variable(base_env):
    result = run_cli(dict(base_env, RATE_LIMIT_PER_HOUR="lots"), "api")
    assert result.returncode == 2
    assert "RATE_LIMIT_PER_HOUR" in result.stderr and "Traceback" not in result.stderr


def test_missing_postgres_names_the_url_and_how_to_start_it(base_env, port):
    url = f"postgresql://postgres@127.0.0.1:{port}/coldmail"
    result = run_cli(dict(base_env, DATABASE_URL=url), "api")
    assert result.returncode == 3
    assert url in result.stderr and "pg_ctlcluster" in result.stderr and "Traceback" not in result.stderr


def test_missing_redis_names_the_url_and_how_to_start_it(base_env, port):
    url = f"redis://127.0.0.1:{port}/0"
    result = run_cli(dict(base_env, REDIS_URL=url, PORT=str(port)), "api")
    assert result.returncode == 3
    assert url in result.stderr and "redis-server" in result.stderr and "Traceback" not in result.stderr


def test_migrate_creates_a_missing_database_and_create_api_key_prints_a_working_key_of_its_account(base_env, sink, port, http):
    name = f"coldmail_e2e_{port}"
    url = base_env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + name
    env = dict(base_env, DATABASE_URL=url, COLDMAIL_API_KEYS="", SMTP_URL=sink.url, PORT=str(port))
    try:
        assert run_cli(env, "migrate").returncode == 0
        again = run_cli(env, "migrate")
        assert again.returncode == 0 and "up to date" in again.stdout
        made = run_cli(env, "create-api-key", "alice")
        assert made.returncode == 0
        key = made.stdout.strip()
        assert key.startswith("cm_") and len(key) > 30
        # And a key of another account, and a refused account name
        other = run_cli(env, "create-api-key", "bob", "--account", "acme")
        assert other.returncode == 0
        acme_key = other.stdout.strip()
        refused = run_cli(env, "create-api-key", "eve", "--account", "no:colons")
        assert refused.returncode == 2 and "account name" in refused.stderr
        proc = start_run_py(env)
        try:
            wait_healthy(http.base_url, proc)
            status, body = http.post("/emails", email("keyed"), key=key)
            assert status == 201
            assert http.post("/emails", email("keyed"), key="cm_wrong")[0] == 401
            # the acme key works, sees its own email only, and not the default account's
            assert http.get(f"/emails/{body['jobId']}", key=acme_key)[0] == 404
            assert http.get(f"/emails/{body['jobId']}", key=key)[0] == 200
            assert http.post("/emails", email("acme's"), key=acme_key)[0] == 201
            assert [i["subject"] for i in http.get("/emails", key=acme_key)[1]["items"]] == ["acme's"]
            assert key not in proc.output() and acme_key not in proc.output()
        finally:
            proc.terminate()
    finally:
        import psycopg2

        conn = psycopg2.connect(base_env["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres")
        conn.autocommit = True
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "supervisord").exists(), reason="supervisord not in .venv")
def test_supervisord_runs_api_and_worker_and_delivers(base_env, sink, port, http, tmp_path):
    # Given supervisord started with the repository's supervisord.conf, its var/ (socket, pid file, logs,
    # metrics) moved to a folder of this test's: two test runs in one checkout must not share a socket
    conf = (ROOT / "supervisord.conf").read_text()
    assert "%(here)s/var/supervisor.sock" in conf
    conf = conf.replace("%(here)s/var/", f"{tmp_path}/").replace("%(here)s", str(ROOT))
    (tmp_path / "supervisord.conf").write_text(conf)
    (tmp_path / "log").mkdir()
    (tmp_path / "metrics").mkdir()
    env = dict(base_env, SMTP_URL=sink.url, PORT=str(port))
    supervisor = Proc([str(ROOT / ".venv" / "bin" / "supervisord"), "-c", str(tmp_path / "supervisord.conf")],
                      env, "supervisord")
    try:
        wait_healthy(http.base_url, supervisor, timeout_s=40)
        # When an email is scheduled
        status, body = http.post("/emails", email("supervised"))
        assert status == 201
        # Then the supervised worker delivers it
        wait_for(lambda: sink.arrivals, timeout_s=30, what="delivery under supervisord")
        assert sink.subjects() == ["supervised"]
        # And the API's /metrics adds up the worker processes' figures
        def sent_total() -> float:
            with urllib.request.urlopen(http.base_url + "/metrics", timeout=5) as r:
                text = r.read().decode()
            return sum(float(line.split()[-1]) for line in text.splitlines()
                       if line.startswith("coldmail_emails_sent_total"))

        assert wait_for(lambda: sent_total() == 1.0, timeout_s=10, what="sent_total 1 in the API's /metrics")
    finally:
        supervisor.popen.send_signal(signal.SIGTERM)
        try:
            supervisor.popen.wait(60)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            pytest.fail("supervisord did not stop its programs within 60 s")
    assert supervisor.popen.returncode == 0, supervisor.output()
