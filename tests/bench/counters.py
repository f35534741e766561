"""Round trips per email: what one phase cost PostgreSQL (transactions, rows, index scans in
coldmail's own database) and Redis (commands in coldmail's own db, counted with MONITOR), with the
idle cost of a running coldmail (scheduler ticks, worker polling) taken off."""

from __future__ import annotations

import threading
import time
from collections import Counter

import psycopg2
import redis

DB_FIELDS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted", "tup_fetched")
TABLE_FIELDS = ("seq_scan", "idx_scan", "n_tup_ins", "n_tup_upd", "n_tup_del")
# pg_stat counters reach the views when a backend goes idle, and at the latest 10 s later (PG 15)
STATS_DELAY_S = 11.0


def pg_snapshot(dsn: str) -> Counter[str]:
    """Counters of the database `dsn` names, as "db.xact_commit", "emails.idx_scan", …"""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(DB_FIELDS)} FROM pg_stat_database WHERE datname = current_database()")
            row = cur.fetchone() or (0,) * len(DB_FIELDS)
            out = Counter({f"db.{name}": value or 0 for name, value in zip(DB_FIELDS, row)})
            cur.execute(f"SELECT relname, {', '.join(TABLE_FIELDS)} FROM pg_stat_user_tables")
            for relname, *values in cur.fetchall():
                out.update({f"{relname}.{name}": value or 0 for name, value in zip(TABLE_FIELDS, values)})
    finally:
        conn.close()
    return out


class RedisCommands:
    """MONITOR in a thread, counting the commands sent to one db, per named window. Commands a Lua
    script ran are counted as "lua:NAME": they cost Redis time but no round trip."""

    def __init__(self, url: str, db: int) -> None:
        self.db = db
        self.windows: dict[str, Counter[str]] = {}
        self._current: Counter[str] | None = None
        self._monitor = redis.Redis.from_url(url).monitor()
        self._monitor.__enter__()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-monitor", daemon=True)
        self._thread.start()

    def window(self, name: str | None) -> None:
        """Count from now on into window `name` (None: stop counting)."""
        self._current = self.windows.setdefault(name, Counter()) if name else None

    def _run(self) -> None:
        try:
            for info in self._monitor.listen():
                if self._stop.is_set():
                    return
                counter = self._current
                if counter is not None and info.get("db") == self.db:
                    name = info["command"].split(" ", 1)[0].strip('"').upper()
                    counter[("lua:" if info.get("client_type") == "lua" else "") + name] += 1
        except Exception:  # the connection is closed by stop()
            return

    def stop(self) -> None:
        self._stop.set()
        try:
            self._monitor.connection.disconnect()
        except Exception:
            pass
        self._thread.join(5)


def per_unit(phase: Counter[str], idle: Counter[str], *, phase_s: float, idle_s: float, units: int
             ) -> dict[str, float]:
    """(phase − idle rate × phase length) / units, for every counter that moved in the phase."""
    out = {}
    for key, value in phase.items():
        if value <= 0:
            continue
        net = value - idle.get(key, 0) * (phase_s / idle_s if idle_s > 0 else 0)
        out[key] = round(net / units, 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _calls(commands: Counter[str]) -> int:
    return sum(n for name, n in commands.items() if not name.startswith("lua:"))


def delta(after: Counter[str], before: Counter[str]) -> Counter[str]:
    return Counter({k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)})


class Meter:
    """Snapshots around an idle window and a phase; `result(units)` gives the net cost per unit."""

    def __init__(self, *, dsn: str, redis_url: str, redis_db: int) -> None:
        self.dsn = dsn
        self.redis = RedisCommands(redis_url, redis_db)
        self.marks: dict[str, tuple[float, Counter[str]]] = {}

    def mark(self, name: str, *, window: str | None) -> None:
        self.marks[name] = (time.monotonic(), pg_snapshot(self.dsn))
        self.redis.window(window)

    def result(self, units: int) -> dict:
        (t0, s0), (t1, s1), (t2, s2) = self.marks["idle"], self.marks["phase"], self.marks["end"]
        idle_s, phase_s = t1 - t0, t2 - t1
        pg_idle, pg_phase = delta(s1, s0), delta(s2, s1)
        r_idle, r_phase = self.redis.windows.get("idle", Counter()), self.redis.windows.get("phase", Counter())
        return {
            "units": units, "idle_s": round(idle_s, 1), "phase_s": round(phase_s, 1),
            "postgres_per_unit": per_unit(pg_phase, pg_idle, phase_s=phase_s, idle_s=idle_s, units=units),
            "redis_per_unit": per_unit(r_phase, r_idle, phase_s=phase_s, idle_s=idle_s, units=units),
            "redis_round_trips_per_unit": round(
                (_calls(r_phase) - _calls(r_idle) * phase_s / idle_s) / units, 2) if idle_s > 0 else None,
            "postgres_idle_per_s": {k: round(v / idle_s, 1) for k, v in pg_idle.items()} if idle_s > 0 else {},
            "redis_idle_per_s": {k: round(v / idle_s, 1) for k, v in r_idle.items()} if idle_s > 0 else {},
        }

    def stop(self) -> None:
        self.redis.stop()
