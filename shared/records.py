"""Where the records of a CSV byte stream start and end, found with numpy, not per row.

The block reader (shared/blocks.py) cuts each file into blocks of whole records and hands
each to polars. Three things must be exact for that, and all come from this module:

- **Record boundaries.** A record ends at a line end outside quotes. With RFC 4180 quoting
  that is a line end preceded by an even number of quote characters since the block began
  (the block begins at a record boundary). That holds only while every quote sits where
  quoting puts it: an opening quote at the start of a field, a closing one before a
  delimiter, a line end or a doubled quote. ``csv.reader`` (strict=False) reads a quote
  anywhere else as text, so a block with such a quote is not split by parity: its records
  from that quote on are read by ``csv.reader`` itself (shared/exactrecords.py).
- **Line numbers.** A record's line is the physical line it starts on, counting ``\\n``,
  ``\\r\\n`` and a lone ``\\r`` as line ends (as ``TextIOWrapper(newline="")`` does), also
  inside quoted values. polars reads a lone ``\\r`` as data, so one that ends a record is
  turned into ``\\n`` (same length, offsets unchanged) before parsing.
- **Field counts.** Delimiters outside quotes, per record: a record with the wrong count
  is rejected as ``malformed_row``; a blank line is no record, as for ``csv.reader``.
"""

from __future__ import annotations

import csv
import ctypes
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.errors import InputError

__all__ = [
    "LINE_END",
    "ByteSource",
    "CsvDialect",
    "Scan",
    "Step",
    "byte_positions",
    "clean_prefix",
    "count_line_ends",
    "line_ends",
    "scan_block",
    "undecodable",
]

_LF, _CR, _QUOTE, _BACKSLASH = 10, 13, 34, 92
LINE_END = re.compile(rb"\r\n|\r|\n")
_SCRATCH = threading.local()
_SCRATCH_LIMIT = 8 * 1024 * 1024


def byte_positions(a: np.ndarray, test: Callable[..., np.ndarray], value: int) -> np.ndarray:
    """``np.flatnonzero(test(a, value))``, the mask written into a buffer this thread keeps
    (a run's reading moves between the few threads of the event loop's executor, never
    two at once, so a process keeps one such buffer for each of those it ran in).

    A block is scanned this way four times (control bytes, quotes, delimiters, bytes over
    0x7f). A fresh mask of the block's size each time was memory the allocator handed
    back after the block and the kernel had to zero again for the next, at ~3.6 µs of
    kernel time a page on this VM: on 1M rows (72 blocks of 2 MB) the scans' page faults
    went from 49k to 9k with the kept mask (measured).
    """
    mask = getattr(_SCRATCH, "mask", None)
    if mask is None or mask.size < a.size:
        mask = np.empty(a.size, dtype=bool)
        if a.size <= _SCRATCH_LIMIT:  # not the window a very long record took to scan
            _SCRATCH.mask = mask
    view = mask[: a.size]
    test(a, value, out=view)
    return np.flatnonzero(view)


@dataclass(frozen=True, slots=True)
class CsvDialect:
    """How a partition is written: its delimiter, and whether quotes quote."""

    delimiter: str = ","
    quoting: bool = True

    @property
    def byte(self) -> int:
        return ord(self.delimiter.encode("utf-8")[:1]) if self.delimiter.isascii() else -1

    def reader_options(self) -> dict[str, Any]:
        return {
            "delimiter": self.delimiter,
            "quotechar": '"',
            "doublequote": True,
            "quoting": csv.QUOTE_MINIMAL if self.quoting else csv.QUOTE_NONE,
            "strict": False,
        }


@dataclass(frozen=True, slots=True)
class Scan:
    """The records of one block of whole records.

    ``starts``/``ends`` are byte offsets of each record's content (``ends`` excludes the
    line end), ``lines`` the physical line each starts on, ``fields`` its field count
    (0 for a blank line). ``data`` is the block, lone CRs that end a record made ``\\n``.
    """

    data: bytes
    starts: np.ndarray
    ends: np.ndarray
    lines: np.ndarray
    fields: np.ndarray
    next_line: int  # the line the byte after the block is on
    c0_controls: bool = True  # a C0 control character other than tab/CR/LF may be there
    # Per record: no byte inside it that a JSON string must escape (a control character,
    # a line end inside quotes, a backslash, a quote that is data); None: not known.
    plain: np.ndarray | None = None


