"""`python -m tests.bench.lateness`: how late uncapped emails go out, as the SMTP server sees it.

For each WORKER_POLL_MS given, a fresh coldmail (throwaway database, flushed Redis db) gets `--n`
emails due evenly over `--spread` seconds, starting `--lead` seconds ahead; with the default
HANDOVER_HORIZON_SECONDS of 5 most of them are handed over by the scheduler, the path of an email
scheduled long before. Prints lateness (sink arrival minus scheduledAt) p50/p90/p99/max per setting.
"""

from __future__ import annotations

import argparse
import json

from . import rig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench.lateness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=400, help="emails per run (400)")
    p.add_argument("--spread", type=float, default=20.0, help="seconds they are due over (20)")
    p.add_argument("--lead", type=float, default=8.0, help="seconds until the first is due (8)")
    p.add_argument("--poll-ms", default="20", help="comma list of WORKER_POLL_MS values to run (20)")
    p.add_argument("--horizon", type=float, default=5.0, help="HANDOVER_HORIZON_SECONDS (5)")
    p.add_argument("--split", action="store_true",
                   help="run `run.py api` + `dramatiq coldmail.worker` instead of the all-in-one `run.py`")
    p.add_argument("--threads", type=int, default=8, help="worker threads (8)")
    p.add_argument("--warmup", type=int, default=32,
                   help="emails due at once first, not counted: every thread's connections are open (32)")
    p.add_argument("--redis-db", type=int, default=15, help="a Redis db of its own, flushed per run (15)")
    p.add_argument("--json", action="store_true", help="also print one JSON line per run")
    return p


def run_once(args, run: int, poll_ms: int, redis_db: rig.BenchRedis, sink: rig.Sink) -> dict:
    redis_db.flush()
    env = {"WORKER_POLL_MS": str(poll_ms), "HANDOVER_HORIZON_SECONDS": str(args.horizon),
           "WORKER_THREADS": str(args.threads)}
    prefix = f"late{run}"
    with rig.ThrowawayDatabase("lateness") as db, rig.Coldmail(
            database_url=db.url, redis_url=redis_db.url, smtp_url=sink.url, env=env, split=args.split,
            worker_threads=args.threads) as cm:
        rig.warm_up(cm, sink, args.warmup, prefix=f"warmup{run}")
        emails, due = rig.spread(prefix, args.n, lead_s=args.lead, over_s=args.spread)
        cm.schedule(emails)
        rig.wait_arrivals(sink, prefix, args.n, timeout_s=args.lead + args.spread + 60)
        late = rig.lateness_s(sink, prefix, due)
    return {"worker_poll_ms": poll_ms, "n": args.n, "split": args.split, "threads": args.threads,
            "lateness_ms": rig.percentiles_ms(late), "early": sum(1 for x in late if x < 0),
            "duplicates": sink.duplicates(prefix), "load_average": rig.load_average()}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    redis_db = rig.BenchRedis(args.redis_db)
    results = []
    with rig.Sink() as sink:
        for run, poll_ms in enumerate(int(v) for v in args.poll_ms.split(",")):
            rig.log(f"WORKER_POLL_MS={poll_ms}: {args.n} emails due over {args.spread:.0f}s")
            results.append(run_once(args, run, poll_ms, redis_db, sink))
    redis_db.flush()
    shape = "run.py api + dramatiq" if args.split else "run.py (all-in-one)"
    print(f"\nlateness of uncapped emails, {shape}, {args.threads} threads, ms (sink arrival - scheduledAt)")
    print(f"{'WORKER_POLL_MS':>14} {'n':>5} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'early':>5} "
          f"{'dupes':>5}  load")
    for r in results:
        ms = r["lateness_ms"]
        print(f"{r['worker_poll_ms']:>14} {r['n']:>5} {ms['p50']:>7.1f} {ms['p90']:>7.1f} {ms['p99']:>7.1f} "
              f"{ms['max']:>7.1f} {r['early']:>5} {r['duplicates']:>5}  {r['load_average']}")
    if args.json:
        for r in results:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
