"""The benchmark comparison table: ratios point the right way, missing figures show as dashes."""

import math

from tests.bench import table


def test_ratio_is_above_one_when_coldmail_is_better_in_either_direction():
    # Given a throughput figure (higher is better) and a latency figure (lower is better)
    # When coldmail does twice as well on both
    # Then both ratios read 2
    assert table.ratio(2000.0, 1000.0, table.HIGHER) == 2.0
    assert table.ratio(50.0, 100.0, table.LOWER) == 2.0
    # and a worse coldmail reads below 1
    assert table.ratio(500.0, 1000.0, table.HIGHER) == 0.5


def test_ratio_of_missing_or_zero_figures():
    assert table.ratio(None, 10.0, table.HIGHER) is None
    assert table.ratio(10.0, None, table.LOWER) is None
    # coldmail keeps no Redis bytes per far-future email: infinitely better, not a division error
    assert math.isinf(table.ratio(0.0, 748.0, table.LOWER))
    assert table.ratio(0.0, 0.0, table.LOWER) is None


def test_number_formatting():
    assert table.number(None) == "–"
    assert table.number(12) == "12"
    assert table.number(1234.56) == "1,235"
    assert table.number(53.24) == "53.2"
    assert table.times(2.345) == "2.35×"
    assert table.times(math.inf) == "∞"


def _results():
    return {
        "coldmail": {
            "ingest": {"cmd": "ingest", "requests": 5000, "accepted_2xx": 5000, "requests_per_s": 2600.0,
                       "latency_ms": {"p50": 10.0, "p99": 40.0}, "pre_busy_cores": 0.2,
                       "cpu": {"other": 0.1, "target": 1.0}},
            "drain": {"cmd": "drain", "emails_per_s": 1680.0, "lost": 0, "duplicates": 1, "early": 0,
                      "final_status_counts": {"201": 4999, "error:ClientOSError": 1}},
        },
        "reference": {
            "ingest": {"cmd": "ingest", "requests": 5000, "accepted_2xx": 5000, "requests_per_s": 1300.0,
                       "latency_ms": {"p50": 20.0, "p99": 53.0}},
            "drain": {"cmd": "drain", "emails_per_s": 140.0},
            "drain_best": {"cmd": "drain", "emails_per_s": 587.0, "n": 5000, "drain_s": 8.0,
                           "cpu": {"total": 1.5, "target": 0.5, "postgres": 0.3, "redis": 0.1, "harness": 0.1,
                                   "sink": 0.2, "of_cores": 2, "wall_s": 10.0}},
        },
        "limit": {"headline": {"b_smtplib_msgs_per_s_4conns": 3360.0, "a_pg_insert_commit_per_s_8threads": 5750.0}},
    }


def test_rows_compare_against_the_reference_best_drain_and_report_the_sink_ceiling():
    # Given results of both systems and the machine's ceilings
    rows = {r[0]: r[1:] for r in table.rows(_results())}

    # Then ingest is 2× and its p99 1.33× better
    assert rows["ingest: requests/s"][:3] == ["2,600", "1,300", "2.00×"]
    assert rows["ingest: latency p99 ms"][:3] == ["40.0", "53.0", "1.32×"]
    # drain is compared with the seeded reference and with its best configuration separately
    assert rows["drain: emails/s vs reference as seeded"][2] == "12.00×"
    assert rows["drain: emails/s vs reference best (SMTP_POOL=1 SMTP_NODELAY=1)"][1:3] == ["587", "2.86×"]
    # the drain's share of the smtplib → sink ceiling: 1680 / 3360 and 587 / 3360
    assert rows["drain: % of the smtplib → sink ceiling (same run)"][:2] == ["50%", "17%"]
    # a duplicate and a request that got no answer are counted as failures
    assert rows["correctness: non-2xx + lost + duplicates + early"][:2] == ["2", "0"]
    assert rows["machine: PostgreSQL INSERT+COMMIT/s (8 threads)"][0] == "5,750"
    assert rows["load during ingest: cores busy before / other / target"][:2] == ["0.20 / 0.10 / 1.00", "– / – / –"]


