"""How many CPUs this instance may really use, and the engine threads that follows from it.

On Flex Consumption the CPU share grows with the instance's memory and is enforced by a
cgroup quota; ``os.sched_getaffinity`` still lists every core of the host. A thread pool
sized by the affinity mask alone then runs more threads than the quota pays for, and they
are throttled in turn. So the usable count is the smaller of the two:

- cgroup v2: ``cpu.max`` holds ``"<quota> <period>"`` (or ``"max <period>"``), read from
  this process's cgroup (``/proc/self/cgroup`` line ``0::<path>``) and each parent up to
  the root, the tightest one winning;
- cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` of the ``cpu`` controller
  (``-1``: no quota), likewise up the hierarchy.

A fractional quota is rounded up (1.5 CPUs -> 2 threads): the engine's threads are busy in
bursts, and a half-used core is still worth a thread.

``configure_engine()`` must run before polars is imported (polars sizes its thread pool
once, at import); ``shared/engine.py`` calls it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["cgroup_cpu_limit", "configure_engine", "usable_cpus"]

_THREADS_VARIABLE = "POLARS_MAX_THREADS"


def usable_cpus(root: Path | str = "/") -> int:
    """CPUs this process may use: the affinity mask, capped by the cgroup quota (>= 1)."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core
    cpus = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def cgroup_cpu_limit(root: Path | str = "/") -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None if unlimited.

    ``root`` is the filesystem root to read ``proc/self/cgroup`` and ``sys/fs/cgroup``
    under (tests point it at a fake tree).
    """
    base = Path(root)
    try:
        membership = (base / "proc/self/cgroup").read_text()
    except OSError:
        return None
    limits: list[float] = []
    for line in membership.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            limits += _walk(base / "sys/fs/cgroup", path, _v2_limit)
        elif "cpu" in controllers.split(","):
            for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                limits += _walk(base / "sys/fs/cgroup" / mount, path, _v1_limit)
    return min(limits) if limits else None


def _walk(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The limits found in the cgroup at ``path`` and each of its parents."""
    found = []
    parts = [p for p in path.strip("/").split("/") if p]
    for depth in range(len(parts), -1, -1):
        limit = read(mount.joinpath(*parts[:depth]))
        if limit is not None:
            found.append(limit)
    return found


def _v2_limit(folder: Path) -> float | None:
    try:
        quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
    except OSError:
        return None
    return _ratio(quota, period or "100000")


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = (folder / "cpu.cfs_quota_us").read_text().strip()
        period = (folder / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    return q / p if q > 0 and p > 0 else None


def configure_engine(root: Path | str = "/") -> int:
    """Set the engine's thread count from the CPU quota, unless the environment already
    does; returns the count in effect. Call before polars is imported."""
    chosen = os.environ.get(_THREADS_VARIABLE, "")
    if chosen.isdigit() and int(chosen) > 0:
        return int(chosen)
    count = usable_cpus(root)
    os.environ[_THREADS_VARIABLE] = str(count)
    return count
