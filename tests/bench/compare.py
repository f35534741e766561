"""`python -m tests.bench.compare`: coldmail and the seed reference, side by side, in one run.

Starts the harness's SMTP sink, then for each figure (ingest, lateness, drain, backlog) a fresh
coldmail (new database, flushed Redis db) and runs the harness against it; then the same against
the seed reference (its seedctl.sh, reset between figures; drain both as seeded and in its best
configuration SMTP_POOL=1 SMTP_NODELAY=1); then the harness's `limit` for the machine's ceilings.
Prints one table (markdown) and saves every result. With --repeat N it does all that N times, the
two systems in turn each round, and the table shows each figure's median run with the ratio of
every round under each goal's row. Everything it starts is stopped on the way out, Ctrl-C and
failures included.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from . import table
from .services import Coldmail, Reference, Sink, run_harness
from .workdir import ROOT, BenchError, Workdir, find_bench_dir, log, prepare, source_tree

FULL = dict(ingest_n=5000, concurrency=32, warmup=200, lateness_n=2000, lateness_spread=30.0, drain_n=5000,
            backlog_far=50000, backlog_near=200, limit_duration=8.0, limit_n=5000, quiet_wait=60.0)
QUICK = dict(ingest_n=500, concurrency=32, warmup=50, lateness_n=200, lateness_spread=5.0, drain_n=500,
             backlog_far=2000, backlog_near=50, limit_duration=2.0, limit_n=1000, quiet_wait=5.0)
BEST_DRAIN = {"SMTP_POOL": "1", "SMTP_NODELAY": "1"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few minutes")
    p.add_argument("--only", choices=("coldmail", "reference"), help="run one system (the table keeps both columns)")
    p.add_argument("--figures", default=",".join(table.FIGURES), help="comma list of ingest,lateness,drain,backlog")
    p.add_argument("--ingest-n", type=int, help="ingest requests (5000; quick 500)")
    p.add_argument("--concurrency", type=int, help="requests in flight (32)")
    p.add_argument("--warmup", type=int, help="ingest warm-up requests, not counted (200; quick 50)")
    p.add_argument("--lateness-n", type=int, help="emails due over --lateness-spread (2000; quick 200)")
    p.add_argument("--lateness-spread", type=float, help="seconds (30; quick 5)")
    p.add_argument("--drain-n", type=int, help="emails due now (5000; quick 500)")
    p.add_argument("--backlog-far", type=int, help="emails 30 days ahead (50000; quick 2000)")
    p.add_argument("--backlog-near", type=int, help="emails due in 5 s after them (200; quick 50)")
    p.add_argument("--ref-drain", choices=("both", "best", "seeded"), default="both",
                   help="reference drain runs: as seeded, best (SMTP_POOL=1 SMTP_NODELAY=1), or both")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds of every figure, coldmail then the reference in each; the table shows "
                        "each figure's median run and every round's ratio (1)")
    p.add_argument("--skip-limit", action="store_true", help="do not measure the machine's ceilings")
    p.add_argument("--limit-duration", type=float, help="seconds per ceiling measurement (8; quick 2)")
    p.add_argument("--limit-n", type=int, help="requests for the aiohttp ceiling (5000; quick 1000)")
    p.add_argument("--quiet-wait", type=float,
                   help="wait up to this long for a quiet machine before each figure (60; quick 5); "
                        "what was found is recorded")
    p.add_argument("--quiet-cores", type=float, default=0.3, help="'quiet' = at most this many cores busy")
    p.add_argument("--coldmail-env", action="append", default=[], metavar="VAR=VALUE",
                   help="extra setting for coldmail (repeatable), e.g. WORKER_THREADS=16")
    p.add_argument("--rev", help="run coldmail from this commit (git archive), not the working tree")
    p.add_argument("--database", default="coldmail_bench", help="coldmail's throwaway database (dropped)")
    p.add_argument("--redis-db", type=int, default=9, help="coldmail's Redis db (flushed)")
    p.add_argument("--bench-dir", help="the shared harness (default ../shared/bench, then $BENCH_DIR)")
    p.add_argument("--work-dir", default=str(ROOT / "var" / "bench"), help="where the harness copy runs")
    p.add_argument("--json-out", help="also write every result and the table to this JSON file")
    p.add_argument("--table", metavar="JSON", help="only print the table of a saved run (its --json-out file)")
    return p


def options(argv: list[str] | None = None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    args.figures = [f for f in args.figures.split(",") if f]
    unknown = set(args.figures) - set(table.FIGURES)
    if unknown:
        raise SystemExit(f"unknown figure(s): {', '.join(sorted(unknown))}")
    return args


def harness_args(args: argparse.Namespace, figure: str, *, url: str, pid: int, label: str, sink: Sink,
                 redis_url: str, auth: str | None) -> list[str]:
    common = ["--target", url, "--target-pids", str(pid), "--label", label, "-c", str(args.concurrency),
              "--quiet-wait", str(args.quiet_wait), "--quiet-cores", str(args.quiet_cores)]
    if auth:
        common += ["--auth", auth]
    if figure != "ingest":
        common += ["--sink-url", sink.url]
    sizes = {
        "ingest": ["--n", str(args.ingest_n), "--warmup", str(args.warmup)],
        "lateness": ["--n", str(args.lateness_n), "--spread", str(args.lateness_spread)],
        "drain": ["--n", str(args.drain_n)],
        "backlog": ["--far", str(args.backlog_far), "--near", str(args.backlog_near), "--redis-url", redis_url],
    }[figure]
    return common + sizes


class Run:
    """One invocation: results per round, system and figure, errors kept so one failed figure does not lose
    the rest."""

    def __init__(self, args: argparse.Namespace, wd: Workdir) -> None:
        self.args, self.wd = args, wd
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.logs = wd.sub("logs")
        self.jsonl = wd.sub("results") / f"compare-{self.stamp}.jsonl"
        self.results: dict = {"coldmail": {}, "reference": {}, "limit": None, "errors": [], "rounds": []}

    def figure(self, system: str, key: str, command: str, harness_args: list[str]) -> None:
        try:
            self.results["rounds"][-1][system][key] = run_harness(self.wd, command, harness_args,
                                                                  json_out=self.jsonl)
        except BenchError as e:
            log(f"{system} {key} failed: {e}")
            self.results["errors"].append(f"{system} {key}: {e}")

    def start_coldmail(self, stack: ExitStack, sink: Sink) -> Coldmail:
        extra = dict(item.split("=", 1) for item in self.args.coldmail_env)
        self.results["coldmail_source"] = str(source_tree(self.args.rev, self.wd.path))
        cm = Coldmail(source=Path(self.results["coldmail_source"]), logs=self.logs, sink=sink,
                      database=self.args.database, redis_db=self.args.redis_db, api_key="benchkey", extra_env=extra)
        stack.callback(cm.reset)
        stack.callback(cm.stop)
        return cm

    def coldmail(self, cm: Coldmail, sink: Sink) -> None:
        for figure in self.args.figures:
            try:
                cm.start_fresh(figure)
            except BenchError as e:
                self.results["errors"].append(f"coldmail {figure}: {e}")
                log(str(e))
                continue
            self.figure("coldmail", figure, figure, harness_args(
                self.args, figure, url=cm.url, pid=cm.pid, label=f"coldmail {figure}", sink=sink,
                redis_url=cm.redis_url, auth="benchkey"))
            cm.stop()

    def start_reference(self, stack: ExitStack, sink: Sink) -> Reference:
        ref = Reference(self.wd, sink=sink)
        stack.callback(ref.reset)
        stack.callback(ref.stop)
        return ref

    def reference(self, ref: Reference, sink: Sink) -> None:
        runs = []
        for figure in self.args.figures:
            if figure != "drain":
                runs.append((figure, figure, {}))
                continue
            if self.args.ref_drain in ("both", "seeded"):
                runs.append(("drain", "drain", {}))
            if self.args.ref_drain in ("both", "best"):
                runs.append(("drain_best", "drain", BEST_DRAIN))
        for key, figure, config in runs:
            try:
                ref.start_fresh(key, **config)
            except BenchError as e:
                self.results["errors"].append(f"reference {key}: {e}")
                log(str(e))
                continue
            label = f"reference {key}" + "".join(f" {k}={v}" for k, v in config.items())
            self.figure("reference", key, figure, harness_args(
                self.args, figure, url=ref.url, pid=ref.pid, label=label, sink=sink, redis_url=ref.redis_url,
                auth=None))
            ref.stop()

    def limit(self) -> None:
        try:
            self.results["limit"] = run_harness(self.wd, "limit", [
                "--duration", str(self.args.limit_duration), "--n", str(self.args.limit_n),
                "--quiet-wait", str(self.args.quiet_wait), "--quiet-cores", str(self.args.quiet_cores),
                "--label", "machine"], json_out=self.jsonl)
        except BenchError as e:
            self.results["errors"].append(f"limit: {e}")

    def execute(self) -> None:
        with ExitStack() as stack:
            sink = Sink(self.wd, self.logs)
            stack.callback(sink.stop)
            cm = self.start_coldmail(stack, sink) if self.args.only in (None, "coldmail") else None
            ref = self.start_reference(stack, sink) if self.args.only in (None, "reference") else None
            for round_no in range(1, self.args.repeat + 1):
                if self.args.repeat > 1:
                    log(f"round {round_no} of {self.args.repeat}")
                self.results["rounds"].append({"coldmail": {}, "reference": {}})
                if cm is not None:
                    self.coldmail(cm, sink)
                if ref is not None:
                    self.reference(ref, sink)
        self.results.update(table.medians(self.results["rounds"]))
        if not self.args.skip_limit:
            self.limit()

    def report(self) -> str:
        a = self.args
        lines = [table.markdown(table.rows(self.results)), "",
                 f"Sizes: ingest {a.ingest_n} requests ({a.concurrency} in flight, {a.warmup} warm-up); lateness "
                 f"{a.lateness_n} emails over {a.lateness_spread:g} s; drain {a.drain_n}; backlog {a.backlog_far} "
                 f"far + {a.backlog_near} near. Each figure on a fresh database and Redis db"
                 + (f"; {a.repeat} rounds, each figure's median run shown." if a.repeat > 1 else "."),
                 "Load columns are cores: busy before the figure (after waiting up to "
                 f"{a.quiet_wait:g} s for ≤ {a.quiet_cores:g}), used by other processes and by the target during it.",
                 f"Every harness result: {self.jsonl}"]
        if a.rev:
            lines.append(f"coldmail ran from {a.rev}, exported to {self.results.get('coldmail_source')}")
        if a.coldmail_env:
            lines.append("coldmail settings: " + " ".join(a.coldmail_env))
        lines += [f"ERROR {e.splitlines()[0]}" for e in self.results["errors"]]
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    if args.table:
        print(table.markdown(table.rows(json.loads(Path(args.table).read_text())["results"])))
        return 0
    stop_on_signals()
    try:
        wd = prepare(find_bench_dir(args.bench_dir), Path(args.work_dir), node=args.only != "coldmail")
        run = Run(args, wd)
        run.execute()
    except BenchError as e:
        log(str(e))
        return 1
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    print(run.report())
    saved = {"options": vars(args), "results": run.results, "table": table.rows(run.results)}
    for path in filter(None, (args.json_out, str(run.jsonl.with_suffix(".json")))):
        Path(path).write_text(json.dumps(saved, indent=1))
    return 1 if run.results["errors"] else 0


def stop_on_signals() -> None:
    """SIGTERM and SIGINT (even when started in the background, where SIGINT is ignored) unwind
    through the ExitStacks, so whatever was started gets stopped."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
