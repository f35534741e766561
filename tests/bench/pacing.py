"""`python -m tests.bench.pacing`: sending like a person at scale.

In a throwaway database and a Redis db of its own: `--senders` senders, each with a
sending window (every day 08:00–20:00 in one of five zones), a day limit of 50 and a
60 s gap with 30 s of jitter, and `--emails` PENDING emails spread over 30 days
(bulk-inserted with COPY, each at its window-adjusted time as acceptance places it),
`--big` of them one sender's. It reports:

- planning and hand-over CPU per email (this process's CPU: coldmail.caps.Caps.plan alone,
  and the whole of db.emails.handover.take_due around it, PostgreSQL's and Redis's
  own CPU not counted), for `--due` emails made due at once, first with `--small`
  emails pending, then with `--emails`: the goal is a flat cost;
- the time to place the big sender's emails again after its window changes;
- Redis bytes per pending email after the hand-overs;
- with `--lateness-senders` > 0, against real processes (`run.py api` and a
  `dramatiq coldmail.worker`) on the same database: the lateness (SMTP arrival minus the
  opening) of one email per free sender whose window opens a few seconds later.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from . import rig

ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC", "Australia/Sydney"]
WINDOW = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "08:00", "end": "20:00"}
DAY_S = 86_400
#: windows of the lateness figure that open at the same second
PER_SECOND = 5
#: how far ahead the first window opens: the senders are put meanwhile
LEAD_S = 20
UTC = timezone.utc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench.pacing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--senders", type=int, default=10_000, help="paced senders (10,000)")
    p.add_argument("--emails", type=int, default=1_000_000, help="PENDING emails over 30 days (1,000,000)")
    p.add_argument("--small", type=int, default=10_000, help="pending emails of the first planning figure")
    p.add_argument("--big", type=int, default=100_000, help="emails of the one sender placed again (100,000)")
    p.add_argument("--due", type=int, default=5_000, help="emails made due at once for each planning figure")
    p.add_argument("--lateness-senders", type=int, default=100,
                   help="free senders whose window opens a few seconds ahead, one email each (0: skip)")
    p.add_argument("--redis-db", type=int, default=11, help="a Redis db of its own, flushed (11)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    return p


def sender_rows(n: int) -> list[tuple]:
    """(id, zone) of the benchmark's senders; sender 0 is the big one."""
    return [(f"s{i}", ZONES[i % len(ZONES)]) for i in range(n)]


def email_rows(n: int, senders: list[tuple], *, big: int, start: datetime, rng: random.Random):
    """COPY lines (tab-separated) of `n` PENDING emails: `big` of them the first sender's, the rest spread over
    the others; each scheduled at random over 30 days from `start` and due at its window's opening then."""
    from coldmail.caps.pacing import Calendar, Window

    window = Window.from_json(WINDOW)
    calendars = {zone: Calendar(window, zone) for zone in ZONES}
    for i in range(n):
        sender, zone = senders[0] if i < big else senders[1 + i % (len(senders) - 1)]
        at = start + timedelta(seconds=rng.random() * 30 * DAY_S)
        due = calendars[zone].open_at(at)
        yield (f"default\tr{i}@example.com\tr{i}@example.com\tbench {i}\tHello\t{sender}\t"
               f"{at.isoformat()}\t{due.isoformat()}\n")


def copy_emails(conn, lines) -> None:
    columns = "account, recipient, recipient_key, subject, body, sender_id, scheduled_at, next_attempt_at"
    buffer = io.StringIO()
    count = 0
    with conn.cursor() as cursor:
        for line in lines:
            buffer.write(line)
            count += 1
            if count % 100_000 == 0:
                buffer.seek(0)
                cursor.copy_expert(f"COPY emails ({columns}) FROM STDIN", buffer)
                buffer = io.StringIO()
        buffer.seek(0)
        cursor.copy_expert(f"COPY emails ({columns}) FROM STDIN", buffer)
    conn.commit()


def insert_senders(conn, senders: list[tuple]) -> None:
    buffer = io.StringIO()
    for sender_id, zone in senders:
        buffer.write(f"default\t{sender_id}\t{zone}\t{json.dumps(WINDOW)}\t50\t60\t30\n")
    buffer.seek(0)
    with conn.cursor() as cursor:
        cursor.copy_expert("COPY senders (account, id, time_zone, sending_window, daily_limit, min_gap_s, jitter_s) "
                           "FROM STDIN", buffer)
    conn.commit()