def test_drain_cpu_per_email_counts_the_measured_wall_time_and_the_cores_busy_only_while_draining():
    # Given the reference's drain: 5,000 emails in 8 s, its CPU averaged over 10 s of measuring
    rows = {r[0]: r[1:] for r in table.rows(_results())}

    # Then the whole machine spent 1.5 cores × 10 s / 5,000 = 3 ms per email, the system under test
    # (0.5 + 0.3 + 0.1) × 10 s / 5,000 = 1.8 ms and the harness 0.6 ms
    assert rows["drain: CPU ms per email, whole machine"][:3] == ["–", "3.00", "–"]
    assert rows["drain: CPU ms per email, system (target + PostgreSQL + Redis)"][1] == "1.80"
    assert rows["drain: CPU ms per email, harness (load generator + sink)"][1] == "0.60"
    # and 1.5 cores × 10 s over the 8 s of draining is 1.88 cores busy
    assert rows["drain: cores busy while draining (of 2)"][1] == "1.88"
    # and without a seeded drain, the load row shows the best configuration's
    results = _results()
    results["reference"].pop("drain")
    results["reference"]["drain_best"]["pre_busy_cores"] = 0.05
    rows = {r[0]: r[1:] for r in table.rows(results)}
    assert rows["load during drain: cores busy before / other / target"][1] == "0.05 / – / 0.50"


def test_drain_cpu_ratio_reads_above_one_when_coldmail_spends_less():
    results = _results()
    results["coldmail"]["drain"].update(n=5000, drain_s=4.0, cpu={
        "total": 1.0, "target": 0.3, "postgres": 0.2, "redis": 0.05, "harness": 0.1, "sink": 0.2,
        "of_cores": 2, "wall_s": 6.0})

    rows = {r[0]: r[1:] for r in table.rows(results)}

    # 1.0 × 6 / 5,000 = 1.2 ms against 3.0: 2.5× less CPU per email
    assert rows["drain: CPU ms per email, whole machine"][:3] == ["1.20", "3.00", "2.50×"]
    assert rows["drain: cores busy while draining (of 2)"][:2] == ["1.50", "1.88"]


def test_rows_that_neither_system_measured_are_left_out():
    # Given only ingest results
    results = _results()
    results["coldmail"].pop("drain")
    results["reference"] = {"ingest": results["reference"]["ingest"]}
    results["limit"] = None

    labels = [r[0] for r in table.rows(results)]

    # Then no lateness, drain, backlog or machine rows appear
    assert not [label for label in labels if label.startswith(("lateness", "drain", "backlog", "machine"))]
    assert "ingest: requests/s" in labels


def test_markdown_table_has_aligned_columns():
    text = table.markdown([["ingest: requests/s", "2,600", "1,300", "2.00×", "≥ 2×"]])
    lines = text.splitlines()
    assert lines[0].startswith("| figure")
    assert len({len(line) for line in lines}) == 1  # every line as wide as the others
    assert lines[1].startswith("|---") and lines[1].count(":|") == 3  # numbers right-aligned


def _drain(rate: float, cpu_total: float) -> dict:
    return {"cmd": "drain", "emails_per_s": rate, "n": 5000, "drain_s": 5000 / rate,
            "cpu": {"total": cpu_total, "of_cores": 2, "wall_s": 5000 / rate + 2}}


def test_repeated_rounds_show_each_figures_median_run_whole_and_every_rounds_ratio():
    # Given three rounds of the drain, each system's rates in a different order
    rounds = [
        {"coldmail": {"drain": _drain(1300.0, 1.1)}, "reference": {"drain_best": _drain(700.0, 1.2)}},
        {"coldmail": {"drain": _drain(1100.0, 1.3)}, "reference": {"drain_best": _drain(950.0, 1.4)}},
        {"coldmail": {"drain": _drain(1400.0, 1.5)}, "reference": {"drain_best": _drain(800.0, 1.6)}},
    ]
    results = dict(table.medians(rounds), rounds=rounds)

    # Then each system's median run is chosen whole (its CPU comes with it)
    assert results["coldmail"]["drain"]["emails_per_s"] == 1300.0
    assert results["coldmail"]["drain"]["cpu"]["total"] == 1.1
    assert results["reference"]["drain_best"]["emails_per_s"] == 800.0
    rows = {r[0]: r[1:] for r in table.rows(results)}
    assert rows["drain: emails/s vs reference best (SMTP_POOL=1 SMTP_NODELAY=1)"][:3] == ["1,300", "800", "1.62×"]
    # and under the goal's row, the ratio of each round in turn: 1300/700, 1100/950, 1400/800
    each = rows["drain: emails/s vs reference best (SMTP_POOL=1 SMTP_NODELAY=1): ratio in each of 3 rounds"]
    assert each[2] == "1.86×, 1.16×, 1.75×"


def test_a_lower_is_better_figure_takes_its_median_from_the_other_end():
    runs = [{"lateness_ms": {"p99": v}} for v in (9.0, 4.0, 6.0, 30.0)]
    # an even count takes the worse of the two middles, whichever way better points: 4, 6, 9, 30 -> 9
    assert table.median_run(runs, "lateness")["lateness_ms"]["p99"] == 9.0
    assert table.median_run([{"cmd": "lateness"}], "lateness") is None
