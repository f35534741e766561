"""The wait between webhook attempts: WEBHOOK_RETRY_BACKOFF_SECONDS doubling, less up to a quarter, an hour at
most; retried for at least a day with the defaults."""

from __future__ import annotations

from coldmail.webhooks.delivery import MAX_BACKOFF_S, backoff_s


def test_backoff_doubles_with_jitter_and_is_capped_at_an_hour():
    for attempts_before, nominal in ((0, 5), (1, 10), (2, 20), (5, 160)):
        waits = [backoff_s(attempts_before, base_s=5) for _ in range(200)]
        assert all(0.75 * nominal <= w <= nominal for w in waits)
        assert len(set(waits)) > 1  # jittered
    assert all(0.75 * MAX_BACKOFF_S <= backoff_s(n, base_s=5) <= MAX_BACKOFF_S for n in (10, 40, 1000))


def test_the_retries_of_a_day_are_few_dozen():
    # the delivery fails once an attempt fails a day after the event: how many attempts that takes at most
    elapsed, attempts = 0.0, 0
    while elapsed < 24 * 3600:
        elapsed += backoff_s(attempts, base_s=5)
        attempts += 1
    assert 20 <= attempts <= 45
