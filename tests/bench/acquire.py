"""`python -m tests.bench.acquire`: what a sender cap's check costs when its window is full of sends.

On a Redis db of its own (flushed), a sender's one-hour window already holding `--seeded` sends takes
`--n` more, one `for_sender(...).decide()` round trip each (a worker's single check), then `--n` more
through `Caps.acquire`, `--batch` emails a call (a worker's check for one message). Prints the round
trip's median and p99 and the batched cost per email (tests/integration/test_caps.py checks that such
sends are allowed; this measures what they cost).
"""

from __future__ import annotations

import argparse
import json
import time

import redis

from . import rig

SENDER = "bench"
ACCOUNT = "default"
#: the window's "rebuilt from PostgreSQL" marker: without it the first check would rebuild the window
COMPLETE = "~complete"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench.acquire", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeded", type=int, default=1000, help="sends already in the one-hour window (1000)")
    p.add_argument("--n", type=int, default=2000, help="checks of each kind (2000)")
    p.add_argument("--batch", type=int, default=50, help="emails per Caps.acquire call (50)")
    p.add_argument("--limit", type=int, default=10_000, help="the sender's hourly limit (10,000: all allowed)")
    p.add_argument("--redis-db", type=int, default=11, help="a Redis db of its own, flushed (11)")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.seeded + 2 * args.n > args.limit:
        raise SystemExit("--limit must leave room for --seeded plus twice --n: the figures are of allowed sends")
    from coldmail.caps import Caps
    from coldmail.settings import Settings

    bench_redis = rig.BenchRedis(args.redis_db)
    bench_redis.flush()
    client = redis.Redis.from_url(bench_redis.url)
    caps = Caps(Settings.from_env({"REDIS_URL": bench_redis.url, "RATE_LIMIT_WINDOW_SECONDS": "3600"}, dotenv=None),
                client)
    now_ms = time.time() * 1000
    client.zadd(caps.key(ACCOUNT, SENDER), {COMPLETE: float("inf")})
    client.zadd(caps.key(ACCOUNT, SENDER), {f"old{i}": now_ms - i * 1000 for i in range(args.seeded)})
    try:
        round_trips = []
        for i in range(args.n):
            check = caps.for_sender(ACCOUNT, SENDER, args.limit, i)
            started = time.perf_counter()
            allowed = check.decide().allowed
            round_trips.append(time.perf_counter() - started)
            assert allowed, f"check {i} refused"
        wanted = [(ACCOUNT, SENDER, args.limit, args.n + i) for i in range(args.n)]
        started = time.perf_counter()
        for first in range(0, args.n, args.batch):
            assert all(d.allowed for d in caps.acquire(wanted[first:first + args.batch]))
        batched_ms = (time.perf_counter() - started) / args.n * 1000
    finally:
        client.close()
        bench_redis.flush()
    result = {"seeded": args.seeded, "n": args.n, "batch": args.batch,
              "round_trip_ms": rig.percentiles_ms(round_trips), "batched_ms_per_email": batched_ms,
              "load_average": rig.load_average()}
    lat = result["round_trip_ms"]
    print(f"a sender's check with {args.seeded:,}+ sends in a one-hour window: round trip median "
          f"{lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms; {batched_ms:.3f} ms per email through Caps.acquire, "
          f"{args.batch} a call (load average {result['load_average']})")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
