"""The mutable heart of a running sandbox: config, state, limiter, faults, counters.

One ``Runtime`` per sandbox, owned by its event loop. Changing the config at run time
goes through ``configure`` so the limiter, the fault injector and the job runner all see
the same new object at once.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .config import SandboxConfig
from .faults import FaultInjector
from .limits import RateLimiter
from .prepare import PreparedJob, prepare_bulk_import, warm_up, worker_init
from .recording import RequestLog
from .state import SandboxState

__all__ = ["RequestStats", "Runtime"]

_log = logging.getLogger(__name__)


class RequestStats:
    """Counters the /api middleware keeps: by family and status, 429s, concurrency."""

    def __init__(self) -> None:
        self.by_family: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        # "DELETE /api/lists/{id}/relationships/profiles" -> status -> count
        self.by_operation: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.throttled = 0
        self.dropped = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self, family: str, status: int | None, operation: str = "other") -> None:
        self.in_flight -= 1
        outcome = str(status) if status is not None else "dropped"
        self.by_family[family][outcome] += 1
        self.by_operation[operation][outcome] += 1
        if status == 429:
            self.throttled += 1
        elif status is None:
            self.dropped += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": {family: dict(c) for family, c in sorted(self.by_family.items())},
            "operations": {op: dict(c) for op, c in sorted(self.by_operation.items())},
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
        self.recorded = RequestLog(
            max_requests=config.max_recorded_requests, max_bytes=config.max_recorded_bytes
        )
        self._pool: ProcessPoolExecutor | None = None

    async def start_workers(self) -> None:
        """Start ``parse_workers`` processes, and wait until each has answered once."""
        count = self.config.parse_workers
        if not count:
            return
        # forkserver: never fork a process that may run threads (the in-thread sandbox).
        self._pool = ProcessPoolExecutor(
            count, mp_context=multiprocessing.get_context("forkserver"), initializer=worker_init
        )
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, warm_up) for _ in range(count)))

    def stop_workers(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    async def prepare(self, raw: bytes) -> PreparedJob:
        """Parse and check a bulk import body, in a worker when there are any."""
        keep = self.config.store_attributes
        if self._pool is None:
            return prepare_bulk_import(raw, keep_attributes=keep, pause_gc=True)
        work = functools.partial(prepare_bulk_import, raw, keep_attributes=keep, pause_gc=False)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): carry on without workers.
            _log.warning("parse worker pool broke; parsing in the event loop from now on")
            self.stop_workers()
            return prepare_bulk_import(raw, keep_attributes=keep, pause_gc=True)

    def configure(self, changes: Mapping[str, Any]) -> SandboxConfig:
        """Apply run-time ``changes`` (validated first; nothing changes if one is bad)."""
        new = self.config.with_changes(changes)
        self._install(new, frozenset(changes))
        return new

    def _install(self, new: SandboxConfig, changed: frozenset[str]) -> None:
        self.config = new
        self.state.config = new
        self.faults.configure(new, changed)
        self.recorded.resize(
            max_requests=new.max_recorded_requests, max_bytes=new.max_recorded_bytes
        )

    def reset(self, *, restore_config: bool = False) -> None:
        """Forget profiles, jobs, counters and recordings; optionally the config changes too."""
        if restore_config:
            self._install(self.initial_config, frozenset({"seed", "throttle_storm"}))
        self.state.reset()
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
