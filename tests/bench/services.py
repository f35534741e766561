"""The processes a benchmark starts: the harness's SMTP sink, coldmail, the seed reference, and
the harness commands themselves. Each runs in its own session (Ctrl-C reaches only us, and we
stop them in order) and each `stop()` is safe to call twice, so an ExitStack can always clean up."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .workdir import ROOT, BenchError, Workdir, log

PG_ADMIN = dict(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
REDIS_HOST = "127.0.0.1:6379"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, *, timeout_s: float, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}; see {log_path}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{what} did not answer {url} in {timeout_s:.0f}s; see {log_path}:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen | None, *, timeout_s: float) -> None:
    """SIGTERM the leader, wait, then SIGKILL its whole process group."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


class Sink:
    """`harness.py sink` on free ports; one sink serves every figure (subjects carry a run id)."""

    def __init__(self, wd: Workdir, logs: Path) -> None:
        self.smtp_port, self.control_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.control_port}"
        self.log_path = logs / "sink.log"
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [wd.python, wd.harness, "sink", "--port", str(self.smtp_port),
                 "--control-port", str(self.control_port)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(self.url + "/stats", self.proc, timeout_s=30, what="the sink", log_path=self.log_path)
        log(f"sink on smtp://127.0.0.1:{self.smtp_port} (pid {self.proc.pid})")

    def stop(self) -> None:
        stop_process(self.proc, timeout_s=10)


class Coldmail:
    """`python run.py` (API, scheduler and in-process worker) on its own database and Redis db."""

    def __init__(self, *, source: Path, logs: Path, sink: Sink, database: str, redis_db: int, api_key: str,
                 extra_env: dict[str, str]) -> None:
        self.source, self.logs, self.sink, self.api_key = source, logs, sink, api_key
        self.database, self.redis_db = database, redis_db
        self.database_url = f"postgresql://postgres@127.0.0.1:5432/{database}"
        self.redis_url = f"redis://{REDIS_HOST}/{redis_db}"
        self.extra_env = extra_env
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start_fresh(self, label: str) -> None:
        """Stop it if running, drop its database and flush its Redis db, start it again."""
        self.stop()
        self.reset()
        self.port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1", DATABASE_URL=self.database_url, REDIS_URL=self.redis_url,
                   SMTP_URL=f"smtp://127.0.0.1:{self.sink.smtp_port}", RATE_LIMIT_PER_HOUR="1000000",
                   # the harness sends from one sender: neither its cap nor its share of the workers is measured
                   SENDER_CONCURRENCY="1000",
                   COLDMAIL_API_KEYS=self.api_key, HOST="127.0.0.1", PORT=str(self.port),
                   SHUTDOWN_SECONDS="5", **self.extra_env)
        if self.source != ROOT:
            env["COLDMAIL_NO_BOOTSTRAP"] = "1"  # an exported tree has no .venv: use ours
        log_path = self.logs / f"coldmail-{label}.log"
        with open(log_path, "ab") as out:
            # cwd is the work folder, so a developer's .env in the repository does not leak in
            self.proc = subprocess.Popen([sys.executable, str(self.source / "run.py")], cwd=self.logs, env=env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(self.url + "/healthz", self.proc, timeout_s=60, what="coldmail", log_path=log_path)
        log(f"coldmail on {self.url} (pid {self.proc.pid}, database {self.database}, redis db {self.redis_db})")

    def stop(self) -> None:
        stop_process(self.proc, timeout_s=20)
        self.proc = None

    def reset(self) -> None:
        import psycopg2
        import redis

        conn = psycopg2.connect(**PG_ADMIN)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            conn.close()
        client = redis.Redis.from_url(self.redis_url)
        try:
            client.flushdb()  # our own db only
        finally:
            client.close()


class Reference:
    """The seed reference through its own `seedctl.sh` (its database bench_seed, Redis db 14)."""

    redis_url = f"redis://{REDIS_HOST}/14"

    def __init__(self, wd: Workdir, *, sink: Sink) -> None:
        self.wd, self.sink = wd, sink
        self.port = 0
        self.pid = 0
        self.env = dict(os.environ)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ctl(self, *args: str) -> str:
        done = subprocess.run(["bash", self.wd.seedctl, *args], env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
        if done.returncode != 0:
            raise BenchError(f"seedctl.sh {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def start_fresh(self, label: str, **config: str) -> None:
        self.stop()
        self._ctl("reset")
        self.port = free_port()
        self.env["SEED_PORT"] = str(self.port)
        settings = {"SMTP_PORT": str(self.sink.smtp_port), **config}
        self.pid = int(self._ctl("start", *(f"{k}={v}" for k, v in settings.items())).split()[-1])
        log(f"reference ({label}{', ' if config else ''}{' '.join(f'{k}={v}' for k, v in config.items())}) "
            f"on {self.url} (pid {self.pid})")

    def stop(self) -> None:
        self._ctl("stop")
        self.pid = 0

    def reset(self) -> None:
        self._ctl("reset")


def run_harness(wd: Workdir, command: str, args: list[str], *, json_out: Path) -> dict:
    """Run one harness subcommand (progress on our stderr) and return its JSON result line."""
    argv = [wd.python, wd.harness, command, *args, "--json-out", str(json_out)]
    log("$ " + " ".join(argv[1:]))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate()
    except BaseException:
        stop_process(proc, timeout_s=5)
        raise
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise BenchError(f"harness {command} failed ({proc.returncode})")
    return json.loads(lines[-1])
