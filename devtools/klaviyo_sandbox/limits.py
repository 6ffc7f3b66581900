"""Klaviyo-style rate limiting: fixed windows per (account, endpoint family).

Two windows apply at once: a burst window of 1 s and a steady window of 60 s. Windows are
aligned to the monotonic clock (window n covers ``[n*len, (n+1)*len)``), and Retry-After is
the time until the blocking window ends, rounded up. A client that waits exactly that long
arrives in a fresh window, so obeying Retry-After never earns a second 429. Refused
requests are not counted: retrying does not dig the hole deeper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import RateLimit

__all__ = ["BURST_SECONDS", "STEADY_SECONDS", "RateLimiter"]

BURST_SECONDS = 1.0
STEADY_SECONDS = 60.0


@dataclass(slots=True)
class _Window:
    index: int = -1
    count: int = 0

    def roll(self, index: int) -> None:
        if index != self.index:
            self.index = index
            self.count = 0


@dataclass(slots=True)
class _Bucket:
    burst: _Window
    steady: _Window


class RateLimiter:
    """Counts requests per key and says how long to wait when a window is full."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def reset(self) -> None:
        self._buckets.clear()

    def acquire(self, key: tuple[str, str], limit: RateLimit) -> int:
        """Count one request; return 0 if admitted, else the Retry-After in seconds."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(_Window(), _Window())
        burst_index = math.floor(now / BURST_SECONDS)
        steady_index = math.floor(now / STEADY_SECONDS)
        bucket.burst.roll(burst_index)
        bucket.steady.roll(steady_index)
        # The steady window is checked first: when both are full, its wait is the true one.
        if bucket.steady.count >= limit.steady:
            return _retry_after((steady_index + 1) * STEADY_SECONDS - now)
        if bucket.burst.count >= limit.burst:
            return _retry_after((burst_index + 1) * BURST_SECONDS - now)
        bucket.burst.count += 1
        bucket.steady.count += 1
        return 0


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))
