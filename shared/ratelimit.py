"""Client-side rate limiting per Klaviyo endpoint family.

Klaviyo counts requests per account and endpoint in fixed windows (a burst window of one
second and a steady window of one minute). A sliding log of send times is stricter than
any fixed window of the same length, so staying inside it never trips the server; a small
margin absorbs network jitter that could squeeze two sends into one server window.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["KLAVIYO_LIMITS", "RateLimit", "RateLimiter"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """At most ``burst`` requests per second and ``steady`` per minute."""

    burst: int
    steady: int
    margin: float = 0.05  # seconds added to each window, against jitter

    def scaled(self, factor: float) -> RateLimit:
        return RateLimit(
            burst=max(1, int(self.burst * factor)),
            steady=max(1, int(self.steady * factor)),
            margin=self.margin,
        )


# Klaviyo's published limits (revision 2026-07-15) for the endpoints this app calls.
KLAVIYO_LIMITS: dict[str, RateLimit] = {
    "import_jobs_create": RateLimit(burst=10, steady=150),
    "import_jobs_get": RateLimit(burst=10, steady=150),
    "import_errors": RateLimit(burst=10, steady=150),
    # GET a job's profiles and its profile ids
    "import_job_profiles": RateLimit(burst=10, steady=150),
    # POST / DELETE /api/lists/{id}/relationships/profiles (add, remove members)
    "list_relationships": RateLimit(burst=10, steady=150),
    # GET a list, its profiles (members, by e-mail or joined time) and their ids
    "lists_read": RateLimit(burst=75, steady=750),
    "subscriptions": RateLimit(burst=75, steady=750),
}


class RateLimiter:
    """Waits until a request of one family may be sent; one instance per family."""

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._sent: deque[float] = deque()
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()
        self.waited = 0.0  # total seconds spent waiting, for the run report

    def delay(self) -> float:
        """Seconds to wait before the next send is allowed (0 when it may go now)."""
        now = self._clock()
        second = 1.0 + self.limit.margin
        minute = 60.0 + self.limit.margin
        while self._sent and now - self._sent[0] >= minute:
            self._sent.popleft()
        wait = max(0.0, self._blocked_until - now)
        if len(self._sent) >= self.limit.steady:
            wait = max(wait, self._sent[-self.limit.steady] + minute - now)
        if len(self._sent) >= self.limit.burst:
            wait = max(wait, self._sent[-self.limit.burst] + second - now)
        return wait

    async def acquire(self) -> float:
        """Return when a request may be sent, and count it as sent: the send's time, for
        :meth:`refund` should it not be sent after all."""
        async with self._lock:
            while (wait := self.delay()) > 0:
                self.waited += wait
                await asyncio.sleep(wait)  # waiting out the window is the point here
            stamp = self._clock()
            self._sent.append(stamp)
            return stamp

    def refund(self, stamp: float) -> None:
        """Forget a send counted by :meth:`acquire` that did not happen."""
        with contextlib.suppress(ValueError):  # already out of the log's minute
            self._sent.remove(stamp)

    def block_for(self, seconds: float) -> None:
        """Hold every sender of this family back, e.g. after a 429's Retry-After."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)