def warm_caps(caps, senders: list[tuple]) -> None:
    """Every sender's window and pace as a running service has them (empty, complete): the figures are the
    steady state's, not the rebuild from PostgreSQL after a Redis loss."""
    from coldmail.caps.pacing import local_day

    today = local_day(datetime.now(UTC), "UTC").toordinal()
    for sender_id, zone in senders:
        caps.scripts.rebuild(caps.key("default", sender_id), [], window_ms=caps.window_ms)
        caps.scripts.rebuild_pace(caps.pace_key("default", sender_id),
                                  day=local_day(datetime.now(UTC), zone).toordinal() if zone else today,
                                  count=0, next_ms=0)


def planning(caps, conn, due: int) -> dict:
    """Make `due` random PENDING emails due now and hand them all over: CPU per email of the plan alone and of
    the hand-over around it (this process), and the wall time per email."""
    from coldmail.db import database
    from coldmail.db.emails import handover

    with conn.cursor() as cursor:
        cursor.execute("UPDATE emails SET next_attempt_at = now(), queued_at = NULL WHERE id IN ("
                       "SELECT id FROM emails WHERE status = 'PENDING' AND queued_at IS NULL "
                       "ORDER BY random() LIMIT %s)", (due,))
    conn.commit()
    plan_cpu = [0.0]

    def timed_plan(rows):
        started = time.process_time()
        try:
            return caps.plan(rows)
        finally:
            plan_cpu[0] += time.process_time() - started

    handed = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with database.connection_context():
        while True:
            n, _ = handover.take_due(horizon_s=60, limit=2000, plan=timed_plan)
            handed += n
            if n < 2000:
                break
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"emails": handed, "plan_cpu_us": 1e6 * plan_cpu[0] / max(1, handed),
            "handover_cpu_us": 1e6 * cpu / max(1, handed), "wall_us": 1e6 * wall / max(1, handed)}


def place_again_big(senders: list[tuple]) -> dict:
    """The big sender's window moves by an hour: the wall time to place its PENDING emails again."""
    from coldmail.caps.pacing import Pacing
    from coldmail.db import database
    from coldmail.db.emails.placement import place_again
    from coldmail.db.senders import set_pacing
    from coldmail.senders import _placer

    sender_id = senders[0][0]
    started = time.perf_counter()
    with database.connection_context(), database.atomic():
        _, after = set_pacing("default", sender_id, {"sending_window": dict(WINDOW, start="09:00", end="21:00")})
        moved = place_again("default", sender_id, _placer(Pacing.from_row(after)))
    return {"moved": moved, "seconds": time.perf_counter() - started}


