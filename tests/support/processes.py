"""Real processes for end-to-end tests: run.py and the dramatiq CLI, each in its own process group, and
the short recovery timings the reliability tests give them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]

#: short enough that recovery shows within seconds, long enough that a live send is never taken back
RECOVERY = {"LEASE_SECONDS": "3", "SMTP_TIMEOUT_SECONDS": "2", "DEAD_WORKER_SECONDS": "2",
            "REQUEUE_AFTER_SECONDS": "3", "SWEEP_INTERVAL_SECONDS": "0.3"}


class Proc:
    """A child process whose output goes to a file, shown when a test fails."""

    def __init__(self, argv: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"coldmail-{name}-", suffix=".log", delete=False)
        full_env = dict(os.environ, COLDMAIL_NO_BOOTSTRAP="1", PYTHONUNBUFFERED="1", **env)
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self, timeout_s: float = 15) -> int | None:
        """SIGTERM the leader, as supervisord does, and wait; SIGKILL the group if it does not stop in
        time. (The dramatiq master forwards SIGTERM to its children; a child that gets a second
        one, say from a signal to the whole group, kills itself mid-send.) Return the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(5)
        else:
            self.signal_group(signal.SIGKILL)  # children left behind by a dead leader
        return self.popen.returncode

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)
        self.popen.wait(10)


def start_run_py(env: dict[str, str], *args: str) -> Proc:
    return Proc([sys.executable, str(ROOT / "run.py"), *args], env, "run-" + (args[0] if args else "all"))


def start_dramatiq(env: dict[str, str], *, processes: int = 1, threads: int = 4) -> Proc:
    dramatiq_bin = str(Path(sys.executable).with_name("dramatiq"))
    argv = [dramatiq_bin, "coldmail.worker", "--processes", str(processes), "--threads", str(threads),
            "--worker-shutdown-timeout", "10000"]
    return Proc(argv, env, "dramatiq")


def wait_healthy(base_url: str, proc: Proc, *, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.output()}")
        try:
            with urllib.request.urlopen(base_url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{proc.name} did not become healthy in {timeout_s}s:\n{proc.output()}")


def wait_worker_ready(proc: Proc) -> None:
    """Until the dramatiq worker process says it consumes (its consumers poll from then on)."""
    wait_for(lambda: "ready for action" in proc.output(), timeout_s=30, what=f"{proc.name} ready")


def stop(*procs: Proc | None) -> None:
    """SIGTERM each process that was started, in order, and wait for it."""
    for proc in procs:
        if proc is not None:
            proc.terminate()
