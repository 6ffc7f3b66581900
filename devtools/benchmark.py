"""Benchmark: N profiles as a Customer Insights export in Azurite -> the Klaviyo sandbox with
Klaviyo's real rate limits, end to end (blob read -> every job complete).

    python -m devtools.benchmark                        # 100k and 1M x 1, 3 and 8 partitions
    python -m devtools.benchmark --rows 1000000 --partitions 3
    python -m devtools.benchmark --ten-million          # adds 10M (3 partitions)

For each run it prints the wall time, profiles/s, the exporter's CPU per row (µs; the run
alone, and with the interpreter's start and imports), and the peak memory of the whole
exporter process tree: the sum of PSS (RSS where PSS cannot be read) over the process and
any children, sampled every 50 ms from outside, with the file pages in that peak (mapped
libraries, whose share moves with the page cache's state), and the most disk the tree's
unlinked temporary files (a run's spills) took at once. The exporter runs in a process of
its own; Azurite and the sandbox run beside it, on the same cores. Each run gets a fresh
stack.

The generated export has nearly every person a phone number of their own, in the formats
people type, plus the usual dirt (devtools/sample_export.py). These are figures, not a
pass/fail test; the machine's load average is printed with them, because other work on
the same cores shows in the wall times (less in the CPU per row).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from azure.storage.blob import BlobServiceClient

from devtools.local import ROOT, cpu_seconds, local_settings, stack
from devtools.sample_export import write_sample_export
from devtools.threadcpu import ThreadCpu

FOLDER = "CustomerInsights_bench/KlaviyoExport"
SEGMENT = "BenchSegment"
_SAMPLE_SECONDS = 0.05
_NEAR_PEAK_MB = 8.0  # PSS is read when RSS is this close to its highest
_PSS_EVERY_SECONDS = 1.0


def _definition() -> dict[str, Any]:
    doc = json.loads((ROOT / "examples" / "vip-customers.json").read_text())
    doc["name"] = "benchmark"
    doc["source"] = {"container": "customer-insights", "folder": FOLDER, "segment": SEGMENT}
    return doc


def child(definition_path: str) -> None:
    """Run one export in this process; print its report and CPU figures as JSON."""
    imported = resource.getrusage(resource.RUSAGE_SELF)
    from shared.definitions import parse_definition
    from shared.engine import THREADS
    from shared.runner import run_definition
    from shared.settings import Settings

    definition = parse_definition(Path(definition_path).read_bytes(), source=definition_path)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with ThreadCpu() as threads:
        report = asyncio.run(run_definition(definition, Settings.from_env()))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "report": report,
                "wall": wall,
                "engine_threads": THREADS,
                "cpu_run": _cpu(after) - _cpu(before),
                "cpu_total": _cpu(after),
                "cpu_imports": _cpu(before) - _cpu(imported),
                "peak_rss_self_mb": after.ru_maxrss / 1024,
                "cpu_threads": threads.seconds(),
            }
        )
    )


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


class TreeMemory:
    """Samples the memory of a process and all its descendants (``tree=False``: the
    process alone); keeps the peak sum of their PSS, and how much of it was file pages
    (``peak_file_mb``: mapped library code and data, which the kernel can drop and read
    back, and whose size at a peak depends on the page cache's state, see the README);
    and the most disk its unlinked temporary files took at once (``peak_temp_mb``).

    Reading PSS walks every page table of the process (``smaps_rollup``): ~3 ms for a
    300 MB exporter, which at 20 a second took ~1 s of CPU of a 1M run from the cores it
    shares (measured with perf). RSS is a counter, so it is read every 50 ms and PSS only
    when RSS is within ``_NEAR_PEAK_MB`` of its highest yet (where a new peak can be) or
    a second after the last reading: the peak PSS is still read at the 50 ms pace.
    """

    def __init__(self, pid: int, *, tree: bool = True) -> None:
        self._root = psutil.Process(pid)
        self._tree = tree
        self.peak_mb = 0.0
        self.peak_file_mb = 0.0
        self.peak_temp_mb = 0.0
        self.measure = "PSS"
        self._file_mb = 0.0  # the file pages of the last PSS sum
        self._highest_rss = 0.0
        self._pss_at = -1.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(_SAMPLE_SECONDS)

    def _sample(self) -> None:
        try:
            children = self._root.children(recursive=True) if self._tree else []
        except psutil.NoSuchProcess:
            return
        processes = [self._root, *children]
        rss = self._sum(processes, pss=False)
        self.peak_temp_mb = max(self.peak_temp_mb, _unlinked_mb(processes))
        now = time.monotonic()
        if rss >= self._highest_rss - _NEAR_PEAK_MB or now - self._pss_at >= _PSS_EVERY_SECONDS:
            total = self._sum(processes, pss=True)
            if total > self.peak_mb:
                self.peak_mb, self.peak_file_mb = total, self._file_mb
            self._pss_at = now
        self._highest_rss = max(self._highest_rss, rss)

    def _sum(self, processes: list[psutil.Process], *, pss: bool) -> float:
        total = 0
        if pss:
            self._file_mb = 0.0
        for process in processes:
            try:
                if pss and self.measure == "PSS":
                    rollup = _rollup(process.pid)
                    if rollup is None:
                        total += process.memory_full_info().pss
                    else:
                        total += rollup["Pss"]
                        self._file_mb += rollup.get("Pss_File", 0) / 2**20
                else:
                    total += process.memory_info().rss
            except (psutil.AccessDenied, AttributeError):
                self.measure = "RSS"
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 2**20


def _unlinked_mb(processes: list[psutil.Process]) -> float:
    """The size of the deleted regular files the processes hold open (a run's spills are
    unlinked temporary files), each counted once."""
    sizes: dict[tuple[int, int], int] = {}
    for process in processes:
        try:
            fds = list(os.scandir(f"/proc/{process.pid}/fd"))
        except OSError:  # ended, or not Linux
            continue
        for fd in fds:
            try:
                if not os.readlink(fd.path).endswith(" (deleted)"):
                    continue
                info = os.stat(fd.path)  # through the link: the file itself
            except OSError:  # closed meanwhile
                continue
            if stat.S_ISREG(info.st_mode):
                sizes[(info.st_dev, info.st_ino)] = info.st_size
    return sum(sizes.values()) / 2**20


def _rollup(pid: int) -> dict[str, int] | None:
    """The process's ``smaps_rollup`` in bytes (None where the kernel has none)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except ProcessLookupError:  # the process ended while its file was read
        raise psutil.NoSuchProcess(pid) from None
    except FileNotFoundError:
        if not Path("/proc/self/smaps_rollup").exists():
            return None  # not Linux 4.14+: psutil reads what there is
        raise psutil.NoSuchProcess(pid) from None
    except PermissionError:
        raise psutil.AccessDenied(pid) from None
    out = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        out[name] = int(rest.split()[0]) * 1024
    return out


@dataclass(frozen=True, slots=True)
class Case:
    rows: int
    partitions: int


def _one(case: Case, phone_share: float) -> dict[str, Any]:
    with stack(sandbox_args=["--no-store-attributes"]) as (azurite, sandbox):
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        container = service.get_container_client("customer-insights")
        container.create_container()
        summary = write_sample_export(
            container,
            folder=FOLDER,
            segment=SEGMENT,
            rows=case.rows,
            partitions=case.partitions,
            phone_share=phone_share,
        )
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(_definition(), f)
        env = {**os.environ, **local_settings(azurite.connection_string, sandbox.url)}
        load_before = os.getloadavg()[0]
        sandbox_before, azurite_before = cpu_seconds(sandbox.pid), cpu_seconds(azurite.pid)
        proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.deployed", "devtools.benchmark", "--child", f.name],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with TreeMemory(proc.pid) as memory:
            out, err = proc.communicate()
        os.unlink(f.name)
        if proc.returncode != 0:
            raise RuntimeError(f"the exporter failed:\n{err[-4000:]}")
        result = json.loads(out.strip().splitlines()[-1])
        result.update(
            case=case,
            tree_peak_mb=memory.peak_mb,
            tree_peak_file_mb=memory.peak_file_mb,
            temp_peak_mb=memory.peak_temp_mb,
            memory_measure=memory.measure,
            sandbox_cpu=cpu_seconds(sandbox.pid) - sandbox_before,
            azurite_cpu=cpu_seconds(azurite.pid) - azurite_before,
            expected_sent=summary.unique_valid_emails,
            load=(load_before, os.getloadavg()[0]),
        )
        return result


def _line(result: dict[str, Any]) -> str:
    case, report = result["case"], result["report"]
    rows = report["rows"]
    return (
        f"{case.rows:>10,} | {case.partitions:>3} | {result['wall']:7.1f}s | "
        f"{rows['sent'] / result['wall']:>9,.0f} | "
        f"{1e6 * result['cpu_run'] / rows['read']:7.2f} | "
        f"{1e6 * result['cpu_total'] / rows['read']:7.2f} | "
        f"{result['tree_peak_mb']:7.1f} {result['memory_measure']} "
        f"({result['tree_peak_file_mb']:3.0f} file) | {result['temp_peak_mb']:6.0f} MB | "
        f"{report['jobs']['submitted']:>5} | {report['klaviyo']['throttled']:>4} | "
        f"{rows['sent']:>10,} / {result['expected_sent']:<10,} | "
        f"{report['accounted']!s:>5} | "
        f"{result['sandbox_cpu']:5.1f} / {result['azurite_cpu']:5.1f} | "
        f"{result['load'][0]:.2f}-{result['load'][1]:.2f}"
    )


def _threads(result: dict[str, Any]) -> str:
    rows = result["report"]["rows"]["read"] or 1
    seconds = sorted(result["cpu_threads"].items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {1e6 * cpu / rows:.2f}" for name, cpu in seconds)


_HEADER = (
    "      rows | prt |    wall | profiles/s | CPU µs/row run | +start | tree peak           "
    "| temp disk "
    "| jobs | 429s | sent / expected        | accnt | CPU s sandbox/Azurite | load avg"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.benchmark", description=__doc__)
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--partitions", default="1,3,8", help="comma-separated counts")
    parser.add_argument("--phone-share", type=float, default=0.95)
    parser.add_argument("--ten-million", action="store_true", help="also 10M rows, 3 partitions")
    parser.add_argument(
        "--threads", action="store_true", help="also the exporter's CPU by kind of thread"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    from shared.cpu import cgroup_cpu_limit, usable_cpus

    cases = [
        Case(int(rows), int(partitions))
        for rows in args.rows.split(",")
        for partitions in args.partitions.split(",")
    ]
    if args.ten_million:
        cases.append(Case(10_000_000, 3))
    print(
        f"benchmark on {os.cpu_count()} cores (usable {usable_cpus()}, cgroup quota "
        f"{cgroup_cpu_limit() or 'none'}); Klaviyo rate limits on (10/s, 150/min); "
        f"phone share {args.phone_share:.0%}; load average {os.getloadavg()[0]:.2f}"
    )
    print(_HEADER, flush=True)
    for case in cases:
        result = _one(case, args.phone_share)
        print(_line(result), flush=True)
        if args.threads:
            print(f"{'':>17}CPU µs/row by thread: {_threads(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
