"""Records read by ``csv.reader`` itself, where quote parity cannot decide them.

The parity scan (shared/records.py) splits a block only while every quote sits where
quoting puts it. From a stray quote on, :class:`ExactRecords` reads the records with
``csv.reader`` (strict=False), as Python's csv module reads the file; :func:`skip_record`
passes over a record too large to hold, streamed. Both count physical lines as the scan
does, and turn damage into rejected records, never into an error.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from shared.records import LINE_END, ByteSource, CsvDialect, line_ends

__all__ = [
    "FIELD_LIMIT",
    "SURROGATES",
    "ExactRecords",
    "ExactResult",
    "skip_record",
    "undecodable_detail",
    "unterminated_detail",
]

_CR, _QUOTE = 13, 34

FIELD_LIMIT = 131_072  # characters in a field: csv.reader's limit, kept as the rule
SURROGATES = re.compile("[\udc80-\udcff]")


@dataclass(slots=True)
class ExactResult:
    """What :meth:`ExactRecords.read` read: rows as ``(line, values)``, records that are
    not rows as ``(line, code, detail)``, and ``skip``: the source starts at a record too
    large for csv.reader, for :func:`skip_record` to pass over."""

    records: list[tuple[int, list[str]]]
    rejects: list[tuple[int, str, str]]
    skip: bool = False


class ExactRecords:
    """Records read by ``csv.reader`` itself, from a :class:`ByteSource`.

    Used where quote parity cannot decide (see the module docstring). ``read(target)``
    reads whole records until ``target`` bytes are used or the file ends, blank lines
    skipped as csv.reader does; the source then starts at the next record, for the
    parity scan to take up again. Damage becomes rejected records, never an error:
    bytes that are not UTF-8 (``undecodable_row``), and a quote still open at the end of
    the file (``unterminated_quote``: every line from the record's first to the end).
    """

    def __init__(
        self,
        source: ByteSource,
        *,
        dialect: CsvDialect,
        name: str,
        errors: str = "strict",
        encoding: str = "UTF-8",
    ) -> None:
        self._source = source
        self._dialect = dialect
        self._name = name
        self._errors = "surrogateescape" if errors == "strict" else errors
        self._encoding = encoding  # as the model names it, for reasons

    def read(self, target: int) -> ExactResult:
        source = self._source
        result = ExactResult([], [])
        self._pos = self._record_pos = 0
        self._line = start = source.line
        self._open_at_end = False
        self._lines_of_record: list[int] = []  # its non-blank physical lines
        reader = csv.reader(self._lines(), **self._dialect.reader_options())
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error:  # a field over csv's limit: the record is too large
                result.skip = True
                source.consume(self._record_pos, start)
                return result
            if self._open_at_end:
                detail = (
                    f"a quoted field opened on line {start} is not closed by the end of the file"
                )
                result.rejects += [
                    (line, "unterminated_quote", detail) for line in self._lines_of_record
                ]
            elif values:
                bad = next((i for i, v in enumerate(values) if SURROGATES.search(v)), None)
                if bad is None:
                    result.records.append((start, values))
                else:
                    detail = undecodable_detail(bad, self._encoding)
                    result.rejects.append((start, "undecodable_row", detail))
            start, self._record_pos, self._lines_of_record = self._line, self._pos, []
            if self._pos >= target:
                break
        source.consume(self._pos, self._line)
        return result

    def _lines(self) -> Iterator[str]:
        """Physical lines (line end kept), decoded; counts lines and bytes as it goes."""
        source = self._source
        while True:
            buffer, size = source.buffer, len(source)  # the view lasts until more()
            found = LINE_END.search(buffer, self._pos)
            unfinished = found is None or (found.group() == b"\r" and found.end() == size)
            # No line end yet, or a CR that may be half of a CRLF: read on.
            if unfinished and source.more():
                continue
            if self._pos >= size:
                self._open_at_end = True  # csv.reader asked for more: a quote is open
                return
            end = found.end() if found is not None else size
            raw = bytes(buffer[self._pos : end])
            self._pos = end
            if raw.rstrip(b"\r\n"):
                self._lines_of_record.append(self._line)
            self._line += 1
            yield raw.decode("utf-8", self._errors)


def unterminated_detail(line: int) -> str:
    return f"a quoted field opened on line {line} is not closed by the end of the file"


def undecodable_detail(field: int, encoding: str = "UTF-8") -> str:
    return f"bytes that are not valid {encoding} in field {field + 1}"


def skip_record(source: ByteSource, *, quoting: bool) -> tuple[int, list[int], bool]:
    """Pass over the record the source starts at, too large to read (streamed, never held
    whole). Returns (its first line, its non-blank lines, whether the file ended inside
    it: a quote left open); the source then starts at the next record."""
    first = line = source.line
    lines: list[int] = []
    open_ = False
    while True:
        a = np.frombuffer(source.buffer, dtype=np.uint8)
        ends, _, _, _ = line_ends(a, source.eof)
        # One line at a time is enough here: this runs only for damaged data.
        quotes = np.flatnonzero(a == _QUOTE) if quoting else np.empty(0, np.int64)
        before = np.searchsorted(quotes, ends) if quoting else np.zeros(ends.size, np.int64)
        parity = (before + open_) & 1
        starts = np.concatenate(([0], ends[:-1] + 1)) if ends.size else np.empty(0, np.int64)
        blank = (ends - starts) <= np.where(a[np.maximum(ends - 1, 0)] == _CR, 1, 0)
        closed = np.flatnonzero(parity == 0)
        taken = int(closed[0]) + 1 if closed.size else ends.size
        lines += [line + i for i in np.flatnonzero(~blank[:taken]).tolist()]
        line += taken
        if closed.size:
            source.consume(int(ends[taken - 1]) + 1, line)
            return first, lines, False
        used = int(ends[-1]) + 1 if ends.size else 0
        open_ = bool((int(np.searchsorted(quotes, used)) + open_) & 1) if quoting else False
        source.consume(used, line)
        if not source.more():
            if len(source):  # a last line without a line end
                lines.append(line)
                source.consume(len(source), line + 1)
            return first, lines, True
