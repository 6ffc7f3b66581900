"""Benchmark: N profiles as a Customer Insights export in Azurite -> the Klaviyo sandbox with
Klaviyo's real rate limits. Prints wall time, profiles/s and the exporter's peak RSS.

    python -m devtools.benchmark                       # 100,000 and 1,000,000 profiles
    python -m devtools.benchmark --rows 250000 --partitions 4

The exporter runs in a child process of its own, so its peak RSS is its alone (not
Azurite's, the sandbox's or the generator's). These are figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobServiceClient

from devtools.local import ROOT, cpu_seconds, local_settings, stack
from devtools.sample_export import write_sample_export

FOLDER = "CustomerInsights_bench/KlaviyoExport"
SEGMENT = "BenchSegment"


def _definition() -> dict[str, Any]:
    doc = json.loads((ROOT / "examples" / "vip-customers.json").read_text())
    doc["name"] = "benchmark"
    doc["source"] = {"container": "customer-insights", "folder": FOLDER, "segment": SEGMENT}
    return doc


def child(definition_path: str) -> None:
    """Run one export in this process and print its report and peak RSS as JSON."""
    from shared.definitions import parse_definition
    from shared.runner import run_definition
    from shared.settings import Settings

    definition = parse_definition(Path(definition_path).read_bytes(), source=definition_path)
    started = time.perf_counter()
    report = asyncio.run(run_definition(definition, Settings.from_env()))
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # encoding worker processes
    print(
        json.dumps(
            {
                "report": report,
                "wall": wall,
                "peak_rss_mb": usage.ru_maxrss / 1024,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "worker_cpu_seconds": workers.ru_utime + workers.ru_stime,
                "worker_peak_rss_mb": workers.ru_maxrss / 1024,
            }
        )
    )


def _one(rows: int, partitions: int, phone_share: float) -> dict[str, Any]:
    with stack(sandbox_args=["--no-store-attributes"]) as (azurite, sandbox):
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        container = service.get_container_client("customer-insights")
        container.create_container()
        started = time.perf_counter()
        summary = write_sample_export(
            container,
            folder=FOLDER,
            segment=SEGMENT,
            rows=rows,
            partitions=partitions,
            phone_share=phone_share,
        )
        generated = time.perf_counter() - started
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(_definition(), f)
        env = {**os.environ, **local_settings(azurite.connection_string, sandbox.url)}
        out = subprocess.run(
            [sys.executable, "-m", "devtools.benchmark", "--child", f.name],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        os.unlink(f.name)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["sandbox_cpu"] = cpu_seconds(sandbox.pid)
        result["azurite_cpu"] = cpu_seconds(azurite.pid)
        result["generated_seconds"] = generated
        result["expected_sent"] = summary.unique_valid_emails
        return result


def _print(rows: int, result: dict[str, Any]) -> None:
    report = result["report"]
    r = report["rows"]
    print(
        f"{rows:>10,} rows | wall {result['wall']:6.1f}s | "
        f"{r['sent'] / result['wall']:>9,.0f} profiles/s | peak RSS {result['peak_rss_mb']:6.1f} MB"
        f" | jobs {report['jobs']['submitted']} | 429s {report['klaviyo']['throttled']} | "
        f"limiter wait {report['klaviyo']['rate_limit_wait_seconds']:.1f}s | "
        f"sent {r['sent']:,} (expected {result['expected_sent']:,}) | "
        f"accounted {report['accounted']}\n"
        f"{'':>10}      CPU seconds: exporter {result['cpu_seconds']:.1f} "
        f"+ its encoding workers {result['worker_cpu_seconds']:.1f} "
        f"(largest worker peak RSS {result['worker_peak_rss_mb']:.0f} MB), "
        f"sandbox {result['sandbox_cpu']:.1f}, Azurite {result['azurite_cpu']:.1f} "
        f"(Azurite's include writing the sample)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.benchmark", description=__doc__)
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--phone-share", type=float, default=0.3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    print(f"benchmark on {os.cpu_count()} cores; Klaviyo rate limits on (10/s, 150/min)")
    for rows in (int(n) for n in args.rows.split(",")):
        _print(rows, _one(rows, args.partitions, args.phone_share))
    return 0


if __name__ == "__main__":
    sys.exit(main())
