import asyncio

from shared.ratelimit import RateLimit, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_window_allows_burst_then_waits_for_oldest_to_age_out():
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(burst=3, steady=100, margin=0.05), clock=clock)
    for _ in range(3):
        assert limiter.delay() == 0
        limiter._sent.append(clock())
    assert abs(limiter.delay() - 1.05) < 1e-9
    clock.now += 0.5
    assert abs(limiter.delay() - 0.55) < 1e-9
    clock.now += 0.55
    assert limiter.delay() == 0


def test_steady_window_rules_beyond_the_burst():
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(burst=10, steady=15, margin=0), clock=clock)
    for i in range(15):
        clock.now = 1000.0 + i * 0.2  # 5/s: never trips the burst window
        assert limiter.delay() == 0
        limiter._sent.append(clock())
    clock.now = 1003.0
    assert abs(limiter.delay() - 57.0) < 1e-9  # the first send ages out at t=1060


def test_block_for_holds_senders_back():
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(burst=10, steady=150), clock=clock)
    limiter.block_for(7)
    assert limiter.delay() == 7
    clock.now += 7
    assert limiter.delay() == 0


async def test_acquire_spaces_real_sends_within_the_burst():
    loop = asyncio.get_running_loop()
    limiter = RateLimiter(RateLimit(burst=4, steady=100, margin=0.0))
    limiter.limit = RateLimit(burst=4, steady=100, margin=-0.8)  # 0.2 s windows: a quick test
    start = loop.time()
    for _ in range(8):
        await limiter.acquire()
    elapsed = loop.time() - start
    sent = list(limiter._sent)
    # never more than 4 sends inside any 0.2 s window
    for i in range(4, len(sent)):
        assert sent[i] - sent[i - 4] >= 0.2 - 1e-6
    assert elapsed >= 0.2
    assert limiter.waited > 0


def test_scaled_limits_keep_at_least_one():
    assert RateLimit(burst=10, steady=150).scaled(0.01) == RateLimit(burst=1, steady=1)
