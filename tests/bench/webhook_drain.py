"""`python -m tests.bench.webhook_drain`: the harness's drain, without and with one webhook endpoint.

Issue 14: webhook deliveries must not slow the drain by more than 10 % with one subscribed endpoint.
Each round runs compare.py's drain figure twice against a fresh coldmail (same settings both times:
COLDMAIL_SECRET_KEY set, ALLOW_PRIVATE_NETWORKS=true), once as is and once after POST /webhooks
subscribes a loopback receiver (answers 204, counts deliveries; it runs in this process, so its CPU
is in the machine's total) to `email.sent`. The receiver speaks HTTP/1.1 and keeps connections open, as
production web servers do; `--receiver-http 1.0` closes each after its answer (Python's http.server
default), which makes every delivery open a connection. The order alternates by round (without first in odd
rounds). After a drain with the endpoint, coldmail keeps running up to --delivery-wait seconds for
the deliveries. Prints each side's median run (emails/s, CPU ms per email), the ratio with/without
(≥ 0.90 is the goal), every round's ratio, the deliveries received by the drain's end (the harness's
return, 2 s after the last email arrived) and after waiting, how long after the drain's end the last one
came, and how long events waited from their write to their delivery (median, p99, max).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from . import table
from .compare import FULL, QUICK, harness_args, stop_on_signals
from .services import Coldmail, Sink, free_port, run_harness
from .workdir import ROOT, BenchError, find_bench_dir, log, prepare

API_KEY = "benchkey"
SIDES = ("without", "with")
GOAL = 0.90


class Receiver:
    """A webhook endpoint on a free loopback port: 204 to every POST, counting them and their webhook-ids."""

    def __init__(self, http_version: str = "1.1") -> None:
        self.lock = threading.Lock()
        self.posts, self.ids = 0, set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = f"HTTP/{http_version}"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.posts += 1
                    receiver.ids.add(self.headers.get("webhook-id"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.posts, self.ids = 0, set()

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.posts, len(self.ids)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def subscribe(cm: Coldmail, url: str) -> None:
    req = urllib.request.Request(cm.url + "/webhooks", method="POST",
                                 data=json.dumps({"url": url, "events": ["email.sent"]}).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status != 201:
            raise BenchError(f"POST /webhooks answered {r.status}")


def lateness(database_url: str) -> str:
    """How long each delivered event waited, from the statement that wrote it (the email's state change) to
    its delivery: median, 99th percentile and longest, from coldmail's database."""
    import psycopg2

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY s), max(s) FROM ("
                        "SELECT extract(epoch FROM delivered_at - created_at)::float AS s FROM webhook_deliveries "
                        "WHERE status = 'delivered') t")
            quantiles, longest = cur.fetchone()
    finally:
        conn.close()
    if longest is None:
        return "none delivered"
    return f"event → delivery p50 {quantiles[0]:.1f} s, p99 {quantiles[1]:.1f} s, max {longest:.1f} s"


def summary(rounds: list[dict]) -> dict:
    """Over rounds {"without": drain result, "with": drain result}: each side's median run, its emails/s and
    CPU ms per email (whole machine, and coldmail + PostgreSQL + Redis), the ratio with/without of the
    medians, and each complete round's ratio (emails/s with over without; < 1: slower with the endpoint)."""
    out: dict = {"rounds": []}
    for side in SIDES:
        run = table.median_run([r[side] for r in rounds if r.get(side)], "drain")
        out[side] = {"emails_per_s": table.get(run, "emails_per_s"),
                     "cpu_ms_total": table.cpu_ms_per_email(run, ("total",)),
                     "cpu_ms_system": table.cpu_ms_per_email(run, ("target", "postgres", "redis"))}
    for r in rounds:
        w, wo = table.get(r.get("with"), "emails_per_s"), table.get(r.get("without"), "emails_per_s")
        out["rounds"].append(w / wo if w and wo else None)
    w, wo = out["with"]["emails_per_s"], out["without"]["emails_per_s"]
    out["ratio"] = w / wo if w and wo else None
    return out


