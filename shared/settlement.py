"""What a plan keeps of a run's sends, and how they meet the jobs that confirmed them.

While the snapshot is read, the planner appends each block's sends (:class:`Sends`) into
big chunks spilled to temporary files (shared/chunked.py says why). Once the reading is
over, the joiners are put in key order (:func:`key_order`), and :meth:`Settled.of`
matches every send with the earliest completed job that confirmed it, reading the jobs'
keys back a chunk at a time (:func:`job_keys`), so that the next state can be built.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from shared.chunked import ChunkedArray, SortedStrings
from shared.keyindex import KeyIndex

__all__ = ["Sends", "Settled", "job_keys", "key_order"]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


class Sends:
    """Aligned columns appended a block at a time."""

    __slots__ = ("columns",)

    def __init__(self, *dtypes: Any) -> None:
        self.columns = tuple(ChunkedArray(dtype, spill=True) for dtype in dtypes)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.columns)

    def append(self, *values: npt.NDArray[Any]) -> None:
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)


@dataclass(frozen=True, slots=True)
class Settled:
    """The run's sends matched with the confirmations of completed jobs."""

    index: npt.NDArray[np.intp]  # in-state sends: the state row,
    hashes: U64  # the hash sent,
    kind: npt.NDArray[np.uint8]  # changed / retried / resent,
    ok: Mask  # confirmed by a job,
    created: I64  # that job's created_at (ms)
    joined_keys: U64  # joiners, sorted by key
    joined_hashes: U64
    joined_emails: SortedStrings
    joined_ok: Mask
    joined_created: I64

    @classmethod
    def of(
        cls,
        state: KeyIndex,
        sent: Sends,
        joined: tuple[U64, U64, SortedStrings],
        confirmed: tuple[ChunkedArray, list[tuple[int, int]]],
    ) -> Settled:
        index, sent_hashes, kind = (c.to_array() for c in sent.columns)
        j_keys, j_hashes, j_emails = joined
        joiners = KeyIndex(j_keys)
        # Each sent person's earliest confirming job, looked up job by job (a loop over
        # jobs, not people); _NEVER marks sent and never confirmed.
        state_created = np.full(len(state), _NEVER, np.int64)
        joined_created = np.full(len(j_keys), _NEVER, np.int64)
        chunks, jobs = confirmed
        for keys, (_, created_at) in zip(job_keys(chunks, jobs), jobs, strict=True):
            row, found = state.find(keys)
            _earliest(state_created, row[found], created_at)
            row, found = joiners.find(keys[~found])
            _earliest(joined_created, row[found], created_at)
        del joiners  # its directory (16 MB at 10M joiners) before the columns below
        created = state_created[index]
        del state_created
        ok, joined_ok = created != _NEVER, joined_created != _NEVER
        # In place: a copy of the joiners' times was 80 MB more at 10M (measured).
        created[~ok] = 0
        joined_created[~joined_ok] = 0
        return cls(
            index=index,
            hashes=sent_hashes,
            kind=kind,
            ok=ok,
            created=created,
            joined_keys=j_keys,
            joined_hashes=j_hashes,
            joined_emails=j_emails,
            joined_ok=joined_ok,
            joined_created=joined_created,
        )


_NEVER: Final = np.iinfo(np.int64).max


def job_keys(chunks: ChunkedArray, jobs: list[tuple[int, int]]) -> Iterator[U64]:
    """Each completed job's keys, in order, read a chunk at a time: the keys of all jobs
    as one array were 80 MB at 10M (measured)."""
    sizes = iter(count for count, _ in jobs)
    pending: list[U64] = []  # the start of a job that runs on into the next chunk
    want = next(sizes, None)
    for chunk in chunks.chunks():
        at = 0
        while want is not None and at < len(chunk):
            have = sum(len(p) for p in pending)
            take = min(want - have, len(chunk) - at)
            pending.append(chunk[at : at + take])
            at += take
            if have + take == want:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, want = [], next(sizes, None)
    while want == 0:  # jobs that confirmed nobody, after the last key
        yield np.empty(0, np.uint64)
        want = next(sizes, None)


def _earliest(created: I64, rows: npt.NDArray[np.integer], created_at: int) -> None:
    # One job's keys are distinct, so plain fancy indexing is safe here.
    created[rows] = np.minimum(created[rows], created_at)


def key_order(chunks: ChunkedArray) -> tuple[U64, npt.NDArray[np.integer]]:
    """The keys sorted, and each one's place among them (-1: a repeat, left out); the
    chunks are cleared. Defensive: a key sent twice (the run-wide dedupe makes that
    impossible) keeps its first send, so the next state has one row per person.

    Sorted in place, then each key's place found by a search, a slice of the keys (read
    back from the chunks) at a time: besides the sorted keys and the places, only a
    slice's worth is held. Measured at 10M keys: +144 MB for a moment and 1.2 s, against
    +229-277 MB and 1.8 s for a stable argsort (its order, 8 bytes a key, beside two
    copies of the keys); at 1M, +19 MB and 0.06 s against +28 MB and 0.11 s. numpy sorts
    64-bit integers in place with SIMD: 0.07 s at 10M."""
    ordered = chunks.to_array()
    ordered.sort()
    if len(ordered) > 1 and not bool(np.all(ordered[1:] != ordered[:-1])):
        del ordered
        return _key_order_with_repeats(chunks)
    places = _places(len(ordered))
    at = 0
    # A sixteenth of the keys at a time: the searches, in key order, then land close
    # together in the sorted keys (at 10M, slices of 1M keys took 1.3 s, of 64k 2.4 s,
    # and the keys in their own order 14 s), for ~4 MB of work a slice at 1M.
    for keys in _slices(chunks, max(_SEARCH_SLICE, len(ordered) // 16)):
        order = np.argsort(keys)
        found = np.searchsorted(ordered, keys[order])
        order += at
        places[order] = found
        at += len(keys)
    chunks.clear()
    return ordered, places


_SEARCH_SLICE = 1 << 17  # keys placed at once by key_order, at least


def _places(n: int) -> npt.NDArray[np.integer]:
    """Room for ``n`` places: 4 bytes each while they fit."""
    return np.empty(n, np.int32 if n < 2**31 else np.int64)


def _slices(chunks: ChunkedArray, size: int) -> Iterator[U64]:
    """The chunks' values in order, whole chunks at a time, at least ``size`` values a
    slice but for the last."""
    pending: list[U64] = []
    held = 0
    for chunk in chunks.chunks():
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            yield np.concatenate(pending)
            pending, held = [], 0
    if pending:
        yield np.concatenate(pending)


def _key_order_with_repeats(chunks: ChunkedArray) -> tuple[U64, npt.NDArray[np.integer]]:
    """key_order where a key repeats: a stable sort puts each repeat after its first
    send; the places of the distinct keys are renumbered and the repeats left out."""
    keys = chunks.to_array()
    chunks.clear()
    order = np.argsort(keys, kind="stable")
    places = _places(len(keys))
    places[order] = np.arange(len(keys), dtype=places.dtype)
    del order
    ordered = np.empty_like(keys)
    ordered[places] = keys
    del keys
    distinct = np.ones(len(ordered), bool)
    np.not_equal(ordered[1:], ordered[:-1], out=distinct[1:])
    renumbered = np.cumsum(distinct, dtype=places.dtype) - 1
    renumbered[~distinct] = -1
    return ordered[distinct], renumbered[places]
