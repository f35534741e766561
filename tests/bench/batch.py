"""`python -m tests.bench.batch`: emails/s through POST /emails/batch, against what PostgreSQL alone
takes of the same statement in the same run.

On one running coldmail (`run.py`, throwaway database, flushed Redis db) it
  1. POSTs `--emails` emails 30 days ahead in batches of `--batch` (unique recipients and subjects,
     spread over `--senders` senders), `--concurrency` requests in flight, after a warm-up;
  2. inserts as many rows straight into PostgreSQL with coldmail's own insert statement
     (coldmail.db.emails.intake.insert_batch, same batch size and concurrency): the database's ceiling for
     this work on this machine, taken in the same run.
Prints emails/s of both, their ratio, the request latency and the CPU each process used.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from . import rig

FAR_DAYS = 30


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench.batch", description=__doc__.split("\n\n")[0])
    p.add_argument("--emails", type=int, default=50_000, help="emails through the API (50,000)")
    p.add_argument("--batch", type=int, default=1000, help="emails per request (1000, the most allowed)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (4)")
    p.add_argument("--senders", type=int, default=50, help="senderIds the emails are spread over (50)")
    p.add_argument("--warmup", type=int, default=4, help="batches before the timed part (4)")
    p.add_argument("--skip-ceiling", action="store_true", help="do not measure PostgreSQL alone")
    p.add_argument("--redis-db", type=int, default=10, help="a Redis db of its own, flushed (10)")
    p.add_argument("--coldmail-env", action="append", default=[], metavar="VAR=VALUE",
                   help="extra setting for coldmail (repeatable), e.g. LOG_LEVEL=info (the rig runs it at warning)")
    p.add_argument("--json", help="also write the result to this file")
    return p


def payloads(run: str, n: int, senders: int) -> list[dict]:
    at = (datetime.now(timezone.utc) + timedelta(days=FAR_DAYS)).isoformat()
    return [{"recipient": f"r{i}.{run}@example.com", "subject": f"batch:{run}:{i}",
             "body": f"<p>benchmark message {i} of run {run}</p>", "senderId": f"bench-sender-{i % senders}",
             "scheduledAt": at} for i in range(n)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children that were waited for, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() not in ("postgres", "postmaster"):
                    continue
            total += cpu_seconds(int(pid))
        except (OSError, ValueError):
            continue
    return total


def post_batches(cm: rig.Coldmail, chunks: list[list[dict]], concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def post(chunk: list[dict]) -> None:
        started = time.perf_counter()
        answer = cm.post("/emails/batch", {"emails": chunk})
        took = time.perf_counter() - started
        assert len(answer["jobIds"]) == len(chunk), answer
        with lock:
            latencies.append(took)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, chunks))
    return time.perf_counter() - started, latencies


def ceiling(database_url: str, chunks: list[list[dict]], concurrency: int) -> float:
    """Seconds coldmail's insert statement takes for these emails with nothing but PostgreSQL in the way."""
    from coldmail.api.schemas import ScheduleBatchSchema
    from coldmail.db import database, open_database
    from coldmail.intake.payload import new_email

    from coldmail.db.migrations import migrate

    open_database(database_url, max_connections=concurrency)
    migrate()
    from coldmail.db.emails.intake import insert_batch

    load = ScheduleBatchSchema().load  # not timed
    news = [[new_email("default", item, None) for item in load({"emails": chunk})["emails"]] for chunk in chunks]

    def insert(batch) -> None:
        with database.connection_context():
            insert_batch(batch, horizon_s=60)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(insert, news))
    return time.perf_counter() - started


def measure(cm: rig.Coldmail, warm: list, timed: list, args, result: dict) -> None:
    api_pid = cm.procs[0].pid
    post_batches(cm, warm, args.concurrency)
    rig.log(f"{args.emails:,} emails through POST /emails/batch, {args.batch} a request, "
            f"{args.concurrency} in flight")
    cpu_api, cpu_pg = cpu_seconds(api_pid), postgres_cpu_seconds()
    took, latencies = post_batches(cm, timed, args.concurrency)
    cpu_api, cpu_pg = cpu_seconds(api_pid) - cpu_api, postgres_cpu_seconds() - cpu_pg
    result.update(api_emails_per_s=round(args.emails / took), api_seconds=round(took, 2),
                  request_ms=rig.percentiles_ms(latencies),
                  api_process_cores=round(cpu_api / took, 2), postgres_cores=round(cpu_pg / took, 2))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run = uuid.uuid4().hex[:8]
    redis_db = rig.BenchRedis(args.redis_db)
    redis_db.flush()
    emails = payloads(run, args.emails + args.warmup * args.batch, args.senders)
    chunks = [emails[i:i + args.batch] for i in range(0, len(emails), args.batch)]
    warm, timed = chunks[:args.warmup], chunks[args.warmup:]
    result: dict = {"emails": args.emails, "batch": args.batch, "concurrency": args.concurrency,
                    "load_average_before": rig.load_average()}
    with rig.Sink() as sink, rig.ThrowawayDatabase("batch") as db:
        cm = rig.Coldmail(database_url=db.url, redis_url=redis_db.url, smtp_url=sink.url, env={})
        cm.env.update(kv.split("=", 1) for kv in args.coldmail_env)  # may override the rig's own
        with cm:
            measure(cm, warm, timed, args, result)
    redis_db.flush()
    if not args.skip_ceiling:
        with rig.ThrowawayDatabase("batchceil") as db:
            rig.log(f"the same {args.emails:,} emails straight into PostgreSQL (coldmail's insert statement)")
            pg_before = postgres_cpu_seconds()
            took = ceiling(db.url, timed, args.concurrency)
            result.update(postgres_alone_emails_per_s=round(args.emails / took),
                          postgres_alone_cores=round((postgres_cpu_seconds() - pg_before) / took, 2))
            from coldmail.db import database
            database.close_all()
        result["ratio_to_postgres_alone"] = round(result["api_emails_per_s"] / result["postgres_alone_emails_per_s"], 2)
    result["load_average_after"] = rig.load_average()

    lat = result["request_ms"]
    print(f"\nPOST /emails/batch: {result['api_emails_per_s']:,} emails/s ({args.emails:,} emails, {args.batch} a "
          f"request, {args.concurrency} in flight; request p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms; "
          f"cores: coldmail {result['api_process_cores']}, PostgreSQL {result['postgres_cores']})")
    if "postgres_alone_emails_per_s" in result:
        print(f"PostgreSQL alone, same statement: {result['postgres_alone_emails_per_s']:,} emails/s "
              f"({result['postgres_alone_cores']} cores); the API reaches {result['ratio_to_postgres_alone']:.0%} "
              f"of it")
    print(f"load average before / after: {result['load_average_before']} / {result['load_average_after']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
