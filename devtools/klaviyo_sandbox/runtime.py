"""The mutable heart of a running sandbox: config, state, limiter, faults, counters.

One ``Runtime`` per sandbox, owned by its event loop. Changing the config at run time
goes through ``configure`` so the limiter, the fault injector and the job runner all see
the same new object at once.
"""

from __future__ import annotations

import collections
import gc
from collections.abc import Mapping
from typing import Any

from .config import SandboxConfig
from .faults import FaultInjector
from .limits import RateLimiter
from .state import SandboxState

__all__ = ["RequestStats", "Runtime"]


class RequestStats:
    """Counters the /api middleware keeps: by family and status, 429s, concurrency."""

    def __init__(self) -> None:
        self.by_family: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.throttled = 0
        self.dropped = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self, family: str, status: int | None) -> None:
        self.in_flight -= 1
        self.by_family[family][str(status) if status is not None else "dropped"] += 1
        if status == 429:
            self.throttled += 1
        elif status is None:
            self.dropped += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": {family: dict(c) for family, c in sorted(self.by_family.items())},
            "throttled": self.throttled,
            "dropped": self.dropped,
            "in_flight": self.in_flight,
            "max_concurrent_requests": self.max_in_flight,
        }


class Runtime:
    """Everything a request handler needs, reachable from ``request.app[RUNTIME]``."""

    def __init__(self, config: SandboxConfig) -> None:
        self.initial_config = config
        self.config = config
        self.state = SandboxState(config)
        self.limiter = RateLimiter()
        self.faults = FaultInjector(config)
        self.stats = RequestStats()
        self.recorded: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=config.max_recorded_requests
        )

    def configure(self, changes: Mapping[str, Any]) -> SandboxConfig:
        """Apply run-time ``changes`` (validated first; nothing changes if one is bad)."""
        new = self.config.with_changes(changes)
        self._install(new, frozenset(changes))
        return new

    def _install(self, new: SandboxConfig, changed: frozenset[str]) -> None:
        self.config = new
        self.state.config = new
        self.faults.configure(new, changed)
        if new.max_recorded_requests != self.recorded.maxlen:
            self.recorded = collections.deque(self.recorded, maxlen=new.max_recorded_requests)

    def reset(self, *, restore_config: bool = False) -> None:
        """Forget profiles, jobs, counters and recordings; optionally the config changes too."""
        if restore_config:
            self._install(self.initial_config, frozenset({"seed", "throttle_storm"}))
        self.state.reset()
        if self.config.gc_freeze:
            gc.unfreeze()  # let the collector see what earlier jobs left behind
        self.limiter.reset()
        self.faults.reset()
        in_flight, self.stats = self.stats.in_flight, RequestStats()
        self.stats.in_flight = in_flight  # requests still being served will leave later
        self.recorded.clear()

    def stats_dict(self) -> dict[str, Any]:
        out = self.stats.as_dict()
        out.update(self.state.counts())
        out["recorded_requests"] = len(self.recorded)
        out["throttle_storm_left"] = self.faults.storm_left
        return out