def line_ends(a: np.ndarray, eof: bool) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray]:
    """Positions of every line end (the ``\\n`` of ``\\r\\n``), of the lone CRs, whether
    there is a C0 control character other than tab, CR and LF, and every byte under 0x20
    (one pass over the bytes finds them all)."""
    low = byte_positions(a, np.less, 0x20)
    kinds = a[low]
    lf = low[kinds == _LF]
    cr = low[kinds == _CR]
    controls = bool(((kinds != _LF) & (kinds != _CR) & (kinds != 9)).any())
    if cr.size:
        after = cr + 1
        inside = after < a.size
        lone = np.zeros(cr.size, dtype=bool)
        lone[inside] = a[after[inside]] != _LF
        # A CR as the very last byte ends a line only at the end of the file: before that,
        # the next chunk may start with its LF.
        lone[~inside] = eof
        lone_cr = cr[lone]
        if lone_cr.size:
            return np.union1d(lf, lone_cr), lone_cr, controls, low
    return lf, cr[:0], controls, low


def _boundaries(a: np.ndarray, ends: np.ndarray, quotes: np.ndarray | None) -> np.ndarray:
    """The line ends that end a record: those with an even number of quotes before them."""
    if quotes is None or quotes.size == 0:
        return ends
    return ends[(np.searchsorted(quotes, ends) & 1) == 0]


def clean_prefix(a: np.ndarray, quotes: np.ndarray, delimiter: int) -> int:
    """Offset of the first quote that ``csv.reader`` would read differently from quote
    parity (see the module docstring), or ``a.size`` when there is none.

    A closing quote as the very last byte is taken as fine: no record is cut after it
    before the next chunk shows what follows.
    """
    if quotes.size == 0:
        return a.size
    opening = quotes[0::2]
    closing = quotes[1::2]
    before = a[np.maximum(opening - 1, 0)]
    ok_open = (opening == 0) | (before == delimiter) | (before == _LF) | (before == _CR)
    # After a doubled quote ("") the second one starts a new quoted stretch.
    ok_open |= (before == _QUOTE) & (opening > 0)
    after = a[np.minimum(closing + 1, a.size - 1)]
    ok_close = (closing + 1 >= a.size) | (after == _QUOTE) | (after == delimiter)
    ok_close |= (after == _LF) | (after == _CR)
    bad = np.concatenate([opening[~ok_open], closing[~ok_close]])
    return int(bad.min()) if bad.size else a.size


@dataclass(frozen=True, slots=True)
class Step:
    """What :func:`scan_block` found: ``scan`` covers ``used`` bytes (None when 0); with
    ``exact`` the records from ``used`` on need :class:`ExactRecords`; ``used == 0`` and
    not ``exact``: more data is needed to end a record."""

    scan: Scan | None
    used: int
    exact: bool = False


def scan_block(
    buffer: bytes, *, dialect: CsvDialect, first_line: int, eof: bool, target: int
) -> Step:
    """The whole records at the start of ``buffer`` (about ``target`` bytes of them)."""
    a = np.frombuffer(buffer, dtype=np.uint8)
    ends, lone_cr, controls, low = line_ends(a, eof)
    quotes = byte_positions(a, np.equal, _QUOTE) if dialect.quoting else None
    limit = a.size if quotes is None else clean_prefix(a, quotes, dialect.byte)
    bounds = _boundaries(a, ends, quotes)

    def table(ends_at: np.ndarray, used: int, *, tail: bool = False) -> Scan | None:
        args = (ends, lone_cr, quotes, dialect, first_line, controls, low)
        return _table(a, ends_at, *args, used, tail=tail)

    if limit < a.size:
        # Records before the one holding the undecidable quote are fine; csv.reader reads
        # from the start of that one.
        bounds = bounds[bounds < limit]
        used = int(bounds[-1]) + 1 if bounds.size else 0
        return Step(table(bounds, used), used, exact=True)
    last = int(bounds[-1]) + 1 if bounds.size else 0
    if eof and a.size <= target and last < a.size:
        if quotes is not None and _open_at(quotes, a.size):
            # A quote still open at the end of the file: csv.reader says where it opened.
            return Step(table(bounds, last), last, exact=True)
        # The last record has no line end.
        return Step(table(bounds, a.size, tail=True), a.size)
    cut = _cut(bounds, target)
    if cut is None:
        if eof:  # one open record runs to the end of the file, longer than target
            return Step(None, 0, exact=True)
        return Step(None, 0)
    return Step(table(bounds[bounds < cut], cut), cut)


