"""`python -m tests.bench.backlog`: a million emails scheduled 30 days ahead cost no Redis memory
and do not slow the ones due now.

In one invocation, on one running coldmail (`run.py`, throwaway database, flushed Redis db):
  1. `--near` emails due over `--near-spread` seconds: lateness without a backlog; then the harness's
     `ingest` (`--ingest-n` single POST /schedule-email, 32 in flight): requests/s on an empty table;
  2. `--far-http` emails 30 days ahead through POST /emails/batch (what a user does; timed);
  3. the rest of `--far` (1,000,000 in all) inserted straight into PostgreSQL, in the
     shape the API writes (row + 'created' event): the setup, not the measurement;
  4. `--near` emails again: lateness with the backlog; and the harness's `ingest` again.
Prints the Redis growth (MEMORY USAGE of this db's keys, and the server's used_memory, which other
users of a shared server also move), the coldmail process's RSS, and both lateness p50/p99.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from . import rig
from .services import run_harness
from .workdir import ROOT, Workdir, find_bench_dir, prepare

FAR_DAYS = 30


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench.backlog", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--far", type=int, default=1_000_000, help="emails 30 days ahead in all (1,000,000)")
    p.add_argument("--far-http", type=int, default=20_000, help="of which through the HTTP API (20,000)")
    p.add_argument("--near", type=int, default=300, help="emails due soon, per lateness run (300)")
    p.add_argument("--near-spread", type=float, default=10.0, help="seconds they are due over (10)")
    p.add_argument("--lead", type=float, default=8.0, help="seconds until the first is due (8)")
    p.add_argument("--horizon", type=float, default=5.0, help="HANDOVER_HORIZON_SECONDS (5)")
    p.add_argument("--warmup", type=int, default=32, help="emails due at once first, not counted (32)")
    p.add_argument("--redis-db", type=int, default=15, help="a Redis db of its own, flushed (15)")
    p.add_argument("--ingest-n", type=int, default=5000, help="harness ingest requests, each time (5000)")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    return p


_BULK = f"""
WITH e AS (
    INSERT INTO emails (recipient, subject, body, sender_id, scheduled_at, next_attempt_at, payload_hash)
    SELECT 'far@example.com', 'far-sql-' || g, 'Hello from the far future', 'bench', t.at, t.at, md5(g::text)
    FROM generate_series(%(first)s, %(last)s) g,
         LATERAL (SELECT now() + interval '{FAR_DAYS} days' + g * interval '1 millisecond' AS at) t
    RETURNING id, scheduled_at
)
INSERT INTO email_events (email_id, kind, detail)
SELECT id, 'created', jsonb_build_object('scheduledAt', scheduled_at) FROM e
"""


def bulk_insert(db: rig.ThrowawayDatabase, n: int, *, chunk: int = 100_000) -> float:
    started = time.monotonic()
    conn = db.connect()
    try:
        for first in range(0, n, chunk):
            with conn, conn.cursor() as cur:
                cur.execute(_BULK, {"first": first, "last": min(n, first + chunk) - 1})
            rig.log(f"  {min(n, first + chunk):,} of {n:,} inserted")
        conn.autocommit = True
        conn.cursor().execute("ANALYZE emails; ANALYZE email_events")
    finally:
        conn.close()
    return time.monotonic() - started


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def near_run(cm: rig.Coldmail, sink: rig.Sink, args, prefix: str) -> dict:
    emails, due = rig.spread(prefix, args.near, lead_s=args.lead, over_s=args.near_spread)
    cm.schedule(emails)
    rig.wait_arrivals(sink, prefix, args.near, timeout_s=args.lead + args.near_spread + 60)
    late = rig.lateness_s(sink, prefix, due)
    return {"lateness_ms": rig.percentiles_ms(late), "duplicates": sink.duplicates(prefix),
            "load_average": rig.load_average()}


def ingest_rate(wd: Workdir, cm: rig.Coldmail, args, label: str) -> dict:
    """The harness's ingest (far-future emails, single requests, 32 in flight) against this coldmail."""
    res = run_harness(wd, "ingest", ["--target", cm.url, "--auth", rig.API_KEY, "--n", str(args.ingest_n),
                                     "-c", "32", "--warmup", "200", "--label", f"backlog {label}"],
                      json_out=wd.sub("results") / "backlog.jsonl")
    return {"requests_per_s": res["requests_per_s"], "p99_ms": res["latency_ms"]["p99"]}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    wd = prepare(find_bench_dir(), ROOT / "var" / "bench", node=False)
    redis_db = rig.BenchRedis(args.redis_db)
    redis_db.flush()
    result: dict = {"far": args.far, "far_http": args.far_http, "near": args.near}
    env = {"HANDOVER_HORIZON_SECONDS": str(args.horizon)}
    with rig.Sink() as sink, rig.ThrowawayDatabase("backlog") as db, rig.Coldmail(
            database_url=db.url, redis_url=redis_db.url, smtp_url=sink.url, env=env) as cm:
        pid = cm.procs[0].pid
        rig.warm_up(cm, sink, args.warmup)
        rig.log(f"1/4 lateness without a backlog: {args.near} emails due over {args.near_spread:.0f}s")
        result["without_backlog"] = near_run(cm, sink, args, "near-before")
        result["without_backlog"]["ingest"] = ingest_rate(wd, cm, args, "empty")
        before = {"key_bytes": redis_db.key_bytes(), "used_memory": redis_db.used_memory(), "rss_kb": rss_kb(pid)}

        rig.log(f"2/4 {args.far_http:,} emails {FAR_DAYS} days ahead through POST /emails/batch")
        far_at = datetime.now(timezone.utc) + timedelta(days=FAR_DAYS)
        far = [rig.email(f"far-http-{i}", far_at + timedelta(milliseconds=i)) for i in range(args.far_http)]
        took = cm.schedule(far)
        result["far_http_emails_per_s"] = round(args.far_http / took)
        after_http = redis_db.key_bytes()

        rest = args.far - args.far_http
        rig.log(f"3/4 {rest:,} more straight into PostgreSQL")
        result["far_sql_s"] = round(bulk_insert(db, rest), 1)
        time.sleep(3)  # a few hand-over and sweep passes over the full table
        after = {"key_bytes": redis_db.key_bytes(), "used_memory": redis_db.used_memory(), "rss_kb": rss_kb(pid)}

        rig.log(f"4/4 lateness with {args.far:,} emails waiting: {args.near} emails due over {args.near_spread:.0f}s")
        result["with_backlog"] = near_run(cm, sink, args, "near-after")
        result["with_backlog"]["ingest"] = ingest_rate(wd, cm, args, "with backlog")
        with db.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM emails WHERE status = 'PENDING'")
            result["pending_at_end"] = cur.fetchone()[0]
    redis_db.flush()

    result["redis_key_bytes_growth"] = after["key_bytes"] - before["key_bytes"]
    result["redis_key_bytes_growth_http"] = after_http - before["key_bytes"]
    result["redis_used_memory_growth"] = after["used_memory"] - before["used_memory"]
    result["rss_growth_kb"] = after["rss_kb"] - before["rss_kb"]
    a, b = result["without_backlog"]["lateness_ms"], result["with_backlog"]["lateness_ms"]
    print(f"\nbacklog: {args.far:,} emails {FAR_DAYS} days ahead ({args.far_http:,} through the API at "
          f"{result['far_http_emails_per_s']:,} emails/s, the rest by SQL in {result['far_sql_s']}s); "
          f"{result['pending_at_end']:,} PENDING at the end")
    print(f"Redis growth: this db's keys {result['redis_key_bytes_growth']:+,} bytes "
          f"({result['redis_key_bytes_growth_http']:+,} after the API part); server used_memory "
          f"{result['redis_used_memory_growth'] / 1e6:+.2f} MB (shared server: others move it too)")
    print(f"coldmail RSS growth: {result['rss_growth_kb'] / 1024:+.1f} MB")
    print(f"lateness of {args.near} uncapped emails due now, ms: {'':12}p50     p99     max")
    for label, ms in (("without the backlog", a), ("with the backlog", b)):
        print(f"  {label:<42}{ms['p50']:>7.1f} {ms['p99']:>7.1f} {ms['max']:>7.1f}")
    print(f"  p99 difference: {b['p99'] - a['p99']:+.1f} ms (target: within 100 ms)")
    ia, ib = result["without_backlog"]["ingest"], result["with_backlog"]["ingest"]
    print(f"ingest (harness, {args.ingest_n:,} single requests, 32 in flight, {args.far_http:,}+ rows of the backlog "
          f"in between): {ia['requests_per_s']:,.0f} req/s (p99 {ia['p99_ms']} ms) on an empty table, "
          f"{ib['requests_per_s']:,.0f} req/s (p99 {ib['p99_ms']} ms) with the backlog: "
          f"{ib['requests_per_s'] / ia['requests_per_s']:.2f}x (target: within 20 %)")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
