"""Append-only columns kept in big fixed-size chunks, for what a run accumulates per person.

The plan records a few values per person while the snapshot is read (the joiners' keys,
hashes and e-mails, the sends awaiting confirmation), block after block. Kept as one
small numpy array or polars Series per block, they cost more than their bytes: each
e-mail of a polars String is a 16-byte view besides its characters, a filtered Series
pins its whole block's string buffer, and hundreds of small long-lived allocations sit
between the blocks' freed working memory, so the allocators cannot hand those pages back.
Measured at 1M joiners (first run, 1M x 3 partitions): per-block Series and arrays grew
the run by ~90 bytes a person; these chunks hold the same in ~45.

Chunks are 512 KB and up, few and long-lived (not hundreds of small allocations).
With ``spill=True`` (the plan's choice) each full chunk goes to a temporary file and only
the one being filled stays in memory: the values are read back once, when the reading is
over and its working memory is gone. The file's pages are the kernel's (reclaimable
cache, written back under pressure), not the process's: measured on the first mirror run
of 1M x 3 partitions, the reading stays flat (216 MB at the last jobs, was 252) for
~45 MB of writes.
A chunk is written in well under a millisecond, so the event loop may append too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from shared.engine import pl

__all__ = ["ChunkedArray", "ChunkedStrings", "SortedStrings", "StringSlices"]

_CHUNK_BYTES = 1 << 19  # 512 KB


_PART = 1 << 17  # places ChunkedStrings.drain_to puts in order at once
_WIDE = 64  # bytes: strings up to this long are gathered as fixed-width rows
_ROW = np.dtype(f"V{_WIDE}")
_PREFIX_MASKS = np.arange(_WIDE)[None, :] < np.arange(_WIDE + 1)[:, None]  # row k: k Trues


def _windows(data: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
    """Item k: the ``_WIDE`` bytes of ``data`` from byte k on (overlapping views)."""
    return np.ndarray(buffer=data, dtype=_ROW, shape=(data.size - _WIDE + 1,), strides=(1,))


def _exclusive_cumsum(values: npt.NDArray[np.integer], dtype: type[np.integer]) -> Any:
    out = np.zeros(len(values), dtype)
    np.cumsum(values[:-1], out=out[1:], dtype=dtype)
    return out


class _Spill:
    """Full chunks in a temporary file (made on first use), read back by place."""

    __slots__ = ("_file",)

    def __init__(self) -> None:
        self._file: IO[bytes] | None = None

    def put(self, chunk: npt.NDArray[Any]) -> tuple[int, int]:
        if self._file is None:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        offset = self._file.seek(0, 2)
        self._file.write(memoryview(np.ascontiguousarray(chunk)).cast("B"))
        return offset, chunk.nbytes

    def get(self, where: tuple[int, int], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
        offset, size = where
        out = np.empty(size // dtype.itemsize, dtype)
        assert self._file is not None
        self._file.seek(offset)
        if self._file.readinto(memoryview(out).cast("B")) != size:
            raise OSError("a spilled chunk came back short")
        return out

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` on (of what was put)."""
        assert self._file is not None
        self._file.seek(offset)
        data = self._file.read(size)
        if len(data) != size:
            raise OSError("a spilled chunk came back short")
        return data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


Chunk = npt.NDArray[Any] | tuple[int, int]  # in memory, or (offset, bytes) in the spill
_Run = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # bytes, places, sizes