def _cut(bounds: np.ndarray, target: int) -> int | None:
    """Where to end the block: after the last record end within ``target`` bytes, or
    after the first one past it when a single record is longer."""
    if not bounds.size:
        return None
    within = np.searchsorted(bounds, target - 1, side="right")
    pick = bounds[within - 1] if within else bounds[0]
    return int(pick) + 1


def _open_at(quotes: np.ndarray, position: int) -> bool:
    return bool(np.searchsorted(quotes, position) & 1)


def _table(
    a: np.ndarray,
    bounds: np.ndarray,
    ends: np.ndarray,
    lone_cr: np.ndarray,
    quotes: np.ndarray | None,
    dialect: CsvDialect,
    first_line: int,
    controls: bool,
    low: np.ndarray,
    used: int,
    *,
    tail: bool = False,
) -> Scan | None:
    """The record table of ``a[:used]``; ``tail``: the last record has no line end."""
    if used == 0:
        return None
    starts = np.concatenate(([0], bounds + 1)).astype(np.int64)
    stops = bounds.astype(np.int64)
    if tail:
        stops = np.concatenate((stops, [used]))
    else:
        starts = starts[:-1]
    # "\r\n": the record's content ends before the CR.
    crlf = np.zeros(stops.size, dtype=bool)
    has_before = (stops > starts) & (stops < a.size)
    if stops.size:
        idx = np.minimum(stops, a.size - 1)
        crlf = has_before & (a[idx] == _LF) & (a[np.maximum(idx - 1, 0)] == _CR)
    content_ends = stops - crlf
    lines = first_line + np.searchsorted(ends, starts)
    next_line = first_line + int(np.searchsorted(ends, used))
    fields = _field_counts(a[:used], starts, content_ends, quotes, dialect.byte)
    data = a[:used]
    if lone_cr.size:
        fix = lone_cr[np.isin(lone_cr, bounds)]
        if fix.size:
            data = data.copy()
            data[fix] = _LF
    block = data.tobytes()
    plain = _plain(a[:used], block, starts, content_ends, low, quotes)
    return Scan(block, starts, content_ends, lines, fields, next_line, controls, plain)


def _plain(
    a: np.ndarray,
    data: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    low: np.ndarray,
    quotes: np.ndarray | None,
) -> np.ndarray:
    """Per record: whether no byte in its content needs a JSON escape. Conservative: a
    control character or line end anywhere inside it, a backslash, two quotes side by
    side (a quote in a quoted value, or an empty quoted value) or, where quotes do not
    quote, any quote at all."""
    suspects = [low[low < a.size]]
    if quotes is None:
        if data.find(b'"') >= 0:
            suspects.append(byte_positions(a, np.equal, _QUOTE))
    elif quotes.size > 1:
        inside = quotes[quotes < a.size]
        suspects.append(inside[1:][np.diff(inside) == 1])
    if data.find(b"\\") >= 0:
        suspects.append(byte_positions(a, np.equal, _BACKSLASH))
    at = np.concatenate(suspects)
    plain = np.ones(starts.size, dtype=bool)
    if at.size and starts.size:
        owner = np.searchsorted(starts, at, side="right") - 1
        inside = (owner >= 0) & (at < ends[np.maximum(owner, 0)])
        plain[owner[inside]] = False
    return plain


