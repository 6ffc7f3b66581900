"""Segment snapshots in Blob Storage: which folder is the newest, and its rows.

Customer Insights writes one folder per export run::

    <container>/<folder>/<Segment>/<YYYY>/<MM>/<DD>/<HHMM>/<Segment>_<PartitionId>.csv[.gz]

where ``<folder>`` (``CustomerInsights_<instance>/<destination>``) holds model.json. The newest
folder is the current snapshot. The run reads it in blocks (``shared/blocks.py``);
:class:`SegmentReader` gives the same records one :class:`Row` at a time, for checks and
tools that want rows rather than blocks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from azure.storage.blob import ContainerClient

from shared.cdm import CdmEntity
from shared.errors import SnapshotNotFoundError

__all__ = [
    "Row",
    "SegmentReader",
    "Snapshot",
    "describe",
    "find_latest_snapshot",
    "natural_key",
]

logger = logging.getLogger(__name__)

# <YYYY>/<MM>/<DD>/<HHMM>/<file>, right below <folder>/<segment>/.
_SNAPSHOT_PATH = re.compile(r"(\d{4})/(\d{2})/(\d{2})/(\d{2})(\d{2})/([^/]+)")
_DATA_SUFFIXES = (".csv", ".csv.gz")
_DIGITS = re.compile(r"(\d+)")


class Row(NamedTuple):
    """One record: ``values`` in column order, or ``error`` when it cannot be used."""

    file: str
    line: int  # 1-based physical line where the record starts (a header is line 1)
    values: list[str] | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One export run of a segment: its folder, when it was taken and its data files."""

    segment: str
    prefix: str  # the snapshot folder, ending in "/"
    taken_at: datetime  # UTC, from the folder names
    files: tuple[str, ...]  # blob names, in partition order
    sizes: tuple[int, ...] = ()  # bytes per file, from the listing
    container: str = ""
    etags: tuple[str, ...] = ()  # per file, from the listing: reads fail if a file changes

    @property
    def total_bytes(self) -> int:
        """Bytes in all data files (compressed size for .csv.gz)."""
        return sum(self.sizes)


def describe(snapshot: Snapshot) -> dict[str, object]:
    """The snapshot as the run report shows it."""
    return {
        "container": snapshot.container,
        "path": snapshot.prefix,
        "segment": snapshot.segment,
        "taken_at": snapshot.taken_at.isoformat().replace("+00:00", "Z"),
        "files": len(snapshot.files),
        "bytes": snapshot.total_bytes,
    }


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders ``x_2.csv`` before ``x_10.csv``."""
    # re.split with a group alternates text and digits, so positions never mix types.
    return tuple(int(part) if i % 2 else part for i, part in enumerate(_DIGITS.split(name)))


# ---------------------------------------------------------------- snapshot discovery


def find_latest_snapshot(container_client: ContainerClient, folder: str, segment: str) -> Snapshot:
    """The newest ``YYYY/MM/DD/HHMM`` folder of ``segment`` that holds data files.

    One listing under ``<folder>/<segment>/`` (paged by the SDK, no call per folder); files
    other than ``.csv``/``.csv.gz`` and folders that are not valid dates are ignored.
    """
    folder = folder.strip("/")
    base = f"{folder}/{segment}/" if folder else f"{segment}/"
    newest: datetime | None = None
    found: list[tuple[str, int, str]] = []
    listed = 0
    for blob in container_client.list_blobs(name_starts_with=base):
        listed += 1
        taken_at = _snapshot_time(blob.name, len(base))
        if taken_at is None or (newest is not None and taken_at < newest):
            continue
        if taken_at != newest:
            newest, found = taken_at, []
        found.append((blob.name, blob.size or 0, blob.etag))
    container = container_client.container_name
    if newest is None:
        raise SnapshotNotFoundError(
            f"no snapshot of segment {segment!r}: none of the {listed} blobs under "
            f"{container}/{base} is a .csv or .csv.gz in a YYYY/MM/DD/HHMM folder",
            file=f"{container}/{base}",
        )
    found.sort(key=lambda item: natural_key(item[0]))
    snapshot = Snapshot(
        segment=segment,
        prefix=found[0][0].rsplit("/", 1)[0] + "/",
        taken_at=newest,
        files=tuple(name for name, _, _ in found),
        sizes=tuple(size for _, size, _ in found),
        container=container,
        etags=tuple(etag for _, _, etag in found),
    )
    logger.info(
        "segment %s: snapshot %s/%s (%d files, %d bytes)",
        segment,
        container,
        snapshot.prefix,
        len(snapshot.files),
        snapshot.total_bytes,
    )
    return snapshot


def _snapshot_time(name: str, start: int) -> datetime | None:
    """The time a data file's folder names, or None if it is not a snapshot data file."""
    match = _SNAPSHOT_PATH.fullmatch(name, start)
    if match is None or not match[6].lower().endswith(_DATA_SUFFIXES):
        return None
    year, month, day, hour, minute = (int(match[i]) for i in range(1, 6))
    try:
        return datetime(year, month, day, hour, minute, tzinfo=UTC)
    except ValueError:  # 2024/13/40/9999 and the like
        return None


# ---------------------------------------------------------------- reading rows


class SegmentReader:
    """The records of a snapshot's files as :class:`Row`, in partition order.

    A view of :class:`shared.blocks.BlockReader` (same options, same columns and errors),
    one row at a time. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        container_client: ContainerClient,
        snapshot: Snapshot,
        entity: CdmEntity,
        **options: Any,
    ) -> None:
        from shared.blocks import BlockReader  # the engine loads only when rows are read

        self._blocks = BlockReader(container_client, snapshot, entity, **options)

    @property
    def snapshot(self) -> Snapshot:
        return self._blocks.snapshot

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names in file order (reads the first file's header if it has one)."""
        return self._blocks.columns

    def rows(self) -> Iterator[Row]:
        """Every record in order; may be iterated once."""
        try:
            yield from self._rows()
        finally:
            self.close()

    def _rows(self) -> Iterator[Row]:
        for block in self._blocks.blocks():
            names = block.frame.columns
            rows = [
                Row(block.file, line, list(values), None)
                for line, values in zip(
                    block.lines.tolist(), block.frame.select(names).rows(), strict=True
                )
            ]
            rows += [Row(block.file, r.line, None, r.detail) for r in block.rejects]
            rows.sort(key=lambda row: row.line)
            yield from rows

    def close(self) -> None:
        self._blocks.close()

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
