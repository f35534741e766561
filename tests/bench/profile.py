"""`python -m tests.bench.profile`: where coldmail spends its time during ingest and drain.

For each phase it starts a fresh coldmail, samples it with py-spy twice at once (on-CPU only, and
wall-clock with idle threads, both as folded stacks: flame-graph input for speedscope.app or
flamegraph.pl), runs the harness's `ingest` or `drain` against it, and counts the PostgreSQL
transactions/rows and Redis commands per email with coldmail's idle cost taken off. It writes
everything to var/bench/profile-<time>/ and prints the top functions by own time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from . import stacks
from .compare import stop_on_signals
from .counters import STATS_DELAY_S, Meter
from .services import Coldmail, Sink, run_harness, stop_process
from .webhook_drain import Receiver, subscribe
from .workdir import ROOT, BenchError, Workdir, ensure_py_spy, find_bench_dir, log, prepare, source_tree

IDLE_WINDOW_S = 10.0
# py-spy frame names (qualified name, then the file): the API's request path and the worker's send
FOCUS = ("schedule_email (coldmail/api/handlers.py)", "schedule (coldmail/intake/group_commit.py)",
         "deliver_many (coldmail/delivery/deliverer.py)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phases", default="ingest,drain", help="comma list of ingest,drain")
    p.add_argument("--ingest-n", type=int, default=5000)
    p.add_argument("--drain-n", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=15, help="functions listed per profile")
    p.add_argument("--focus", action="append", default=list(FOCUS), metavar="FUNCTION",
                   help="also split this function's samples by direct callee (repeatable; "
                        f"defaults: {', '.join(FOCUS)})")
    p.add_argument("--quiet-wait", type=float, default=30.0, help="wait up to this long for a quiet machine")
    p.add_argument("--coldmail-env", action="append", default=[], metavar="VAR=VALUE")
    p.add_argument("--webhook", action="store_true",
                   help="subscribe a loopback receiver to email.sent (tests.bench.webhook_drain's) and keep the "
                        "samplers running until it has every delivery (up to --delivery-wait)")
    p.add_argument("--delivery-wait", type=float, default=60.0, help="with --webhook: seconds to wait (60)")
    p.add_argument("--rev", help="run coldmail from this commit (git archive), not the working tree")
    p.add_argument("--database", default="coldmail_bench")
    p.add_argument("--redis-db", type=int, default=9)
    p.add_argument("--bench-dir")
    p.add_argument("--work-dir", default=str(ROOT / "var" / "bench"))
    return p


class Sampler:
    """`py-spy record --pid` (and its worker children) until stopped with SIGINT (py-spy then writes its file)."""

    def __init__(self, py_spy: str, pid: int, out: Path, *, rate: int, idle: bool) -> None:
        argv = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--threads", "--nolineno",
                "--rate", str(rate), "--nonblocking", "--subprocesses", "--output", str(out)]
        # on CPU: only the thread holding the GIL, which is what Python code costs; py-spy's own idle
        # guess counted threads blocked in socket reads as busy
        argv.append("--idle" if idle else "--gil")
        self.out = out
        self.log = open(out.with_suffix(".log"), "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(self.proc, timeout_s=1)
        self.log.close()

    def stacks(self) -> list[stacks.Stack]:
        if not self.out.exists():
            raise BenchError(f"py-spy wrote no {self.out}; see {self.out.with_suffix('.log')}")
        return stacks.parse(self.out.read_text())


def harness_module(wd: Workdir):
    """The harness as a module, for its quiet-machine wait (stdlib only at import)."""
    spec = importlib.util.spec_from_file_location("bench_harness", wd.harness)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def phase(args, wd: Workdir, out: Path, cm: Coldmail, sink: Sink, py_spy: str, name: str,
          receiver: Receiver | None) -> dict:
    quiet = harness_module(wd).wait_quiet(args.quiet_wait, 0.3) if args.quiet_wait else {}
    cm.start_fresh(f"profile-{name}")
    if receiver:
        receiver.reset()
        subscribe(cm, receiver.url)
    meter = Meter(dsn=cm.database_url, redis_url=cm.redis_url, redis_db=cm.redis_db)
    try:
        log(f"{name}: letting start-up statistics settle, then {IDLE_WINDOW_S:.0f} s of idle for the baseline")
        time.sleep(STATS_DELAY_S)
        meter.mark("idle", window="idle")
        time.sleep(IDLE_WINDOW_S)
        samplers = [Sampler(py_spy, cm.pid, out / f"{name}.{kind}.folded", rate=args.rate, idle=kind == "wall")
                    for kind in ("cpu", "wall")]
        try:
            meter.mark("phase", window="phase")
            n = args.ingest_n if name == "ingest" else args.drain_n
            common = ["--target", cm.url, "--auth", cm.api_key, "--target-pids", str(cm.pid), "-c",
                      str(args.concurrency), "--label", f"profile {name}", "--quiet-wait", "0"]
            if name == "ingest":
                result = run_harness(wd, "ingest", [*common, "--n", str(n), "--warmup", "0"],
                                     json_out=out / "harness.jsonl")
            else:
                result = run_harness(wd, "drain", [*common, "--n", str(n), "--sink-url", sink.url],
                                     json_out=out / "harness.jsonl")
            if receiver:  # the deliveries the phase's emails made are part of its cost
                deadline = time.monotonic() + args.delivery_wait
                while receiver.counts()[1] < n and time.monotonic() < deadline:
                    time.sleep(0.1)
                log(f"{name}: {receiver.counts()[1]} webhook deliveries received")
        finally:
            for s in samplers:
                s.stop()
        time.sleep(STATS_DELAY_S)
        meter.mark("end", window=None)
    finally:
        meter.stop()
        cm.stop()
    counts = meter.result(n)
    text = "\n\n".join([
        stacks.report(f"{name}, on CPU", samplers[0].stacks(), args.top, focus=args.focus),
        stacks.report(f"{name}, wall clock (idle threads included)", samplers[1].stacks(), args.top,
                      focus=args.focus, wall=True),
        "round trips per email, idle cost taken off:\n" + json.dumps(counts, indent=1)])
    (out / f"{name}.txt").write_text(text + "\n")
    return {"harness": result, "counters": counts, "quiet": quiet, "text": text}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    stop_on_signals()
    phases = [p for p in args.phases.split(",") if p]
    try:
        wd = prepare(find_bench_dir(args.bench_dir), Path(args.work_dir), node=False)
        py_spy = ensure_py_spy(wd)
        out = wd.sub(f"profile-{time.strftime('%Y%m%d-%H%M%S')}")
        summary = {}
        with ExitStack() as stack:
            sink = Sink(wd, wd.sub("logs"))
            stack.callback(sink.stop)
            env = dict(item.split("=", 1) for item in args.coldmail_env)
            receiver = None
            if args.webhook:
                from cryptography.fernet import Fernet

                receiver = Receiver()
                stack.callback(receiver.stop)
                env = {"COLDMAIL_SECRET_KEY": Fernet.generate_key().decode(), "ALLOW_PRIVATE_NETWORKS": "true",
                       **env}
            cm = Coldmail(source=source_tree(args.rev, wd.path), logs=wd.sub("logs"), sink=sink,
                          database=args.database, redis_db=args.redis_db, api_key="benchkey", extra_env=env)
            stack.callback(cm.reset)
            stack.callback(cm.stop)
            for name in phases:
                summary[name] = phase(args, wd, out, cm, sink, py_spy, name, receiver)
    except BenchError as e:
        log(str(e))
        return 1
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    for name, res in summary.items():
        h = res["harness"]
        rate = h.get("requests_per_s") if name == "ingest" else h.get("emails_per_s")
        print(f"### {name} under py-spy: {rate} per s; machine before {json.dumps(res['quiet'])}, "
              f"cores during {json.dumps(h.get('cpu'))}\n{res['text']}\n")
    (out / "summary.json").write_text(json.dumps(
        {k: {key: v[key] for key in ("harness", "counters", "quiet")} for k, v in summary.items()}, indent=1))
    print(f"folded stacks, reports and counters in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
