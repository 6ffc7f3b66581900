"""How often and how long to retry a failed Klaviyo call."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter.

    A 429's ``Retry-After`` is honoured as given (plus a little jitter so that the
    waiting senders do not all return in the same instant).
    """

    max_attempts: int = 8
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after) + self.rng.uniform(0, 0.1)
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return self.rng.uniform(ceiling / 2, ceiling)

    def should_retry(self, attempt: int) -> bool:
        return attempt < self.max_attempts
