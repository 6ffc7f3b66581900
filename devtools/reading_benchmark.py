"""The reading stage alone, in this process: µs per row for each of its steps.

    python -m devtools.reading_benchmark --rows 1000000 --partitions 3
    python -m devtools.reading_benchmark --rows 1000000 --keep /tmp/azurite-1m   # reuse data

The benchmark's export (devtools/sample_export.py, the same seed and dirt) is written to
Azurite once (``--keep DIR`` keeps it there for the next call); then the snapshot is read
as a run reads it, ``BlockReader -> BlockMapper -> SeenKeys -> Packer`` plus each job's
request body (``Batch.payload``), with no Klaviyo and no sync plan. For each step it prints
the wall time and the CPU time per row: the process's CPU while the step ran (the
engine's threads included) less the download threads' CPU in that time, which is shown
apart as "download". The peak of the process's PSS is sampled every 50 ms. Figures for
iterating on the data plane, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devtools.azurite import Azurite
from devtools.benchmark import TreeMemory

ROOT = Path(__file__).resolve().parent.parent
FOLDER = "CustomerInsights_bench/KlaviyoExport"
SEGMENT = "BenchSegment"
CONTAINER = "customer-insights"
_STEPS = ("read", "map", "dedupe", "pack", "payload")


def _tick() -> float:
    return os.sysconf("SC_CLK_TCK")


_LAST_SEEN: dict[int, float] = {}  # a thread's CPU when last read (it may have ended since)


def _thread_cpu(native_ids: set[int]) -> float:
    """CPU seconds of the given threads of this process (Linux /proc), counting a thread
    that has ended with what it had used when last seen."""
    for tid in native_ids:
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        _LAST_SEEN[tid] = (int(fields[11]) + int(fields[12])) / _tick()
    return sum(_LAST_SEEN.get(tid, 0.0) for tid in native_ids)


def _download_threads() -> set[int]:
    return {
        t.native_id
        for t in threading.enumerate()
        if t.name.startswith("segment-download") and t.native_id is not None
    }


class _Clock:
    """Wall and CPU time per step; download threads' CPU booked apart."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._downloads: set[int] = set()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self._downloads |= _download_threads()
        cpu0, dl0, wall0 = time.process_time(), _thread_cpu(self._downloads), time.perf_counter()
        try:
            yield
        finally:
            self._downloads |= _download_threads()
            dl = _thread_cpu(self._downloads) - dl0
            self.wall[name] += time.perf_counter() - wall0
            self.cpu[name] += time.process_time() - cpu0 - dl
            self.cpu["download"] += dl


def _definition() -> Any:
    from shared.definitions import parse_definition

    doc = json.loads((ROOT / "examples" / "vip-customers.json").read_text())
    doc["name"] = "reading-benchmark"
    doc["source"] = {"container": CONTAINER, "folder": FOLDER, "segment": SEGMENT}
    return parse_definition(json.dumps(doc).encode(), source="reading-benchmark")