def report(s: dict, deliveries: list[str], drain_n: int) -> str:
    def cell(v: float | None, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    lines = ["| drain (median run)              | without | with  | with/without |",
             "|---------------------------------|--------:|------:|-------------:|"]
    for label, key, fmt in (("emails/s", "emails_per_s", ",.0f"), ("CPU ms per email, whole machine",
                            "cpu_ms_total", ".2f"), ("CPU ms per email, system", "cpu_ms_system", ".2f")):
        wo, w = s["without"][key], s["with"][key]
        lines.append(f"| {label:<31} | {cell(wo, fmt):>7} | {cell(w, fmt):>5} | "
                     f"{cell(w / wo if w and wo else None, '.3f'):>12} |")
    verdict = "" if s["ratio"] is None else ("  (goal ≥ 0.90: met)" if s["ratio"] >= GOAL else
                                            "  (goal ≥ 0.90: NOT met)")
    lines += ["", f"ratio emails/s with/without: {cell(s['ratio'], '.3f')}{verdict}",
              "per round: " + ", ".join(cell(r, ".3f") for r in s["rounds"]),
              f"webhook deliveries received per run with the endpoint ({drain_n} emails each; "
              "by the drain's end → after waiting, in how long after the drain's end): " + "; ".join(deliveries)]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench.webhook_drain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (drain 500 emails, 5 s quiet wait)")
    p.add_argument("--drain-n", type=int, help="emails due now per drain (5000; quick 500)")
    p.add_argument("--repeat", type=int, default=3, help="rounds, each without and with the endpoint (3)")
    p.add_argument("--delivery-wait", type=float, default=30.0,
                   help="seconds to wait after a drain for its webhook deliveries (30)")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight (32)")
    p.add_argument("--receiver-http", choices=("1.1", "1.0"), default="1.1",
                   help="the receiver's HTTP version: 1.1 keeps connections open (default), 1.0 closes each")
    p.add_argument("--quiet-wait", type=float, help="wait up to this for a quiet machine before each drain "
                                                    "(60; quick 5)")
    p.add_argument("--quiet-cores", type=float, default=0.3, help="'quiet' = at most this many cores busy")
    p.add_argument("--database", default="coldmail_bench", help="coldmail's throwaway database (dropped)")
    p.add_argument("--redis-db", type=int, default=9, help="coldmail's Redis db (flushed)")
    p.add_argument("--bench-dir", help="the shared harness (default ../shared/bench, then $BENCH_DIR)")
    p.add_argument("--work-dir", default=str(ROOT / "var" / "bench"), help="where the harness copy runs")
    return p


def measure(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    from cryptography.fernet import Fernet

    wd = prepare(find_bench_dir(args.bench_dir), Path(args.work_dir), node=False)
    jsonl = wd.sub("results") / f"webhook-drain-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    rounds: list[dict] = []
    deliveries: list[str] = []
    with ExitStack() as stack:
        sink = Sink(wd, wd.sub("logs"))
        stack.callback(sink.stop)
        receiver = Receiver(args.receiver_http)
        stack.callback(receiver.stop)
        cm = Coldmail(source=ROOT, logs=wd.sub("logs"), sink=sink, database=args.database, redis_db=args.redis_db,
                      api_key=API_KEY, extra_env={"COLDMAIL_SECRET_KEY": Fernet.generate_key().decode(),
                                                  "ALLOW_PRIVATE_NETWORKS": "true"})
        stack.callback(cm.reset)
        stack.callback(cm.stop)
        for round_no in range(1, args.repeat + 1):
            rounds.append({})
            for side in SIDES if round_no % 2 else SIDES[::-1]:
                log(f"round {round_no} of {args.repeat}: drain {side} the endpoint")
                cm.start_fresh(f"drain-{side}-webhook")
                receiver.reset()
                if side == "with":
                    subscribe(cm, receiver.url)
                rounds[-1][side] = run_harness(wd, "drain", harness_args(
                    args, "drain", url=cm.url, pid=cm.pid, label=f"coldmail drain {side} webhook", sink=sink,
                    redis_url=cm.redis_url, auth=API_KEY), json_out=jsonl)
                if side == "with":
                    at_end, ended = receiver.counts()[1], time.monotonic()
                    deadline = ended + args.delivery_wait
                    while receiver.counts()[1] < args.drain_n and time.monotonic() < deadline:
                        time.sleep(0.05)
                    posts, unique = receiver.counts()
                    deliveries.append(f"{at_end} → {unique} in {time.monotonic() - ended:.1f} s"
                                      + (f" ({posts} POSTs)" if posts != unique else "")
                                      + f", {lateness(cm.database_url)}")
                cm.stop()
    log(f"every harness result: {jsonl}")
    return rounds, deliveries


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():  # compare.harness_args reads every size
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    stop_on_signals()
    try:
        rounds, deliveries = measure(args)
    except BenchError as e:
        log(str(e))
        return 1
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    print(report(summary(rounds), deliveries, args.drain_n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
