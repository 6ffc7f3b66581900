"""Rows -> serialised Klaviyo profiles, in this process or spread over worker processes.

Reading, mapping and serialising rows is nearly all of a run's CPU. For a large snapshot:

- with several partition files, the partitions are dealt round-robin to "lanes"; each
  lane (a worker process) reads its partitions itself and streams encoded rows back
  through a bounded queue, and this process takes one chunk from each lane in turn
  (``lane_rows``);
- with one big file, this process reads and worker processes encode chunks of rows
  (``encoded_rows``).

Either way the order of rows depends only on the files, the number of lanes and the chunk
size, so a resumed run (which reuses the checkpoint's lane count) packs the same jobs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import orjson

from shared.cdm import CdmEntity
from shared.definitions import MappingSpec
from shared.errors import ExportError, InputError
from shared.profiles import ProfileMapper, RowRejected
from shared.segments import Row, SegmentReader, Snapshot
from shared.settings import StorageConnection

__all__ = [
    "MapperSpec",
    "PartitionSource",
    "WireRow",
    "WorkerError",
    "encoded_rows",
    "interleave",
    "lane_rows",
    "wire_rows",
    "worker_count",
]


class WorkerError(ExportError):
    """A worker process could not start, or died without saying why."""


# One encoded row, as the run consumes it and as it crosses process boundaries:
# (line, email | None, profile JSON | reason code, phone_dropped | detail, raw e-mail of a
# rejected row).
WireRow = tuple[int, str | None, Any, Any, str]

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

    @property
    def email_index(self) -> int:
        return self.columns.index(self.mapping.email)


def wire_rows(mapper: ProfileMapper, rows: Iterable[Row], email_at: int) -> Iterator[WireRow]:
    """Map and serialise each row: the one hot loop, in this process or a worker."""
    dumps = orjson.dumps
    for row in rows:
        values = row.values
        if values is None:
            yield (row.line, None, "malformed_row", row.error or "malformed row", "")
            continue
        try:
            profile = mapper.to_profile(values)
        except RowRejected as exc:
            raw = values[email_at] if email_at < len(values) else ""
            yield (row.line, None, str(exc.code), exc.detail, raw)
            continue
        part = dumps({"type": "profile", "attributes": profile.attributes})
        yield (row.line, profile.email, part, profile.phone_dropped, "")


_worker_mapper: ProfileMapper | None = None


def _init_worker(spec: MapperSpec) -> None:
    global _worker_mapper
    _worker_mapper = spec.build()


def _wire_chunk(chunk: list[Row], email_at: int) -> list[WireRow]:
    assert _worker_mapper is not None
    return list(wire_rows(_worker_mapper, chunk, email_at))


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
) -> Iterator[tuple[str, WireRow]]:
    """(file, encoded row) for each row, in input order; chunks go to ``workers``."""
    email_at = spec.email_index
    if workers <= 0:
        mapper = spec.build()
        for chunk in _chunks(rows):
            yield from _with_files(chunk, wire_rows(mapper, chunk, email_at))
        return
    # "spawn": the caller has threads (downloads, the event loop); forking them is unsafe.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(spec,)
    ) as pool:
        pending: deque[tuple[list[Row], Future[list[WireRow]]]] = deque()
        for chunk in _chunks(rows):
            pending.append((chunk, pool.submit(_wire_chunk, chunk, email_at)))
            if len(pending) > workers * 3:  # bounded read-ahead keeps memory flat
                chunk, future = pending.popleft()
                yield from _with_files(chunk, future.result())
        while pending:
            chunk, future = pending.popleft()
            yield from _with_files(chunk, future.result())


def _chunks(rows: Iterator[Row]) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _with_files(chunk: list[Row], wires: Iterable[WireRow]) -> Iterator[tuple[str, WireRow]]:
    return ((row.file, wire) for row, wire in zip(chunk, wires, strict=True))


# -- workers that read their own partitions ---------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionSource:
    """What a worker process needs to open the snapshot's files itself."""

    connection: StorageConnection
    container: str
    entity: CdmEntity
    snapshot: Snapshot

    def only(self, index: int) -> Snapshot:
        snap = self.snapshot
        return replace(
            snap,
            files=(snap.files[index],),
            sizes=snap.sizes[index : index + 1],
            etags=snap.etags[index : index + 1],
        )


