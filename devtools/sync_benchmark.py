"""Benchmark of mirror sync: a 1M-person segment into a list, then a day with 5 % churn.

    python -m devtools.sync_benchmark                  # 1,000,000 people, 3 partitions
    python -m devtools.sync_benchmark --people 200000

Three runs, each in a process of its own against Azurite and the Klaviyo sandbox with
Klaviyo's real rate limits:

1. stateless: the run as it was before sync (no state: every profile sent), on a stack of
   its own, as the baseline the first mirror run is compared with;
2. the first mirror run of the segment (an empty state: everyone joins);
3. the next day: 5 % left, 5 % joined, 5 % changed.

For each it prints the wall time (blob read -> every job complete -> removals -> state
saved), profiles sent, removal calls, list reads (leaver lookups) and the peak memory of
the exporter's process tree (devtools.benchmark.TreeMemory). Figures, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from azure.storage.blob import BlobServiceClient, ContainerClient

from devtools.benchmark import TreeMemory
from devtools.local import ROOT, local_settings, stack
from devtools.sample_export import _write_model

FOLDER = "CustomerInsights_sync/KlaviyoExport"
SEGMENT = "SyncBench"
_FIRST = ("Anna", "Bram", "Chloé", "Daan", "Eva", "Finn", "Greta", "Hugo", "Iris", "Jens")
_LAST = ("de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "Mulder", "Bos")
_TIERS = ("gold", "silver", "bronze")


def _row(i: int, version: int) -> str:
    """Person ``i`` as a CSV line; another ``version`` changes their first name."""
    h = (i * 2654435761) & 0xFFFFFFFF
    first, last = _FIRST[h % len(_FIRST)], _LAST[(h >> 8) % len(_LAST)]
    email = f"{first.lower()}.{last.replace(' ', '').lower()}{i}@example.com"
    return (
        f"C{i},{email},{first}{'e' * version},{last},+31 6 {12000000 + (h % 9999999)},"
        f"Utrecht,NL,{_TIERS[h % 3]},{(h % 500000) / 100:.2f},{'true' if h % 20 == 0 else 'false'},"
        f"2023-0{1 + h % 9}-1{h % 10}\r\n"
    )


def write_segment(
    container: ContainerClient, ids: range | list[int], changed: range, stamp: str, parts: int
) -> None:
    """One snapshot of the segment, ``parts`` headerless partitions, as CI writes it; the
    columns are devtools.sample_export's (the example definition maps them)."""
    taken_at = datetime.strptime(stamp, "%Y/%m/%d/%H%M").replace(tzinfo=UTC)
    prefix = f"{FOLDER}/{SEGMENT}/{stamp}/"
    names = [f"{prefix}{SEGMENT}_{n}.csv" for n in range(1, parts + 1)]
    people = list(ids)
    size = -(-len(people) // parts)
    for n, name in enumerate(names):
        chunk = people[n * size : (n + 1) * size]
        text = "".join(_row(i, 1 if i in changed else 0) for i in chunk)
        container.upload_blob(name, b"\xef\xbb\xbf" + text.encode(), overwrite=True)
    # The generator's own model.json: the same columns, CDM settings and locations.
    _write_model(container, FOLDER, SEGMENT, names, header=False, taken_at=taken_at)


def _definition() -> dict[str, Any]:
    doc = json.loads((ROOT / "examples" / "vip-customers.json").read_text())
    doc["name"] = "sync-benchmark"
    doc["source"] = {"container": "customer-insights", "folder": FOLDER, "segment": SEGMENT}
    doc["options"] = {"phone_default_region": "NL"}
    doc["sync"] = {"mode": "mirror", "max_removal_percent": 10}
    return doc


def child(definition_path: str, stateless: bool) -> None:
    """One run in this process; prints its report and wall time as JSON."""
    from shared.definitions import parse_definition
    from shared.export import ExportRun
    from shared.runner import key_provider, klaviyo_factory, run_definition, segments_container
    from shared.runs import BlobRunStore
    from shared.settings import Settings
    from shared.state import open_state

    with open(definition_path, "rb") as f:
        definition = parse_definition(f.read(), source=definition_path)
    settings = Settings.from_env()
    started = time.perf_counter()
    if stateless:
        provider, secret = key_provider(settings), definition.connection.api_key_secret

        async def api_key() -> str:
            return await asyncio.to_thread(provider.get_api_key, secret)

        run = ExportRun(
            definition,
            segments=segments_container(definition, settings),
            client_factory=klaviyo_factory(settings),
            api_key=api_key,
            store=BlobRunStore(open_state(settings), definition.name, "20260101T000000Z-000000"),
            sync_store=None,  # before sync: nothing remembered, everything sent
        )
        report = asyncio.run(run.execute())
    else:
        report = asyncio.run(run_definition(definition, settings))
    print(json.dumps({"report": report, "wall": time.perf_counter() - started}))


def _run(env: dict[str, str], *, stateless: bool = False) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(_definition(), f)
    command = [
        sys.executable,
        "-m",
        "devtools.deployed",
        "devtools.sync_benchmark",
        "--child",
        f.name,
    ]
    if stateless:
        command.append("--stateless")
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with TreeMemory(proc.pid) as memory:
        out, err = proc.communicate()
    os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError(f"the exporter failed:\n{err[-4000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["tree_peak_mb"] = memory.peak_mb
    return result


def _line(name: str, result: dict[str, Any]) -> str:
    report = result["report"]
    rows, members = report["rows"], report.get("members") or {}
    removal = ((report.get("sync") or {}).get("removal")) or {}
    return (
        f"{name:<22} | {result['wall']:6.1f}s | {rows['sent']:>9,} | {rows['unchanged']:>9,} | "
        f"{members.get('removed', 0):>7,} | {members.get('kept_not_owned', 0):>5,} | "
        f"{removal.get('lookup_calls', 0):>6,} | {removal.get('removal_calls', 0):>5,} | "
        f"{result['tree_peak_mb']:6.1f} MB | {report['status']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.sync_benchmark", description=__doc__)
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--stateless", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.stateless)
        return 0
    n, parts, churn = args.people, args.partitions, args.people // 20
    print(
        f"sync benchmark: {n:,} people, {parts} partitions, 5 % churn; Klaviyo rate limits on; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        "run                    |    wall |      sent | unchanged | removed |  kept | "
        "reads | DELs |  tree peak | status"
    )
    results = {}
    for stateless in (True, False):
        with stack(sandbox_args=["--no-store-attributes"]) as (azurite, sandbox):
            service = BlobServiceClient.from_connection_string(azurite.connection_string)
            container = service.get_container_client("customer-insights")
            container.create_container()
            env = {**os.environ, **local_settings(azurite.connection_string, sandbox.url)}
            write_segment(container, range(n), range(0), "2026/11/01/0600", parts)
            if stateless:
                results["stateless"] = _run(env, stateless=True)
                print(_line("stateless (before sync)", results["stateless"]), flush=True)
                continue
            results["first"] = _run(env)
            print(_line("first mirror run", results["first"]), flush=True)
            day2 = [*range(churn, n), *range(n, n + churn)]
            write_segment(container, day2, range(churn, 2 * churn), "2026/11/02/0600", parts)
            results["churn"] = _run(env)
            print(_line("5 % churn run", results["churn"]), flush=True)
    ratio = results["first"]["wall"] / results["stateless"]["wall"]
    print(f"first mirror run / stateless run: {ratio:.2f}x (target <= 1.2x)")
    print(f"5 % churn run: {results['churn']['wall']:.1f}s (target < 60 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
