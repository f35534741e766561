"""`python -m tests.bench.caps`: what SMTP connection reuse buys, and how often a capped sender's
emails are claimed for each one sent.

On coldmail's real processes (`run.py`: API, scheduler, worker), a throwaway database and a Redis db
of its own (flushed), with an aiosmtpd sink in this process:
  1. drain: `--emails` due now for one sender under its cap, into the sink, with SMTP connections
     kept open between sends (SMTP_IDLE_SECONDS=30) and without (SMTP_IDLE_SECONDS=0): emails/s
     from the first arrival to the last, and the SMTP connections the sink saw;
  2. backlog: a sender allowed `--limit` emails per `--window` seconds gets `--factor` times that,
     all due now: claims per send ('claimed' events over 'sent' events; target at most 1.2), the
     most arrivals in any window (at most the limit), and how long the drain took against the least
     the cap allows.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone

from . import rig


@dataclass
class CountingSink(rig.Sink):
    """The rig's sink, also counting SMTP sessions (one EHLO each, two with STARTTLS)."""

    sessions: int = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    def arrival_times(self, prefix: str) -> list[float]:
        with self.lock:
            return sorted(at for k, v in self.arrivals.items() if k.startswith(prefix) for at in v)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench.caps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--emails", type=int, default=3000, help="emails in each drain run (3000)")
    p.add_argument("--threads", type=int, default=8, help="worker threads (8)")
    p.add_argument("--limit", type=int, default=30, help="the capped sender's limit per window (30)")
    p.add_argument("--window", type=int, default=2, help="RATE_LIMIT_WINDOW_SECONDS of the backlog run (2)")
    p.add_argument("--factor", type=int, default=10, help="the backlog, in windows' worth of emails (10)")
    p.add_argument("--redis-db", type=int, default=15, help="a Redis db of its own, flushed (15)")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    return p


def emails(prefix: str, n: int, sender: str) -> list[dict]:
    now = datetime.now(timezone.utc).isoformat()
    return [{"recipient": "bench@example.com", "subject": f"{prefix}-{i}", "body": "Hello from the benchmark",
             "senderId": sender, "scheduledAt": now} for i in range(n)]


def drain(db: rig.ThrowawayDatabase, redis_db: rig.BenchRedis, args, *, idle_s: float) -> dict:
    redis_db.flush()
    env = {"SMTP_IDLE_SECONDS": str(idle_s), "WORKER_THREADS": str(args.threads)}
    with CountingSink() as sink, rig.Coldmail(database_url=db.url, redis_url=redis_db.url, smtp_url=sink.url,
                                              env=env) as cm:
        rig.warm_up(cm, sink, args.threads * 4)
        before = sink.sessions
        prefix = f"drain-idle{idle_s:g}"
        cm.schedule(emails(prefix, args.emails, "bench"))
        rig.wait_arrivals(sink, prefix, args.emails, timeout_s=300)
        times = sink.arrival_times(prefix)
        return {"emails_per_s": (len(times) - 1) / (times[-1] - times[0]), "sessions": sink.sessions - before,
                "duplicates": sink.duplicates(prefix), "load_average": rig.load_average()}


def backlog(db: rig.ThrowawayDatabase, redis_db: rig.BenchRedis, args) -> dict:
    redis_db.flush()
    n = args.limit * args.factor
    env = {"RATE_LIMIT_WINDOW_SECONDS": str(args.window), "WORKER_THREADS": str(args.threads)}
    with CountingSink() as sink, rig.Coldmail(database_url=db.url, redis_url=redis_db.url, smtp_url=sink.url,
                                              env=env) as cm:
        req = urllib.request.Request(
            cm.url + "/senders/capped", method="PUT", headers={"Content-Type": "application/json",
                                                               "Authorization": f"Bearer {rig.API_KEY}"},
            data=json.dumps({"fromAddress": "capped@example.com", "hourlyLimit": args.limit}).encode())
        urllib.request.urlopen(req, timeout=10).close()
        started = time.time()
        cm.schedule(emails("backlog", n, "capped"))
        rig.wait_arrivals(sink, "backlog", n, timeout_s=args.factor * args.window * 3 + 60)
        took_s = sink.arrival_times("backlog")[-1] - started
        times = sink.arrival_times("backlog")
        most = max(sum(1 for t in times[i:] if t < start + args.window) for i, start in enumerate(times))
        with db.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FILTER (WHERE v.kind = 'claimed'), count(*) FILTER (WHERE v.kind = 'sent'), "
                        "count(*) FILTER (WHERE v.kind = 'rate_limited'), max(e.attempts) "
                        "FROM email_events v JOIN emails e ON e.id = v.email_id WHERE e.sender_id = 'capped'")
            claims, sent, moves, attempts = cur.fetchone()
        return {"emails": n, "claims": claims, "sent": sent, "claims_per_send": claims / sent, "moves": moves,
                "max_attempts": attempts, "most_in_a_window": most, "took_s": took_s,
                "least_s": (args.factor - 1) * args.window, "duplicates": sink.duplicates("backlog"),
                "load_average": rig.load_average()}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    redis_db = rig.BenchRedis(args.redis_db)
    result: dict = {}
    with rig.ThrowawayDatabase("caps") as db:
        rig.log(f"1/3 drain of {args.emails:,} emails, SMTP connections kept open")
        result["reuse"] = drain(db, redis_db, args, idle_s=30)
        rig.log(f"2/3 drain of {args.emails:,} emails, a new SMTP connection per email")
        result["no_reuse"] = drain(db, redis_db, args, idle_s=0)
        rig.log(f"3/3 backlog: {args.limit * args.factor} emails due now, {args.limit} allowed per {args.window}s")
        result["backlog"] = backlog(db, redis_db, args)
    redis_db.flush()

    reuse, fresh, b = result["reuse"], result["no_reuse"], result["backlog"]
    print(f"\ndrain: {args.emails:,} emails due now, one sender under its cap, run.py with {args.threads} worker "
          "threads, into an aiosmtpd sink on this machine")
    print(f"  connections kept open (SMTP_IDLE_SECONDS=30): {reuse['emails_per_s']:7.0f} emails/s, "
          f"{reuse['sessions']} SMTP sessions, {reuse['duplicates']} duplicates")
    print(f"  a connection per email (SMTP_IDLE_SECONDS=0): {fresh['emails_per_s']:7.0f} emails/s, "
          f"{fresh['sessions']} SMTP sessions, {fresh['duplicates']} duplicates")
    print(f"  reuse: x{reuse['emails_per_s'] / fresh['emails_per_s']:.2f}")
    print(f"backlog: {b['emails']} emails due now for a sender allowed {args.limit} per {args.window}s "
          f"({args.factor}x its cap)")
    print(f"  claims per send: {b['claims_per_send']:.2f} ({b['claims']} claims, {b['sent']} sends; target <= 1.2); "
          f"{b['moves']} moves to a later slot; attempts at most {b['max_attempts']}")
    print(f"  most arrivals in any {args.window}s window: {b['most_in_a_window']} (cap {args.limit}); "
          f"{b['duplicates']} duplicates")
    print(f"  drained in {b['took_s']:.1f}s (the cap allows no less than {b['least_s']}s)")
    print(f"load average during the runs: {reuse['load_average']}, {fresh['load_average']}, {b['load_average']}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
