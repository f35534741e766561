"""What the lateness and backlog benchmarks share: a throwaway database, a Redis db of their own, an
in-process SMTP sink that notes when each message arrived, coldmail's real processes, and percentiles.

Lateness is measured where a user would: the sink's arrival time minus the email's scheduledAt.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from pathlib import Path

import psycopg2
import redis

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "bench-key-0123456789"
MARKER = "coldmail:bench-db"
#: the tests' marker: a db that coldmail's tests use may be borrowed when no test runs on it
TEST_MARKER = "coldmail:test-db"
PG_SERVER = os.environ.get("COLDMAIL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("COLDMAIL_BENCH_REDIS", "redis://127.0.0.1:6379")


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles_ms(values_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max (nearest rank) of `values_s`, in milliseconds."""
    ordered = sorted(values_s)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ordered[-1] * 1000,
            "min": ordered[0] * 1000}


class ThrowawayDatabase:
    """A PostgreSQL database made for one run and dropped after it."""

    def __init__(self, label: str) -> None:
        self.name = f"coldmail_bench_{label}_{os.getpid()}"
        self.url = f"{PG_SERVER}/{self.name}"

    def __enter__(self) -> ThrowawayDatabase:
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        conn = psycopg2.connect(f"{PG_SERVER}/postgres")
        try:
            conn.autocommit = True
            conn.cursor().execute(statement)
        finally:
            conn.close()

    def connect(self):
        return psycopg2.connect(self.url)


class BenchRedis:
    """A Redis db for the benchmark: refused if it holds keys that are not a benchmark's, flushed per run."""

    def __init__(self, db: int) -> None:
        self.db = db
        self.url = f"{REDIS_SERVER}/{db}"
        self.client = redis.Redis.from_url(self.url)
        if self.client.dbsize() and not self.client.exists(MARKER, TEST_MARKER):
            raise SystemExit(f"Redis db {db} holds keys that are not a coldmail benchmark's: pick an empty one "
                             "with --redis-db")
        #: the markers found are kept through flushes, so that a borrowed test db stays usable by its tests
        self.markers = [m for m in (MARKER, TEST_MARKER) if self.client.exists(m)] or [MARKER]

    def flush(self) -> None:
        self.client.flushdb()  # this db only
        for marker in self.markers:
            self.client.set(marker, "1")

    def key_bytes(self) -> int:
        """Bytes held by this db's keys (MEMORY USAGE summed): the growth that is ours on a shared server."""
        return sum(self.client.memory_usage(key, samples=0) or 0 for key in self.client.scan_iter(count=1000))

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])


@dataclass
class Sink:
    """aiosmtpd on a free port; arrivals by subject with the time the message was taken."""

    port: int = field(default_factory=free_port)
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):
        at = time.time()
        subject = message_from_bytes(envelope.original_content or envelope.content)["Subject"]
        with self.lock:
            self.arrivals.setdefault(subject, []).append(at)
        return "250 OK"

    def __enter__(self) -> Sink:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(len(v) for k, v in self.arrivals.items() if k.startswith(prefix))

    def first_arrivals(self, prefix: str) -> dict[str, float]:
        with self.lock:
            return {k: v[0] for k, v in self.arrivals.items() if k.startswith(prefix)}

    def duplicates(self, prefix: str) -> int:
        with self.lock:
            return sum(len(v) - 1 for k, v in self.arrivals.items() if k.startswith(prefix))


class Coldmail:
    """`python run.py` (all-in-one), or `run.py api` plus `dramatiq coldmail.worker`, on the rig's services."""

    def __init__(self, *, database_url: str, redis_url: str, smtp_url: str, env: dict[str, str],
                 split: bool = False, worker_processes: int = 1, worker_threads: int = 8) -> None:
        self.port = free_port()
        self.env = dict(os.environ, COLDMAIL_NO_BOOTSTRAP="1", PYTHONUNBUFFERED="1", DATABASE_URL=database_url,
                        REDIS_URL=redis_url, SMTP_URL=smtp_url, PORT=str(self.port), COLDMAIL_API_KEYS=API_KEY,
                        RATE_LIMIT_PER_HOUR="10000000", LOG_LEVEL="warning", **env)
        self.split = split
        self.worker_argv = [str(Path(sys.executable).with_name("dramatiq")), "coldmail.worker", "--processes",
                            str(worker_processes), "--threads", str(worker_threads)]
        self.procs: list[subprocess.Popen] = []
        self.logs = tempfile.mkdtemp(prefix="coldmail-bench-")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self, argv: list[str], name: str) -> subprocess.Popen:
        out = open(Path(self.logs) / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Coldmail:
        api = self._start([sys.executable, str(ROOT / "run.py"), "api" if self.split else "all"], "api")
        if self.split:
            self._start(self.worker_argv, "worker")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if api.poll() is not None:
                raise SystemExit(f"coldmail exited with {api.returncode}; see {self.logs}/api.log")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"coldmail did not answer in 60 s; see {self.logs}/api.log")
        time.sleep(1.5)  # the worker's consumers are polling
        return self

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {API_KEY}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def schedule(self, emails: list[dict], *, batch: int = 1000, concurrency: int = 4) -> float:
        """POST /emails/batch in chunks; return the seconds it took."""
        chunks = [emails[i:i + batch] for i in range(0, len(emails), batch)]
        started = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda chunk: self.post("/emails/batch", {"emails": chunk}), chunks))
        return time.monotonic() - started


def email(subject: str, at: datetime) -> dict:
    return {"recipient": "bench@example.com", "subject": subject, "body": "Hello from the benchmark",
            "senderId": "bench", "scheduledAt": at.isoformat()}


def spread(prefix: str, n: int, *, lead_s: float, over_s: float) -> tuple[list[dict], dict[str, float]]:
    """`n` emails due evenly from `lead_s` to `lead_s + over_s` from now; and each one's due time (epoch s)."""
    start = datetime.now(timezone.utc) + timedelta(seconds=lead_s)
    emails, due = [], {}
    for i in range(n):
        at = start + timedelta(seconds=over_s * i / max(1, n - 1))
        subject = f"{prefix}-{i}"
        emails.append(email(subject, at))
        due[subject] = at.timestamp()
    return emails, due


def wait_arrivals(sink: Sink, prefix: str, n: int, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while sink.count(prefix) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {sink.count(prefix)} of {n} '{prefix}' emails arrived in {timeout_s:.0f}s")
        time.sleep(0.1)


def warm_up(cm: Coldmail, sink: Sink, n: int, *, prefix: str = "warmup") -> None:
    """Send `n` emails due now and wait for them: each worker thread opens its SMTP and PostgreSQL
    connections, so the figures that follow are the steady state's, not a cold start's."""
    if n:
        cm.schedule([email(f"{prefix}-{i}", datetime.now(timezone.utc)) for i in range(n)])
        wait_arrivals(sink, prefix, n, timeout_s=60)


def lateness_s(sink: Sink, prefix: str, due: dict[str, float]) -> list[float]:
    return [at - due[subject] for subject, at in sink.first_arrivals(prefix).items()]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
