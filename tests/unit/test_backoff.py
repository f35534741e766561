from coldmail.delivery.retry import backoff_s


def test_backoff_doubles_with_jitter_and_is_capped():
    for attempt, expected in [(1, 10), (2, 20), (3, 40)]:
        values = [backoff_s(attempt, base_s=10, max_s=1000) for _ in range(200)]
        assert min(values) >= expected * 0.8 and max(values) <= expected * 1.2
        assert len(set(values)) > 1
    assert backoff_s(30, base_s=10, max_s=60) <= 60 * 1.2
