"""Append-only columns kept in big fixed-size chunks, for what a run accumulates per person.

The plan records a few values per person while the snapshot is read (the joiners' keys,
hashes and e-mails, the sends awaiting confirmation), block after block. Kept as one
small numpy array or polars Series per block, they cost more than their bytes: each
e-mail of a polars String is a 16-byte view besides its characters, a filtered Series
pins its whole block's string buffer, and hundreds of small long-lived allocations sit
between the blocks' freed working memory, so the allocators cannot hand those pages back.
Measured at 1M joiners (first run, 1M x 3 partitions): per-block Series and arrays grew
the run by ~90 bytes a person; these chunks hold the same in ~45.

Chunks are 512 KB and up: allocated on their own (mmap) and returned whole when freed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.engine import pl

__all__ = ["ChunkedArray", "ChunkedStrings"]

_CHUNK_BYTES = 1 << 19  # 512 KB: well above glibc's mmap threshold (256 KB, shared/engine.py)


_GROUP = 1 << 13  # rows gathered at a time by ChunkedStrings.drain


def _exclusive_cumsum(values: npt.NDArray[np.integer], dtype: type[np.integer]) -> Any:
    out = np.zeros(len(values), dtype)
    np.cumsum(values[:-1], out=out[1:], dtype=dtype)
    return out


class ChunkedArray:
    """A one-dimensional numpy column that grows by appends, in chunks of fixed size."""

    __slots__ = ("_chunk_rows", "_chunks", "_dtype", "_used")

    def __init__(self, dtype: npt.DTypeLike, *, chunk_bytes: int = _CHUNK_BYTES) -> None:
        self._dtype = np.dtype(dtype)
        self._chunk_rows = max(1, chunk_bytes // self._dtype.itemsize)
        self._chunks: list[npt.NDArray[Any]] = []
        self._used = 0  # rows used in the last chunk

    def __len__(self) -> int:
        return (len(self._chunks) - 1) * self._chunk_rows + self._used if self._chunks else 0

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._chunks)

    def append(self, values: npt.ArrayLike) -> None:
        values = np.asarray(values, dtype=self._dtype)
        at = 0
        while at < len(values):
            if not self._chunks or self._used == self._chunk_rows:
                self._chunks.append(np.empty(self._chunk_rows, self._dtype))
                self._used = 0
            take = min(len(values) - at, self._chunk_rows - self._used)
            self._chunks[-1][self._used : self._used + take] = values[at : at + take]
            self._used += take
            at += take

    def chunks(self) -> Iterator[npt.NDArray[Any]]:
        """The filled part of each chunk, in order (views)."""
        for i, chunk in enumerate(self._chunks):
            yield chunk if i < len(self._chunks) - 1 else chunk[: self._used]

    def to_array(self) -> npt.NDArray[Any]:
        """All values as one new array."""
        out = np.empty(len(self), self._dtype)
        at = 0
        for chunk in self.chunks():
            out[at : at + len(chunk)] = chunk
            at += len(chunk)
        return out

    def clear(self) -> None:
        self._chunks, self._used = [], 0


class ChunkedStrings:
    """Strings appended a Series at a time, kept as UTF-8 bytes in chunks plus lengths
    (2 bytes a string: e-mail addresses are at most 254 characters). No string straddles
    two chunks, so each chunk turns into a Series by itself."""

    __slots__ = ("_chunk_bytes", "_chunks", "_lengths", "_rows", "_used")

    def __init__(self, *, chunk_bytes: int = 4 * _CHUNK_BYTES) -> None:
        self._chunk_bytes = chunk_bytes
        self._chunks: list[npt.NDArray[np.uint8]] = []
        self._rows: list[int] = []  # strings in each chunk
        self._used = 0  # bytes used in the last chunk
        self._lengths = ChunkedArray(np.uint16)

    def __len__(self) -> int:
        return len(self._lengths)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._chunks) + self._lengths.nbytes

    def append(self, strings: pl.Series) -> None:
        if not len(strings):
            return
        lengths = strings.str.len_bytes().to_numpy()
        if lengths.max() > min(np.iinfo(np.uint16).max, self._chunk_bytes):
            raise ValueError("a string of more than 65,535 bytes cannot be kept")
        data = np.frombuffer(strings.str.join("").item().encode(), np.uint8)
        ends = np.cumsum(lengths, dtype=np.int64)
        row = 0
        while row < len(lengths):
            if not self._chunks or self._used + lengths[row] > self._chunk_bytes:
                self._chunks.append(np.empty(self._chunk_bytes, np.uint8))
                self._rows.append(0)
                self._used = 0
            start = ends[row - 1] if row else 0
            # The strings that still fit in this chunk, whole.
            stop = int(np.searchsorted(ends, start + self._chunk_bytes - self._used, "right"))
            size = int(ends[stop - 1] - start)
            self._chunks[-1][self._used : self._used + size] = data[start : start + size]
            self._used += size
            self._rows[-1] += stop - row
            row = stop
        self._lengths.append(lengths)

    def drain(self, order: npt.NDArray[np.integer] | None = None, name: str = "email") -> pl.Series:
        """The strings (those at ``order``, in that order; default all) as one polars
        String Series; the store is left empty.

        The bytes are gathered in numpy, ``_GROUP`` rows at a time, before polars sees
        them: a polars gather of String copies every string once more (measured at 1M
        e-mails: +50 MB), where this holds the bytes twice only while they are copied.
        """
        lengths = self._lengths.to_array()  # uint16; offsets in int32 where they fit
        total = int(lengths.sum(dtype=np.int64))
        offset = np.int32 if total < 2**31 else np.int64
        data = np.empty(total, np.uint8)
        at = row = 0
        while self._chunks:  # the chunks into one buffer, each freed once copied
            chunk, rows = self._chunks.pop(0), self._rows.pop(0)
            used = int(lengths[row : row + rows].sum())
            data[at : at + used] = chunk[:used]
            at, row = at + used, row + rows
            del chunk
        self.clear()
        starts = _exclusive_cumsum(lengths, offset)
        order = np.arange(len(lengths)) if order is None else np.asarray(order)
        parts = []
        for group in range(0, len(order), _GROUP):
            rows = order[group : group + _GROUP]
            size, at = lengths[rows].astype(np.int64), starts[rows]
            into = _exclusive_cumsum(size, np.int64)
            # Byte i of the group comes from at[row] + (i - into[row]) of its row.
            source = np.repeat(at - into, size) + np.arange(int(size.sum()))
            value = pl.Series([data[source].tobytes()], dtype=pl.Binary)
            # Slices of one value are views into its buffer: no copy of the bytes.
            parts.append(
                pl.select(pl.lit(value).bin.slice(pl.Series(into), pl.Series(size))).to_series()
            )
        del data, starts
        if not parts:
            return pl.Series(name, [], dtype=pl.String)
        # One chunk (the state's gathers are faster on one): this copies the views, not
        # the bytes, and the parts go right after.
        return pl.concat(parts, rechunk=True).cast(pl.String).alias(name)

    def clear(self) -> None:
        self._chunks, self._rows, self._used = [], [], 0
        self._lengths.clear()