_QUEUE_CHUNKS = 8  # per worker: bounds read-ahead, and so memory


def lane_chunks(
    container: Any, source: PartitionSource, spec: MapperSpec, indexes: Sequence[int]
) -> Iterator[tuple[int, list[WireRow]]]:
    """One lane: its partitions in order, as chunks of up to CHUNK_ROWS rows of one file."""
    mapper = spec.build()
    email_at = spec.email_index
    for index in indexes:
        with SegmentReader(container, source.only(index), source.entity) as reader:
            if tuple(reader.columns) != spec.columns:
                raise InputError(
                    "header differs from the first partition's",
                    file=source.snapshot.files[index],
                    line=1,
                )
            chunk: list[WireRow] = []
            for wire in wire_rows(mapper, reader.rows(), email_at):
                chunk.append(wire)
                if len(chunk) == CHUNK_ROWS:
                    yield index, chunk
                    chunk = []
            if chunk:
                yield index, chunk


def _lane_worker(source: PartitionSource, spec: MapperSpec, indexes: list[int], out: Any) -> None:
    """Worker process: one lane's chunks, sent through ``out``."""
    from shared.storage import blob_service

    try:
        container = blob_service(source.connection).get_container_client(source.container)
        for index, chunk in lane_chunks(container, source, spec, indexes):
            out.put(("rows", index, chunk))
        out.put(("done", None, None))
    except InputError as exc:
        out.put(("input_error", None, (exc.detail, exc.file, exc.line, exc.field)))
    except Exception as exc:  # crosses a process boundary: send what it was, as text
        out.put(("error", None, f"{type(exc).__name__}: {exc}"))


def interleave(
    lanes: Sequence[Iterator[tuple[int, list[WireRow]]]],
) -> Iterator[tuple[int, list[WireRow]]]:
    """One chunk from each lane in turn, until all are done.

    The order depends only on the files, the number of lanes and CHUNK_ROWS, never on
    timing or on whether the lanes run in processes: a resumed run packs the same jobs.
    """
    active = list(lanes)
    while active:
        for lane in list(active):
            item = next(lane, None)
            if item is None:
                active.remove(lane)
            else:
                yield item


def lane_rows(
    source: PartitionSource,
    spec: MapperSpec,
    *,
    lanes: int,
    processes: bool,
    container: Any = None,
) -> Iterator[tuple[str, WireRow]]:
    """(file, encoded row) for every row, partitions split round-robin over ``lanes``.

    With ``processes`` each lane is a worker process that reads its partitions itself;
    otherwise the lanes run here, on ``container``.
    """
    files = source.snapshot.files
    assignments = [list(range(lane, len(files), lanes)) for lane in range(lanes)]
    if not processes:
        streams = [lane_chunks(container, source, spec, a) for a in assignments]
        for index, chunk in interleave(streams):
            for row in chunk:
                yield files[index], row
        return
    context = multiprocessing.get_context("spawn")
    queues = [context.Queue(maxsize=_QUEUE_CHUNKS) for _ in assignments]
    procs = [
        context.Process(target=_lane_worker, args=(source, spec, a, q), daemon=True)
        for a, q in zip(assignments, queues, strict=True)
    ]
    try:
        for proc in procs:
            proc.start()
        streams = [_received(q, p) for q, p in zip(queues, procs, strict=True)]
        for index, chunk in interleave(streams):
            for row in chunk:
                yield files[index], row
        for proc in procs:
            proc.join(timeout=30)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for q in queues:
            q.cancel_join_thread()  # do not wait to flush what nobody will read
            q.close()


def _received(q: Any, proc: Any) -> Iterator[tuple[int, list[WireRow]]]:
    while True:
        kind, index, payload = _get(q, proc)
        if kind == "done":
            return
        if kind == "input_error":
            detail, file, line, field = payload
            raise InputError(detail, file=file, line=line, field=field)
        if kind == "error":
            raise ExportError(f"reading the segment: {payload}")
        yield index, payload


def _get(q: Any, proc: Any) -> tuple[str, int | None, Any]:
    """The next message, noticing a worker that died without saying why."""
    while True:
        with contextlib.suppress(queue.Empty):
            return q.get(timeout=1.0)
        if not proc.is_alive():
            raise WorkerError(
                f"a segment reader process exited unexpectedly (exit code {proc.exitcode})"
            )
