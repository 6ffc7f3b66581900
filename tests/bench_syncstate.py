"""Prints what the sync state and the plan cost at scale (a measurement, not a test).

    python -m tests.bench_syncstate [--people 1000000]

Against a private Azurite: a first run of N people (classify, confirm, next state, save),
then a run with 5 % leavers, 5 % joiners and 5 % changed. The load is measured in a
fresh process, so its memory figure is the state's alone (RSS after minus before, and
the peak during the load).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import polars as pl
from azure.storage.blob import BlobServiceClient

from shared.plan import Planner
from shared.statestore import SyncStateStore
from shared.syncstate import StateMeta, SyncState, SyncTarget, email_keys

BLOCK = 10_000  # rows per block from the data plane
JOB = 10_000  # profiles per import job
TARGET = SyncTarget("bench", "BenchList1", "sha256:bench")
_NAMES = ["anna", "bram", "chloe", "daan", "emma", "finn", "julia", "lucas", "mila", "noah"]
_DOMAINS = ["gmail.com", "outlook.com", "example.nl", "yahoo.co.uk", "company.io"]


def addresses(n: int, seed: int) -> list[str]:
    """``n`` distinct, realistic-looking addresses (about 25 characters)."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(_NAMES), n)
    last = rng.integers(0, len(_NAMES), n)
    domain = rng.integers(0, len(_DOMAINS), n)
    return [
        f"{_NAMES[a]}.{_NAMES[b]}{seed}x{i}@{_DOMAINS[d]}"
        for i, (a, b, d) in enumerate(
            zip(first.tolist(), last.tolist(), domain.tolist(), strict=True)
        )
    ]


def _meta() -> StateMeta:
    return StateMeta(TARGET.export, TARGET.list_id, TARGET.mapping_fingerprint, 0, "w", None, "")


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_mb() -> float:
    # VmHWM, not ru_maxrss: a child inherits its parent's ru_maxrss across fork and exec.
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1e3


def _reset_peak() -> bool:
    try:  # "5" resets VmHWM to the current RSS (Linux)
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


@contextmanager
def timed(into: dict[str, float], name: str) -> Iterator[None]:
    """Seconds of the block in ``into[name + "_s"]``, and how far it raised the process's
    peak memory above where it started in ``into[name + "_peak_mb"]``."""
    reset = _reset_peak()
    before, start = rss_mb(), time.perf_counter()
    yield
    into[name + "_s"] = time.perf_counter() - start
    if reset:
        into[name + "_peak_mb"] = max(peak_mb() - before, 0.0)


def run(
    store: SyncStateStore,
    generation: str,
    emails: list[str],
    keys: np.ndarray,
    hashes: np.ndarray,
) -> dict[str, Any]:
    """One run of the planner over the snapshot, every job confirmed."""
    t: dict[str, float] = {}
    with timed(t, "load"):
        loaded = store.load(run_id=generation)
    planner = Planner(loaded.state, target=TARGET)
    # Blocks as the data plane hands them over: e-mails in a polars Series.
    blocks = [
        (keys[i : i + BLOCK], hashes[i : i + BLOCK], pl.Series(emails[i : i + BLOCK]))
        for i in range(0, len(keys), BLOCK)
    ]
    sent = []
    with timed(t, "classify"):
        for block in blocks:
            mask = planner.classify(*block)
            sent.append(block[0][mask])
    del blocks
    verdict = planner.check_guard(max_removal_percent=10)
    to_send = np.concatenate(sent)
    with timed(t, "confirm"):
        for n, start in enumerate(range(0, len(to_send), JOB)):
            planner.confirm(to_send[start : start + JOB], 1_767_225_600_000 + n)
    planner_mb = round(planner.nbytes / 1e6, 1)
    removals = 0
    if not verdict.held:
        with timed(t, "leavers"):
            leavers = planner.leavers()
        planner.record_removals(removed=leavers.keys, kept_not_owned=[], gone=[])
        removals = len(leavers)
    with timed(t, "next_state"):
        state = planner.next_state(generation)
    with timed(t, "save"):
        store.save(state, loaded)
    size = store._container.get_blob_client(store.blob_name(generation)).get_blob_properties().size
    return {
        **{k: round(v, 3) if k.endswith("_s") else round(v, 1) for k, v in t.items()},
        "classify_ns_per_row": round(t["classify_s"] / max(len(keys), 1) * 1e9),
        "planner_mb": planner_mb,
        "sent": len(to_send),
        "removals": removals,
        "people_after": len(state),
        "state_mb_in_memory": round(state.nbytes / 1e6, 1),
        "blob_mb": round(size / 1e6, 1),
        "members": planner.members(),
    }


def load_in_fresh_process(connection_string: str, container: str) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "tests.bench_syncstate",
        "--load",
        connection_string,
        container,
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300).stdout
    return json.loads(out.splitlines()[-1])


def _load_only(connection_string: str, container: str) -> None:
    client = BlobServiceClient.from_connection_string(connection_string)
    store = SyncStateStore(client.get_container_client(container), TARGET.export, TARGET.list_id)
    # Warm up without loading the state (a load would leave freed memory behind that
    # the allocator reuses, hiding the state's own size): the connection, and polars.
    store.generations()
    SyncState.from_parquet(SyncState.empty(_meta()).to_parquet())
    before, start = rss_mb(), time.perf_counter()
    loaded = store.load()
    seconds = time.perf_counter() - start
    assert loaded.state is not None
    print(
        json.dumps(
            {
                "load_s": round(seconds, 3),
                "people": len(loaded.state),
                "rss_delta_mb": round(rss_mb() - before, 1),
                "peak_delta_mb": round(peak_mb() - before, 1),
                "rss_before_mb": round(before, 1),
                "state_mb": round(loaded.state.nbytes / 1e6, 1),
            }
        )
    )


def measure(connection_string: str, people: int) -> dict[str, Any]:
    service = BlobServiceClient.from_connection_string(connection_string)
    name = f"bench-{uuid.uuid4().hex[:12]}"
    container = service.create_container(name)
    try:
        store = SyncStateStore(container, TARGET.export, TARGET.list_id)
        rng = np.random.default_rng(7)
        emails = addresses(people, seed=1)
        keys = email_keys(emails)
        hashes = rng.integers(0, 2**63, people, dtype=np.uint64)
        first = run(store, "run-1", emails, keys, hashes)
        first_load = load_in_fresh_process(connection_string, name)
        # Day 2: 5 % leave, 5 % join, 5 % of those who stay change.
        churn = people // 20
        stay = np.sort(rng.permutation(people)[: people - churn])
        joiners = addresses(churn, seed=2)
        emails2 = [emails[i] for i in stay.tolist()] + joiners
        keys2 = np.concatenate([keys[stay], email_keys(joiners)])
        hashes2 = np.concatenate([hashes[stay], rng.integers(0, 2**63, churn, dtype=np.uint64)])
        changed = rng.choice(len(stay), churn, replace=False)
        hashes2[changed] ^= np.uint64(1)
        second = run(store, "run-2", emails2, keys2, hashes2)
        return {"people": people, "first_run": first, "load": first_load, "churn_run": second}
    finally:
        container.delete_container()


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--connection-string", help="an Azurite to use (default: start one)")
    parser.add_argument("--load", nargs=2, metavar=("CONNECTION_STRING", "CONTAINER"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args.load:
        _load_only(*args.load)
        return None
    if args.connection_string:
        figures = measure(args.connection_string, args.people)
    else:
        from devtools.azurite import Azurite

        with Azurite() as azurite:
            figures = measure(azurite.connection_string, args.people)
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
