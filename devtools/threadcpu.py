"""CPU time of this process by kind of thread, for the benchmarks (Linux /proc).

A sampler thread reads ``/proc/self/task/*/stat`` every 0.1 s and keeps each thread's
last figure, so threads that end before the run does (download pools, ``to_thread``
workers) still count. Threads are grouped by what they are: the event loop (the main
thread), Python worker threads (``asyncio.to_thread``: the reading stage, and the run's
other blocking calls), the download pool, the engine's threads (polars, its async
executor and tokio runtime), the allocator's background threads, and the rest.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from pathlib import Path

__all__ = ["ThreadCpu"]

_GROUPS = (
    ("download", ("segment-download",)),
    ("worker", ("asyncio_", "ThreadPoolExecutor")),
    ("engine", ("polars", "async-executor", "tokio-rt")),
    ("allocator", ("jemalloc",)),
)


def _group(name: str) -> str:
    if name == "MainThread":
        return "event loop"
    for group, prefixes in _GROUPS:
        if name.startswith(prefixes):
            return group
    return "other"


class ThreadCpu:
    """Use as a context manager; ``seconds()`` gives CPU seconds per thread group."""

    def __init__(self, interval: float = 0.1) -> None:
        self._interval = interval
        self._tick = os.sysconf("SC_CLK_TCK")
        self._last: dict[int, tuple[str, float]] = {}
        self._start: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thread-cpu", daemon=True)

    def __enter__(self) -> ThreadCpu:
        self.sample()
        self._start = {tid: cpu for tid, (_, cpu) in self._last.items()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def sample(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
        for task in Path("/proc/self/task").iterdir():
            tid = int(task.name)
            try:
                stat = (task / "stat").read_text()
                comm = (task / "comm").read_text().strip()
            except OSError:
                continue  # ended between the listing and the read
            fields = stat.rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / self._tick
            name = names.get(tid) or (self._last.get(tid, (comm, 0.0))[0])
            if name == "thread-cpu":
                continue
            self._last[tid] = (name if name != "python" else comm, cpu)

    def seconds(self) -> dict[str, float]:
        """CPU seconds since the start, per thread group."""
        out: dict[str, float] = defaultdict(float)
        for tid, (name, cpu) in self._last.items():
            out[_group(name)] += cpu - self._start.get(tid, 0.0)
        return dict(out)
