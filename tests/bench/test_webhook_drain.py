"""The webhook drain's summary: median runs, the ratio with/without, each round's ratio."""

from tests.bench import webhook_drain


def drain(rate: float, total_cores: float = 2.0) -> dict:
    return {"emails_per_s": rate, "n": 1000, "cpu": {"total": total_cores, "target": 1.0, "postgres": 0.4,
                                                     "redis": 0.1, "wall_s": 2.0}}


def test_ratio_of_the_median_runs_and_of_each_round():
    # Given three rounds, the endpoint costing 10 %, 20 % and 0 % of the drain's rate
    rounds = [{"without": drain(1000), "with": drain(900)},
              {"without": drain(800), "with": drain(640)},
              {"without": drain(1200), "with": drain(1200)}]
    s = webhook_drain.summary(rounds)
    # Then each side's median run is compared, and every round's own ratio is kept, in order
    assert s["without"]["emails_per_s"] == 1000 and s["with"]["emails_per_s"] == 900
    assert s["ratio"] == 0.9
    assert s["rounds"] == [0.9, 0.8, 1.0]
    # CPU per email: cores × wall time over the emails (2 cores × 2 s / 1000 = 4 ms; the system's 1.5 → 3 ms)
    assert s["with"]["cpu_ms_total"] == 4.0 and s["with"]["cpu_ms_system"] == 3.0


def test_a_missing_side_gives_no_ratio_rather_than_an_error():
    s = webhook_drain.summary([{"without": drain(1000)}])
    assert s["ratio"] is None and s["rounds"] == [None]
    assert "–" in webhook_drain.report(s, [], 1000)
