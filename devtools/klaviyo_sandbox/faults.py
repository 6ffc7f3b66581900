"""Deterministic fault injection for /api requests.

A fault is decided before a request has any effect, so a client that sees one may resend
the same request safely — which is exactly what its retry logic must be tested for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .config import SandboxConfig

__all__ = ["Fault", "FaultInjector"]

SERVER_ERROR_STATUSES = (500, 502, 503)


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do instead of (or before) handling one request."""

    kind: str  # "throttle" | "drop" | "error" | "slow"
    status: int = 0
    retry_after: int = 0
    delay: float = 0.0


class FaultInjector:
    """Draws faults from a seeded generator; ``configure`` re-arms it after a change."""

    def __init__(self, config: SandboxConfig) -> None:
        self._config = config
        self._rng = random.Random(config.seed)
        self._storm_left = config.throttle_storm

    def configure(self, new: SandboxConfig, changed: frozenset[str]) -> None:
        self._config = new
        if "seed" in changed:
            self._rng = random.Random(new.seed)
        # Naming throttle_storm (even with the same number) arms a new storm of that size.
        if "throttle_storm" in changed:
            self._storm_left = new.throttle_storm

    def reset(self) -> None:
        self._rng = random.Random(self._config.seed)
        self._storm_left = self._config.throttle_storm

    @property
    def storm_left(self) -> int:
        return self._storm_left

    def draw(self, family: str) -> Fault | None:
        """The fault for the next request of ``family``, or None to handle it normally."""
        cfg = self._config
        if cfg.fault_families is not None and family not in cfg.fault_families:
            return None
        if self._storm_left > 0:
            self._storm_left -= 1
            return Fault("throttle", status=429, retry_after=cfg.throttle_storm_retry_after)
        if not (cfg.drop_rate or cfg.error_rate or cfg.slow_rate):
            return None
        # Always draw the same three numbers so a seed replays the same sequence of faults.
        drop, error, slow = self._rng.random(), self._rng.random(), self._rng.random()
        if drop < cfg.drop_rate:
            return Fault("drop")
        if error < cfg.error_rate:
            return Fault("error", status=self._rng.choice(SERVER_ERROR_STATUSES))
        if slow < cfg.slow_rate:
            return Fault("slow", delay=cfg.slow_seconds)
        return None