def _field_counts(
    a: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    quotes: np.ndarray | None,
    delimiter: int,
) -> np.ndarray:
    delims = byte_positions(a, np.equal, delimiter) if delimiter >= 0 else np.empty(0, np.int64)
    counts = np.searchsorted(delims, ends) - np.searchsorted(delims, starts)
    if quotes is not None and quotes.size > 1 and delims.size:
        q = quotes[quotes < a.size]
        opening, closing = q[0::2][: q.size // 2], q[1::2]
        inside = np.searchsorted(delims, closing) - np.searchsorted(delims, opening)
        owner = np.searchsorted(starts, opening, side="right") - 1
        counts = counts - np.bincount(owner, weights=inside, minlength=starts.size).astype(np.int64)
    fields = counts + 1
    fields[ends <= starts] = 0  # a blank line
    return fields


# A downloaded chunk is added to the buffer this much at a time, so the buffer holds about
# a block plus a piece, whatever the chunk size. 1 MB rather than 2: the kept storage is a
# megabyte smaller, and the reading benchmark's page faults 410k -> 360k (measured).
PIECE_BYTES = 1024 * 1024
_NOTHING = memoryview(b"")
_KEEP_BYTES = 16 * 1024 * 1024  # storage larger than this is not kept once it is not needed


class ByteSource:
    """One file's bytes from a record on: what has been read, and the chunks to come.

    The bytes live in one array that is kept for the whole file: consuming moves a start
    offset, and a new piece goes after the bytes left, which are moved to the front when
    the piece would not fit. Building a new ``bytes`` for every piece and every cut (as
    ``+=`` and slicing do) took fresh memory each time, which the allocator gave back
    after each block and the kernel had to zero again: on 1M rows the source's page
    faults went from 54k to 6k (see ``byte_positions`` for what a fault costs).
    """

    def __init__(self, chunks: Iterator[bytes], buffer: bytes = b"", line: int = 1) -> None:
        self._chunks = chunks
        self._rest = _NOTHING  # what is left of the chunk being taken
        self._data = np.frombuffer(buffer, dtype=np.uint8).copy()
        self._start, self._end = 0, self._data.size
        self.line = line  # the physical line ``buffer`` starts on
        self.eof = False  # every chunk has been taken

    @property
    def buffer(self) -> memoryview:
        """The bytes read and not consumed: a read-only view, valid until the next
        :meth:`more`, :meth:`fill` or :meth:`consume` (copy what must outlive that)."""
        return memoryview(self._data[self._start : self._end]).toreadonly()

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def done(self) -> bool:
        return self.eof and self._end == self._start

    def more(self) -> bool:
        """Append the next piece of the chunks (see PIECE_BYTES); False at the end of the
        file."""
        while not self._rest and not self.eof:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.eof = True
            else:
                self._rest = memoryview(chunk)
        if not self._rest:
            return False
        piece, rest = self._rest[:PIECE_BYTES], self._rest[PIECE_BYTES:]
        # An empty view would still hold the whole chunk.
        self._rest = rest if rest else _NOTHING
        self._append(np.frombuffer(piece, dtype=np.uint8))
        return True

    def fill(self, size: int) -> None:
        while len(self) < size and self.more():
            pass

    def consume(self, used: int, next_line: int) -> None:
        self._start = min(self._start + used, self._end)
        self.line = next_line

    def _append(self, piece: np.ndarray) -> None:
        held, size = self._end - self._start, self._data.size
        need = held + piece.size
        oversized = size > max(_KEEP_BYTES, 4 * need)  # what a very long record needed
        if self._end + piece.size > size or oversized:
            if need > size:  # grown by a quarter: a block and a piece fit after a few
                data = np.empty(max(need, size + size // 4), dtype=np.uint8)
            elif oversized:
                data = np.empty(2 * need, dtype=np.uint8)
            else:
                data = self._data
            # memmove: the bytes may move within the same array, overlapping.
            ctypes.memmove(data.ctypes.data, self._data.ctypes.data + self._start, held)
            self._data, self._start, self._end = data, 0, held
        self._data[self._end : self._end + piece.size] = piece
        self._end += piece.size


def count_line_ends(data: bytes) -> int:
    """Line ends in ``data`` (CRLF, LF or a lone CR), as TextIOWrapper(newline="") sees them."""
    return len(LINE_END.findall(data))


def undecodable(exc: UnicodeDecodeError, name: str, line: int) -> InputError:
    """The run-stopping error for bytes that are not UTF-8 (file, line, the byte)."""
    return InputError(
        f"cannot decode as UTF-8: {exc.reason} (byte {exc.object[exc.start : exc.start + 1]!r})",
        file=name,
        line=line,
    )