def lateness(db_url: str, redis_db: rig.BenchRedis, n: int) -> dict:
    """`n` free senders whose windows open from LEAD_S from now on, PER_SECOND a second (each in its own zone's
    wall clock, to the second), one email each due now: arrival minus its window's opening, against
    `run.py api` and one worker process. Openings are spread so that the figure is the window's precision, not
    the time to send many emails due at one instant (the drain's rate)."""
    first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=LEAD_S)
    openings = {}
    with rig.Sink() as sink, rig.Coldmail(database_url=db_url, redis_url=redis_db.url, smtp_url=sink.url,
                                          env={}, split=True, worker_threads=8) as cm:
        for i in range(n):
            zone = ZONES[i % len(ZONES)]
            opening = first + timedelta(seconds=i // PER_SECOND)
            local = opening.astimezone(ZoneInfo(zone))
            end = (local + timedelta(minutes=5)).strftime("%H:%M:%S")
            if end <= local.strftime("%H:%M:%S"):
                end = "23:59:59"
            req = {"fromAddress": "bench@example.com", "hourlyLimit": 100, "timeZone": zone,
                   "sendingWindow": {"days": WINDOW["days"], "start": local.strftime("%H:%M:%S"), "end": end},
                   "dailyLimit": 50, "minGapSeconds": 60, "jitterSeconds": 30}
            _put(cm, f"late{i}", req)
            openings[f"late-{i}"] = opening.timestamp()
        if datetime.now(UTC) >= first:
            raise SystemExit("putting the senders took longer than the lead: use fewer --lateness-senders")
        emails = [{"recipient": f"l{i}@example.com", "subject": f"late-{i}", "body": "Hi", "senderId": f"late{i}"}
                  for i in range(n)]
        cm.schedule(emails, batch=500)
        rig.wait_arrivals(sink, "late-", n, timeout_s=60 + n / PER_SECOND)
        late = [at - openings[subject] for subject, at in sink.first_arrivals("late-").items()]
    return {"n": n, "per_second": PER_SECOND, "early": sum(1 for x in late if x < 0), **rig.percentiles_ms(late)}


def _put(cm, sender_id: str, body: dict) -> None:
    import urllib.request

    req = urllib.request.Request(f"{cm.url}/senders/{sender_id}", data=json.dumps(body).encode(), method="PUT",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {rig.API_KEY}"})
    with urllib.request.urlopen(req, timeout=30):
        pass


def report(result: dict) -> str:
    small, large = result["planning_small"], result["planning_large"]
    lines = [
        f"senders {result['senders']:,}, pending {result['pending']:,} over 30 days (COPY in {result['copy_s']:.1f}s)",
        f"planning at {result['small']:,} pending: plan {small['plan_cpu_us']:.0f} µs CPU/email, hand-over "
        f"{small['handover_cpu_us']:.0f} µs CPU/email, {small['wall_us']:.0f} µs wall/email ({small['emails']} emails)",
        f"planning at {result['pending']:,} pending: plan {large['plan_cpu_us']:.0f} µs CPU/email, hand-over "
        f"{large['handover_cpu_us']:.0f} µs CPU/email, {large['wall_us']:.0f} µs wall/email ({large['emails']} emails)",
        f"plan cost ratio large/small: {large['plan_cpu_us'] / max(1e-9, small['plan_cpu_us']):.2f} (goal: flat, ~1)",
        f"placing one sender's {result['big']:,} emails again: {result['replace']['seconds']:.2f}s "
        f"({result['replace']['moved']:,} moved)",
        f"Redis bytes per pending email: {result['redis_bytes_per_pending']:.2f} "
        f"({result['redis_bytes']:,} bytes in the db)",
    ]
    late = result.get("lateness")
    if late:
        lines.append(f"lateness after the window opens ({late['n']} free senders, "
                     f"{late.get('per_second', 1)} opening a second): p50 {late['p50']:.1f} ms, "
                     f"p99 {late['p99']:.1f} ms, max {late['max']:.1f} ms, early {late['early']} (goal p99 ≤ 50 ms)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.big >= args.emails or args.small > args.emails or args.senders < 2:
        raise SystemExit("--big must be under --emails, --small at most --emails, and --senders at least 2")
    import redis

    from coldmail.caps import Caps
    from coldmail.db import database
    from coldmail.db.connection import open_database
    from coldmail.db.migrations import migrate
    from coldmail.settings import Settings

    rng = random.Random(args.seed)
    bench_redis = rig.BenchRedis(args.redis_db)
    bench_redis.flush()
    result: dict = {"senders": args.senders, "small": args.small, "big": args.big}
    with rig.ThrowawayDatabase("pacing") as db:
        open_database(db.url, max_connections=4)
        try:
            migrate()
            conn = db.connect()
            senders = sender_rows(args.senders)
            insert_senders(conn, senders)
            start = datetime.now(UTC) + timedelta(hours=1)
            settings = Settings.from_env({"DATABASE_URL": db.url, "REDIS_URL": bench_redis.url}, dotenv=None)
            caps = Caps(settings, redis.Redis.from_url(bench_redis.url))
            warm_caps(caps, senders)
            # the first figure with few pending (the big sender's share scaled down alike)
            small_big = args.big * args.small // args.emails
            started = time.perf_counter()
            copy_emails(conn, email_rows(args.small, senders, big=small_big, start=start, rng=rng))
            result["planning_small"] = planning(caps, conn, min(args.due, args.small // 2))
            copy_emails(conn, email_rows(args.emails - args.small, senders, big=args.big - small_big,
                                         start=start, rng=rng))
            result["copy_s"] = time.perf_counter() - started
            with conn.cursor() as cursor:
                cursor.execute("ANALYZE emails")
            conn.commit()
            result["planning_large"] = planning(caps, conn, args.due)
            with conn.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM emails WHERE status = 'PENDING'")
                result["pending"] = cursor.fetchone()[0]
            result["redis_bytes"] = bench_redis.key_bytes()
            result["redis_bytes_per_pending"] = result["redis_bytes"] / max(1, result["pending"])
            result["replace"] = place_again_big(senders)
            with conn.cursor() as cursor:  # what the planning figures made due soon is not the lateness's
                cursor.execute("UPDATE emails SET status = 'CANCELLED' WHERE status = 'PENDING' "
                               "AND next_attempt_at < now() + interval '30 minutes'")
            conn.commit()
            conn.close()
        finally:
            database.close_all()
        if args.lateness_senders:
            result["lateness"] = lateness(db.url, bench_redis, args.lateness_senders)
    print(report(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
