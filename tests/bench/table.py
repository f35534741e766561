"""The comparison table: which harness figure goes in which row, the ratio, the text.

Pure functions over the harness's JSON results, so the table can be rebuilt from a saved
`--json-out` file and tested without running anything. `results` looks like
{"coldmail": {"ingest": {...}, ...}, "reference": {"ingest": {...}, "drain_best": {...}, ...},
"limit": {...}}: one harness result line per figure, as `harness.py` printed it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

HIGHER, LOWER = "higher", "lower"
SMTP_CEILING = "headline.b_smtplib_msgs_per_s_4conns"
FIGURES = ("ingest", "lateness", "drain", "backlog")


@dataclass(frozen=True)
class Row:
    """A compared figure: coldmail's result `cold` and the reference's result `ref` at `path`."""
    label: str
    cold: str
    ref: str
    path: str
    better: str
    goal: str = ""


ROWS = (
    Row("ingest: requests/s", "ingest", "ingest", "requests_per_s", HIGHER, "≥ 2×"),
    Row("ingest: steady requests/s (10th–90th pct)", "ingest", "ingest", "steady_requests_per_s", HIGHER),
    Row("ingest: latency p50 ms", "ingest", "ingest", "latency_ms.p50", LOWER),
    Row("ingest: latency p99 ms", "ingest", "ingest", "latency_ms.p99", LOWER, "≥ 1× (no worse)"),
    Row("lateness: p50 ms", "lateness", "lateness", "lateness_ms.p50", LOWER),
    Row("lateness: p99 ms", "lateness", "lateness", "lateness_ms.p99", LOWER, "coldmail ≤ 50 ms"),
    Row("lateness: max ms", "lateness", "lateness", "lateness_ms.max", LOWER),
    Row("drain: emails/s vs reference as seeded", "drain", "drain", "emails_per_s", HIGHER),
    Row("drain: emails/s vs reference best (SMTP_POOL=1 SMTP_NODELAY=1)", "drain", "drain_best",
        "emails_per_s", HIGHER, "≥ 2×"),
    Row("drain: steady emails/s vs reference best", "drain", "drain_best", "steady_emails_per_s", HIGHER),
    Row("backlog: Redis bytes per far-future email", "backlog", "backlog",
        "redis_db_key_bytes_per_far_email", LOWER, "coldmail < 10 (10 MB per million)"),
    Row("backlog: far-future ingest requests/s", "backlog", "backlog", "far_ingest.requests_per_s", HIGHER),
    Row("backlog: due-now lateness p99 ms", "backlog", "backlog", "lateness_ms.p99", LOWER),
)

CEILINGS = (
    ("machine: PostgreSQL INSERT+COMMIT/s (8 threads)", "headline.a_pg_insert_commit_per_s_8threads"),
    ("machine: smtplib → sink msgs/s (4 persistent connections)", SMTP_CEILING),
    ("machine: trivial aiohttp endpoint requests/s", "headline.c_trivial_aiohttp_requests_per_s"),
    ("machine: redis-py LPUSH+ZADD pairs/s (1 connection)", "headline.d_redis_lpush_zadd_pairs_per_s_1conn"),
)


#: the number that ranks repeated runs of a figure: the table shows each figure's median run, whole
HEADLINE = {
    "ingest": ("requests_per_s", HIGHER),
    "lateness": ("lateness_ms.p99", LOWER),
    "drain": ("emails_per_s", HIGHER),
    "drain_best": ("emails_per_s", HIGHER),
    "backlog": ("lateness_ms.p99", LOWER),
}


def median_run(runs: list[dict], key: str) -> dict | None:
    """Of repeated runs of one figure, the median one by its HEADLINE number (the worse of the two middles
    of an even count): a real run, so its rows (CPU, load, latency) still belong together."""
    path, better = HEADLINE[key]
    ranked = sorted((r for r in runs if get(r, path) is not None), key=lambda r: get(r, path),
                    reverse=better == LOWER)
    return ranked[(len(ranked) - 1) // 2] if ranked else None


def medians(rounds: list[dict]) -> dict:
    """{"coldmail": {figure: median run}, "reference": {...}} over rounds shaped like that."""
    out: dict = {"coldmail": {}, "reference": {}}
    for system in out:
        keys = {key for r in rounds for key in r.get(system, {})}
        for key in sorted(keys):
            run = median_run([r[system][key] for r in rounds if key in r.get(system, {})], key)
            if run is not None:
                out[system][key] = run
    return out


def get(result: dict | None, path: str) -> Any:
    """The value at a dotted path of a harness result, or None."""
    value: Any = result
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def ratio(cold: float | None, ref: float | None, better: str) -> float | None:
    """How many times better coldmail is (> 1: coldmail better), whichever way `better` points.
    None when either side is missing; infinity when the worse side is zero."""
    if cold is None or ref is None:
        return None
    num, den = (cold, ref) if better == HIGHER else (ref, cold)
    if den <= 0:
        return math.inf if num > 0 else None
    return num / den


def number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return str(value)


def times(value: float | None) -> str:
    if value is None:
        return "–"
    return "∞" if math.isinf(value) else f"{value:.2f}×"


def ceiling_fraction(drain: dict | None, limit: dict | None) -> float | None:
    """Drain emails/s as a percentage of the smtplib → sink ceiling measured in the same run."""
    rate, ceiling = get(drain, "emails_per_s"), get(limit, SMTP_CEILING)
    if rate is None or not ceiling:
        return None
    return 100.0 * rate / ceiling


#: the drain's CPU, per email, by who spent it (the harness's `cpu` groups): what the machine's cores buy
DRAIN_CPU = (
    ("drain: CPU ms per email, whole machine", ("total",), True),
    ("drain: CPU ms per email, system (target + PostgreSQL + Redis)", ("target", "postgres", "redis"), True),
    ("drain: CPU ms per email, harness (load generator + sink)", ("harness", "sink"), False),
)


def cpu_ms_per_email(drain: dict | None, groups: Iterable[str]) -> float | None:
    """Core-milliseconds the `groups` spent per email sent during a drain (cores × the measured wall time,
    over the emails that arrived)."""
    cpu, arrived = get(drain, "cpu") or {}, get(drain, "n")
    values = [cpu.get(g) for g in groups]
    if not cpu.get("wall_s") or not arrived or any(v is None for v in values):
        return None
    return 1000.0 * sum(values) * cpu["wall_s"] / arrived


def busy_while_draining(drain: dict | None) -> float | None:
    """Cores the whole machine used while emails were draining (first request to last arrival): the
    harness averages over its settle time too, when the machine is idle again."""
    total, wall, drain_s = get(drain, "cpu.total"), get(drain, "cpu.wall_s"), get(drain, "drain_s")
    if total is None or not wall or not drain_s:
        return None
    return total * wall / drain_s


def _load(result: dict | None) -> str:
    """Machine load around a figure: cores busy before it (quiet-wait), other load and target during it."""
    if not result:
        return "–"
    parts = (get(result, "pre_busy_cores"), get(result, "cpu.other"), get(result, "cpu.target"))
    return " / ".join("–" if p is None else f"{p:.2f}" for p in parts)


def _failures(result: dict | None) -> int | None:
    """Requests not answered 2xx plus emails lost or sent twice: what a correct run keeps at 0."""
    if not result:
        return None
    if result.get("cmd") == "ingest":
        return result.get("requests", 0) - result.get("accepted_2xx", 0)
    bad = sum(result.get(k) or 0 for k in ("lost", "duplicates", "early"))
    statuses = result.get("final_status_counts") or {}
    return bad + sum(n for st, n in statuses.items() if not (st.isdigit() and 200 <= int(st) < 300))


def rows(results: dict) -> list[list[str]]:
    """[figure, coldmail, reference, ratio, goal] for every figure either system has a value for."""
    cold, ref, limit = results.get("coldmail", {}), results.get("reference", {}), results.get("limit")
    rounds = results.get("rounds") or []
    out = []
    for row in ROWS:
        c, r = get(cold.get(row.cold), row.path), get(ref.get(row.ref), row.path)
        out.append([row.label, number(c), number(r), times(ratio(c, r, row.better)), row.goal])
        if len(rounds) > 1 and row.goal:
            each = [ratio(get(one.get("coldmail", {}).get(row.cold), row.path),
                          get(one.get("reference", {}).get(row.ref), row.path), row.better) for one in rounds]
            if any(x is not None for x in each):
                out.append([f"{row.label}: ratio in each of {len(rounds)} rounds", "", "",
                            ", ".join(times(x) for x in each), "the row above: each system's median run"])
    out.append(["drain: % of the smtplib → sink ceiling (same run)",
                _percent(ceiling_fraction(cold.get("drain"), limit)),
                _percent(ceiling_fraction(ref.get("drain_best"), limit)), "", "reference: best configuration"])
    cold_drain, ref_drain = cold.get("drain"), ref.get("drain_best")
    for label, groups, compared in DRAIN_CPU:
        c, r = cpu_ms_per_email(cold_drain, groups), cpu_ms_per_email(ref_drain, groups)
        out.append([label, _hundredths(c), _hundredths(r), times(ratio(c, r, LOWER)) if compared else "",
                    "reference: best configuration"])
    c, r = busy_while_draining(cold_drain), busy_while_draining(ref_drain)
    cores = get(cold_drain, "cpu.of_cores") or get(ref_drain, "cpu.of_cores")
    out.append([f"drain: cores busy while draining (of {cores or '–'})", _hundredths(c), _hundredths(r), "",
                "all of them: the drain is CPU-bound"])
    out.append(["correctness: non-2xx + lost + duplicates + early",
                number(_sum(_failures(cold.get(f)) for f in FIGURES)),
                number(_sum(_failures(ref.get(f)) for f in (*FIGURES, "drain_best"))), "", "0"])
    for label, path in CEILINGS:
        out.append([label, number(get(limit, path)), "", "", "same machine, same run"])
    for figure in FIGURES:
        ref_run = ref.get(figure) or (ref.get("drain_best") if figure == "drain" else None)
        out.append([f"load during {figure}: cores busy before / other / target",
                    _load(cold.get(figure)), _load(ref_run), "", "quiet machine: before ≤ 0.3"])
    return [r for r in out if any(cell not in ("–", "") for cell in r[1:4])]


def _hundredths(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}%"


def _sum(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def markdown(table: list[list[str]], *, header: tuple[str, ...] = (
        "figure", "coldmail", "reference", "ratio (>1: coldmail better)", "goal")) -> str:
    """A GitHub-style table with aligned columns (numbers right-aligned)."""
    cells = [list(header), *table]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    right = [0 < i < len(header) - 1 for i in range(len(header))]  # the number columns
    rule = "|" + "|".join("-" * (w + 1) + (":" if r else "-") for w, r in zip(widths, right)) + "|"
    lines = []
    for row in cells:
        padded = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(row, widths, right)]
        lines.append("| " + " | ".join(padded) + " |")
    lines.insert(1, rule)
    return "\n".join(lines)
