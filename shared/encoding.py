"""Rows -> serialised Klaviyo profiles, in this process or spread over worker processes.

Mapping and serialising a row is most of a run's CPU. A large snapshot is therefore cut
into chunks that worker processes encode while this process reads the next rows; results
come back in input order, so batches, duplicates and checkpoints stay deterministic.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from shared.definitions import MappingSpec
from shared.profiles import ProfileMapper, RowRejected
from shared.segments import Row

__all__ = ["Encoded", "MapperSpec", "encode_rows", "encoded_rows", "worker_count"]

# (email, profile JSON, phone_dropped) for a profile; (None, reason code, detail) for a
# rejected row; None for a row the reader already found malformed.
Encoded = tuple[str | None, Any, Any] | None

CHUNK_ROWS = 2_000
PARALLEL_MIN_BYTES = 16 * 1024 * 1024  # below this, starting workers costs more than it saves


@dataclass(frozen=True, slots=True)
class MapperSpec:
    """What a worker process needs to build the same ProfileMapper as this process."""

    mapping: MappingSpec
    columns: tuple[str, ...]
    default_region: str | None
    region_column: str | None
    source: str | None

    def build(self) -> ProfileMapper:
        return ProfileMapper(
            self.mapping,
            self.columns,
            default_region=self.default_region,
            region_column=self.region_column,
            source=self.source,
        )


def encode_rows(mapper: ProfileMapper, rows: Sequence[list[str] | None]) -> list[Encoded]:
    """Map and serialise each row's values (None stays None)."""
    dumps, out = orjson.dumps, []
    append = out.append
    for values in rows:
        if values is None:
            append(None)
            continue
        try:
            profile = mapper.to_profile(values)
        except RowRejected as exc:
            append((None, str(exc.code), exc.detail))
            continue
        part = dumps({"type": "profile", "attributes": profile.attributes})
        append((profile.email, part, profile.phone_dropped))
    return out


_worker_mapper: ProfileMapper | None = None


def _init_worker(spec: MapperSpec) -> None:
    global _worker_mapper
    _worker_mapper = spec.build()


def _encode_chunk(rows: list[list[str] | None]) -> list[Encoded]:
    assert _worker_mapper is not None
    return encode_rows(_worker_mapper, rows)


def worker_count(snapshot_bytes: int, requested: int | None = None) -> int:
    """Worker processes worth starting for a snapshot of this size (0: encode inline)."""
    if requested is not None:
        return max(0, requested)
    if snapshot_bytes < PARALLEL_MIN_BYTES:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if (cpus or 1) < 2 else min(cpus or 1, 4)


def encoded_rows(
    rows: Iterator[Row], spec: MapperSpec, *, workers: int
) -> Iterator[tuple[Row, Encoded]]:
    """Each row with its encoding, in input order."""
    if workers <= 0:
        mapper = spec.build()
        for row in rows:
            yield row, encode_rows(mapper, (row.values,))[0]
        return
    # "spawn": the caller has threads (downloads, the event loop); forking them is unsafe.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(spec,)
    ) as pool:
        pending: deque[tuple[list[Row], Future[list[Encoded]]]] = deque()
        for chunk in _chunks(rows):
            pending.append((chunk, pool.submit(_encode_chunk, [r.values for r in chunk])))
            if len(pending) > workers * 3:  # bounded read-ahead keeps memory flat
                yield from _zip(*pending.popleft())
        while pending:
            yield from _zip(*pending.popleft())


def _chunks(rows: Iterator[Row]) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _zip(chunk: list[Row], future: Future[list[Encoded]]) -> Iterator[tuple[Row, Encoded]]:
    return zip(chunk, future.result(), strict=True)