class ChunkedArray:
    """A one-dimensional numpy column that grows by appends, in chunks of fixed size."""

    __slots__ = ("_chunk_rows", "_chunks", "_dtype", "_spill", "_used")

    def __init__(
        self, dtype: npt.DTypeLike, *, chunk_bytes: int = _CHUNK_BYTES, spill: bool = False
    ) -> None:
        self._dtype = np.dtype(dtype)
        self._chunk_rows = max(1, chunk_bytes // self._dtype.itemsize)
        self._chunks: list[Chunk] = []
        self._used = 0  # rows used in the last chunk
        self._spill = _Spill() if spill else None

    def __len__(self) -> int:
        return (len(self._chunks) - 1) * self._chunk_rows + self._used if self._chunks else 0

    @property
    def nbytes(self) -> int:
        """Memory held (spilled chunks not counted)."""
        return sum(c.nbytes for c in self._chunks if not isinstance(c, tuple))

    def append(self, values: npt.ArrayLike) -> None:
        values = np.asarray(values, dtype=self._dtype)
        at = 0
        while at < len(values):
            if not self._chunks or self._used == self._chunk_rows:
                if self._spill is not None and self._chunks:
                    self._chunks[-1] = self._spill.put(self._chunks[-1])  # type: ignore[arg-type]
                self._chunks.append(np.empty(self._chunk_rows, self._dtype))
                self._used = 0
            take = min(len(values) - at, self._chunk_rows - self._used)
            self._chunks[-1][self._used : self._used + take] = values[at : at + take]  # type: ignore[index]
            self._used += take
            at += take

    def chunks(self) -> Iterator[npt.NDArray[Any]]:
        """The filled part of each chunk, in order (spilled ones read back one by one)."""
        for i, chunk in enumerate(self._chunks):
            if isinstance(chunk, tuple):
                yield self._spill.get(chunk, self._dtype)  # type: ignore[union-attr]
            else:
                yield chunk if i < len(self._chunks) - 1 else chunk[: self._used]

    def to_array(self) -> npt.NDArray[Any]:
        """All values as one new array."""
        out = np.empty(len(self), self._dtype)
        at = 0
        for chunk in self.chunks():
            out[at : at + len(chunk)] = chunk
            at += len(chunk)
        return out

    def placed(self, dest: npt.NDArray[np.integer], count: int) -> npt.NDArray[Any]:
        """A new array of ``count`` values: value i at ``dest[i]`` (left out where
        negative; the places are 0 to ``count`` - 1, each taken once), put a chunk at a
        time: the values are never whole in memory in their own order."""
        out = np.empty(count, self._dtype)
        at = 0
        for chunk in self.chunks():
            goes = dest[at : at + len(chunk)]
            at += len(chunk)
            keep = goes >= 0
            if keep.all():
                out[goes] = chunk
            else:
                out[goes[keep]] = chunk[keep]
        return out

    def clear(self) -> None:
        self._chunks, self._used = [], 0
        if self._spill is not None:
            self._spill.close()


class ChunkedStrings:
    """Strings appended a Series at a time, kept as UTF-8 bytes in chunks plus lengths
    (2 bytes a string: e-mail addresses are at most 254 characters). No string straddles
    two chunks, so each chunk turns into a Series by itself."""

    __slots__ = ("_chunk_bytes", "_chunks", "_lengths", "_rows", "_spill", "_used")

    def __init__(self, *, chunk_bytes: int = 4 * _CHUNK_BYTES, spill: bool = False) -> None:
        self._chunk_bytes = chunk_bytes
        self._chunks: list[Chunk] = []
        self._rows: list[int] = []  # strings in each chunk
        self._used = 0  # bytes used in the last chunk
        self._lengths = ChunkedArray(np.uint16, spill=spill)
        self._spill = _Spill() if spill else None

    def __len__(self) -> int:
        return len(self._lengths)

    @property
    def nbytes(self) -> int:
        held = sum(c.nbytes for c in self._chunks if not isinstance(c, tuple))
        return held + self._lengths.nbytes

    def append(self, strings: pl.Series) -> None:
        if not len(strings):
            return
        if strings.null_count():
            raise ValueError("every string must be present (no nulls)")
        lengths = strings.str.len_bytes().to_numpy()
        if lengths.max() > min(np.iinfo(np.uint16).max, self._chunk_bytes):
            raise ValueError("a string of more than 65,535 bytes cannot be kept")
        data = np.frombuffer(strings.str.join("").item().encode(), np.uint8)
        ends = np.cumsum(lengths, dtype=np.int64)
        row = 0
        while row < len(lengths):
            if not self._chunks or self._used + lengths[row] > self._chunk_bytes:
                if self._spill is not None and self._chunks:
                    last = self._chunks[-1]
                    self._chunks[-1] = self._spill.put(last[: self._used])  # type: ignore[index]
                self._chunks.append(np.empty(self._chunk_bytes, np.uint8))
                self._rows.append(0)
                self._used = 0
            start = ends[row - 1] if row else 0
            # The strings that still fit in this chunk, whole.
            stop = int(np.searchsorted(ends, start + self._chunk_bytes - self._used, "right"))
            size = int(ends[stop - 1] - start)
            self._chunks[-1][self._used : self._used + size] = data[start : start + size]  # type: ignore[index]
            self._used += size
            self._rows[-1] += stop - row
            row = stop
        self._lengths.append(lengths)

    def drain_sorted(
        self, order: npt.NDArray[np.integer] | None = None, name: str = "email"
    ) -> SortedStrings:
        """The strings at ``order`` (distinct indices; default all), in that order:
        :meth:`drain_to` with each string's place."""
        if order is None:
            order = np.arange(len(self))
        order = np.asarray(order, np.int64)
        dest = np.full(len(self), -1, _place_type(len(self)))
        dest[order] = np.arange(len(order), dtype=dest.dtype)
        if np.count_nonzero(dest >= 0) != len(order):
            raise ValueError("drain_sorted() takes each string at most once")
        return self.drain_to(dest, len(order), name)

    def drain_to(self, dest: npt.NDArray[np.integer], count: int, name: str) -> SortedStrings:
        """The strings placed by ``dest`` (string i goes to place ``dest[i]``, none if
        negative; the places are 0 to ``count`` - 1, each taken once) in a temporary file,
        read back a slice at a time (:class:`SortedStrings`); only their sizes stay in
        memory (2 bytes each), and the store is left empty.

        Two passes, each over the data once: every chunk's strings are put in place
        order and written out as one run per part of ``_PART`` places (with their places
        and sizes); then each part is read from its runs and put in order. Gathering part
        by part straight from the chunks read every chunk once per part: 17 s at 10M
        e-mails (76 parts), 9.5 s in two passes (measured). The bytes are moved in numpy
        (a polars gather of String copies every string once more: +50 MB at 1M e-mails);
        besides the files, a chunk or a part is held. On disk, the strings are twice at
        most: the chunks' file is closed once the runs hold them all."""
        lengths = self._lengths.to_array()  # uint16
        self._lengths.clear()
        spill, parts, runs = _Spill(), [], _Spill()
        try:
            where = self._scatter(lengths, dest, count, runs)
            self.clear()  # the strings are all in the runs: their chunks' file can go
            for pieces in where:
                out, size = _part_in_order(runs, pieces)
                offset, _ = spill.put(out)
                parts.append((offset, size))
        except BaseException:
            spill.close()
            raise
        finally:
            runs.close()
            self.clear()
        return SortedStrings(spill, parts, name)

    def _scatter(
        self,
        lengths: npt.NDArray[np.uint16],
        dest: npt.NDArray[np.integer],
        count: int,
        runs: _Spill,
    ) -> list[list[_Run]]:
        """Pass one: each chunk's strings that have a place, in place order, written to
        ``runs`` cut at the parts' boundaries; per part, its runs in chunk order."""
        where: list[list[_Run]] = [[] for _ in range(-(-count // _PART))]
        cuts = np.arange(len(where) + 1, dtype=np.int64) * _PART
        first = 0
        for i, rows in enumerate(self._rows):
            size = lengths[first : first + rows]
            goes = dest[first : first + rows]
            first += rows
            at = np.flatnonzero(goes >= 0)
            if not at.size:
                continue
            at = at[np.argsort(goes[at])]  # places are distinct: any sort gives one order
            places, chosen = goes[at], size[at]
            begin = _exclusive_cumsum(size.astype(np.int64), np.int64)[at]
            data = _gather(self._chunk(i), begin, chosen.astype(np.int64))
            ends = np.zeros(at.size + 1, np.int64)
            np.cumsum(chosen, out=ends[1:])
            edge = np.searchsorted(places, cuts)  # the first string of each part
            for part in np.flatnonzero(edge[1:] > edge[:-1]).tolist():
                a, b = int(edge[part]), int(edge[part + 1])
                within = (places[a:b] - part * _PART).astype(np.uint32)
                where[part].append(
                    (
                        runs.put(data[int(ends[a]) : int(ends[b])]),
                        runs.put(within),
                        runs.put(chosen[a:b]),
                    )
                )
        return where

    def _chunk(self, i: int) -> npt.NDArray[np.uint8]:
        chunk = self._chunks[i]
        if isinstance(chunk, tuple):
            return self._spill.get(chunk, np.dtype(np.uint8))  # type: ignore[union-attr]
        return chunk

    def clear(self) -> None:
        self._chunks, self._rows, self._used = [], [], 0
        self._lengths.clear()
        if self._spill is not None:
            self._spill.close()


def _part_in_order(
    runs: _Spill, pieces: list[_Run]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint16]]:
    """Pass two for one part: its runs read back and their strings put in place order;
    and their sizes."""
    data = np.concatenate([runs.get(p[0], np.dtype(np.uint8)) for p in pieces])
    within = np.concatenate([runs.get(p[1], np.dtype(np.uint32)) for p in pieces])
    sizes = np.concatenate([runs.get(p[2], np.dtype(np.uint16)) for p in pieces])
    size = np.empty(within.size, np.uint16)
    size[within] = sizes
    begin = np.empty(within.size, np.int64)
    begin[within] = _exclusive_cumsum(sizes.astype(np.int64), np.int64)
    return _gather(data, begin, size.astype(np.int64)), size


def _place_type(count: int) -> type[np.signedinteger]:
    return np.int32 if count < 2**31 else np.int64


def _gather(
    data: npt.NDArray[np.uint8], begin: npt.NDArray[np.int64], size: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint8]:
    """The strings at ``begin`` (``size`` bytes each) of ``data``, end to end in that order.

    Each string of up to ``_WIDE`` bytes (nearly every e-mail) is copied as one
    ``_WIDE``-byte item into a matrix in output order, which one sequential pass then
    cuts to the strings' sizes; longer ones are copied apart. Copying byte by byte,
    with index arithmetic on every byte and writes scattered over the output, took
    1.2-1.8 s at 1M e-mails; this ~0.5 s (measured)."""
    wide = np.zeros(begin.size, _ROW)
    is_long = size > _WIDE
    near = ~is_long & (begin + _WIDE > data.size)  # the data ends within _WIDE
    fits = ~is_long & ~near
    if fits.any():
        wide[fits] = _windows(data)[begin[fits]]
    if near.any():
        base = max(data.size - _WIDE, 0)
        tail = np.zeros(2 * _WIDE, np.uint8)
        tail[: data.size - base] = data[base:]
        wide[near] = _windows(tail)[begin[near] - base]
    keep = _PREFIX_MASKS[np.minimum(size, _WIDE)]
    if not is_long.any():
        return wide.view(np.uint8).reshape(begin.size, _WIDE)[keep]
    keep[is_long] = False
    short = wide.view(np.uint8).reshape(begin.size, _WIDE)[keep]
    into = _exclusive_cumsum(size, np.int64)
    out = np.empty(int(size.sum()), np.uint8)
    pos = taken = 0  # in out, in short
    for k in np.flatnonzero(is_long).tolist():  # the short strings before each long one, then it
        run = int(into[k]) - pos
        out[pos : pos + run] = short[taken : taken + run]
        pos, taken = pos + run, taken + run
        b, n = int(begin[k]), int(size[k])
        out[pos : pos + n] = data[b : b + n]
        pos += n
    out[pos:] = short[taken:]
    return out


class StringSlices:
    """A string column handed out a slice at a time (a next state's e-mails, written a
    row group at a time), never whole in memory unless asked for with :meth:`to_series`.
    Subclasses give ``name``, ``__len__``, ``nbytes`` and ``slices``."""

    __slots__ = ()
    name: str

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Memory held for the column (not what its slices will take)."""
        raise NotImplementedError

    def slices(self, rows: int) -> Iterator[pl.Series]:
        """The strings in order, as String Series of at most ``rows`` strings."""
        raise NotImplementedError

    def to_series(self) -> pl.Series:
        """All the strings as one Series (one chunk a slice)."""
        parts = list(self.slices(_PART))
        if not parts:
            return pl.Series(self.name, [], dtype=pl.String)
        return pl.concat(parts, rechunk=False)


class SortedStrings(StringSlices):
    """Strings in a fixed order in a temporary file, read back a slice at a time (a next
    state's e-mails, sorted by key): a column never whole in memory unless asked for
    with :meth:`to_series`. Made by :meth:`ChunkedStrings.drain_to`."""

    __slots__ = ("_parts", "_spill", "name")

    def __init__(self, spill: _Spill, parts: list[tuple[int, npt.NDArray[np.uint16]]], name: str):
        self._spill = spill
        self._parts = parts  # per part: where its bytes start in the file, its strings' sizes
        self.name = name

    def __len__(self) -> int:
        return sum(len(size) for _, size in self._parts)

    @property
    def nbytes(self) -> int:
        """Memory held: the strings' sizes (the strings are in the file)."""
        return sum(size.nbytes for _, size in self._parts)

    def slices(self, rows: int) -> Iterator[pl.Series]:
        """The strings in order, as String Series of ``rows`` strings (fewer at the end of
        a part), each read from the file into a buffer of its own."""
        for offset, size in self._parts:
            ends = np.cumsum(size, dtype=np.int64)
            for start in range(0, len(size), rows):
                stop = min(start + rows, len(size))
                begin = int(ends[start - 1]) if start else 0
                data = self._spill.read(offset + begin, int(ends[stop - 1]) - begin)
                piece = _strings(data, size[start:stop].astype(np.int64))
                yield piece.cast(pl.String).alias(self.name)


def _strings(data: bytes, size: npt.NDArray[np.int64]) -> pl.Series:
    """The Binary Series of the strings laid end to end in ``data``, ``size`` bytes each."""
    into = _exclusive_cumsum(size, np.int64)
    value = pl.Series([data], dtype=pl.Binary)
    # Slices of one value are views into its buffer: no copy of the bytes.
    return pl.select(pl.lit(value).bin.slice(pl.Series(into), pl.Series(size))).to_series()
