import random

from shared.retry import RetryPolicy


def test_backoff_grows_and_is_capped():
    policy = RetryPolicy(backoff=1.0, max_backoff=8.0, rng=random.Random(1))
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_retry_after_is_honoured_and_bounded():
    policy = RetryPolicy(max_retry_after=60.0, rng=random.Random(1))
    assert 3.0 <= policy.delay(1, retry_after=3.0) <= 3.1
    assert 60.0 <= policy.delay(1, retry_after=3600.0) <= 60.1


def test_attempts_are_bounded():
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(1) and policy.should_retry(2)
    assert not policy.should_retry(3)