def _ensure_data(azurite: Azurite, args: argparse.Namespace) -> None:
    from azure.storage.blob import BlobServiceClient

    from devtools.sample_export import write_sample_export

    wanted = {"rows": args.rows, "partitions": args.partitions, "phone_share": args.phone_share}
    marker = Path(azurite.location) / "reading-benchmark.json"
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.get_container_client(CONTAINER)
    if container.exists():
        container.delete_container()
        while container.exists():  # Azurite deletes asynchronously
            time.sleep(0.1)
    container.create_container()
    started = time.perf_counter()
    write_sample_export(
        container,
        folder=FOLDER,
        segment=SEGMENT,
        rows=args.rows,
        partitions=args.partitions,
        phone_share=args.phone_share,
    )
    print(f"wrote the export in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    marker.write_text(json.dumps(wanted))


def read_once(connection_string: str) -> dict[str, Any]:
    """Read the snapshot as a run does; the figures of each step."""
    from azure.storage.blob import BlobServiceClient

    from shared.batches import Packer
    from shared.dedupe import SeenKeys
    from shared.reading import open_source

    container = BlobServiceClient.from_connection_string(connection_string).get_container_client(
        CONTAINER
    )
    clock, rows, profiles, jobs, rejects = _Clock(), 0, 0, 0, 0
    payload_bytes = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    with TreeMemory(os.getpid(), tree=False) as peak:  # Azurite is a child: not counted
        source = open_source(container, _definition())
        seen, packer = SeenKeys(), Packer("Y6nRLr")
        blocks = source.reader.blocks(source.mapper.positions)
        while True:
            with clock.step("read"):
                block = next(blocks, None)
            if block is None:
                break
            with clock.step("map"):
                mapped = source.mapper.map(block)
            rows += mapped.records
            rejects += len(mapped.rejects)
            with clock.step("dedupe"):
                fresh = seen.first_seen(mapped.profiles.keys)
                block_profiles = mapped.profiles.select(fresh)
            profiles += len(block_profiles)
            with clock.step("pack"):
                full = list(packer.pack(block_profiles))
            for batch in full:
                with clock.step("payload"):
                    payload_bytes += len(batch.payload())
                    batch.release_payload()
                jobs += 1
        last = packer.flush()
        if last is not None:
            with clock.step("payload"):
                payload_bytes += len(last.payload())
            jobs += 1
        source.close()
    return {
        "rows": rows,
        "profiles": profiles,
        "rejects": rejects,
        "jobs": jobs,
        "payload_mb": payload_bytes / 1e6,
        "wall": time.perf_counter() - started,
        "cpu": time.process_time() - cpu_started,
        "steps_wall": dict(clock.wall),
        "steps_cpu": dict(clock.cpu),
        "peak_pss_mb": peak.peak_mb,
    }


def _print(result: dict[str, Any]) -> None:
    rows = max(result["rows"], 1)
    print(
        f"{result['rows']:,} rows, {result['profiles']:,} profiles, {result['rejects']:,} "
        f"rejected, {result['jobs']} jobs ({result['payload_mb']:.0f} MB); wall "
        f"{result['wall']:.2f}s ({1e6 * result['wall'] / rows:.2f} µs/row), CPU "
        f"{1e6 * result['cpu'] / rows:.2f} µs/row, peak PSS {result['peak_pss_mb']:.0f} MB"
    )
    print("  step     | CPU µs/row | wall µs/row")
    for name in (*_STEPS, "download"):
        cpu = result["steps_cpu"].get(name, 0.0)
        wall = result["steps_wall"].get(name)
        shown = f"{1e6 * wall / rows:11.2f}" if wall is not None else "  (threads)"
        print(f"  {name:<8} | {1e6 * cpu / rows:10.2f} | {shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.reading_benchmark", description=__doc__
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--phone-share", type=float, default=0.95)
    parser.add_argument("--repeat", type=int, default=1, help="read the snapshot this often")
    parser.add_argument("--keep", help="Azurite data folder to keep (and reuse) the export in")
    parser.add_argument("--profile", help="write a cProfile of the last read to this file")
    args = parser.parse_args(argv)
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    import shared.engine  # noqa: F401 - configures the engine before anything imports polars

    with Azurite(location=args.keep) as azurite:
        _ensure_data(azurite, args)
        # As a process's first run does (shared/runner.py): what is alive now, the
        # imports above all, leaves the cyclic collector's passes (after the garbage of
        # writing the export, which a run does not make, is collected; untimed).
        gc.collect()
        gc.freeze()
        for i in range(args.repeat):
            if args.profile and i == args.repeat - 1:
                import cProfile

                profiler = cProfile.Profile()
                result = profiler.runcall(read_once, azurite.connection_string)
                profiler.dump_stats(args.profile)
            else:
                result = read_once(azurite.connection_string)
            _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
