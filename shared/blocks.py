"""A snapshot's partitions as blocks of rows: a few MB of whole records at a time.

    Prefetcher (ranged GETs) -> utf8_chunks (gzip, transcoding, BOM)     shared/download.py
      -> scan_block: record ends, lines, field counts (numpy)             shared/records.py
         (ExactRecords: csv.reader, where quote parity cannot decide)
      -> polars parses the mapped columns of the well-formed records
      -> RowBlock: the rows as a DataFrame, their lines, the records that are not rows

Memory is bounded by the download read-ahead and one block (``block_bytes``), whatever
the snapshot's size. The columns come from the header row when the partition's CSV
settings say it has one (every file must then carry the same header), else from the
entity's attributes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from shared.cdm import CdmEntity, CsvFormat
from shared.damage import damaged_records, has_controls, skipped
from shared.download import Prefetcher, text_codec, utf8_chunks
from shared.engine import pl
from shared.errors import InputError
from shared.exactrecords import ExactRecords, ExactResult
from shared.records import ByteSource, CsvDialect, Scan, scan_block
from shared.structure import check_partitions, header_difference

if TYPE_CHECKING:
    from shared.segments import Snapshot

__all__ = ["DEFAULT_BLOCK_BYTES", "BlockReader", "RecordReject", "RowBlock", "column_name"]

logger = logging.getLogger(__name__)

# Records per block, in bytes. The engine works in ~25x a block, so this sets most of the
# reading's memory. 1M x 3 end to end, paired runs (peak PSS, CPU per row): 2 MB 242-269
# MB, 10.8-11.8 µs; 1.5 MB 242-252 MB, 10.7-11.4 µs; 1 MB 228-244 MB, 11.5-12.7 µs.
DEFAULT_BLOCK_BYTES = 3 * 512 * 1024
# Bytes per ranged GET. Over 4 MiB on purpose: Azurite, for a range of 4 MiB or less,
# reads it twice to compute an MD5 it then drops. 1M rows (3 partitions, 139 MB), paired
# runs against 2 MiB ranges (two at once, three ahead): Azurite's CPU 3.0-3.1 -> 1.9-2.0 s,
# the wall 13.7-14.3 -> 12.2-13.4 s, the exporter's download threads 0.59-0.60 -> 0.37-0.40
# µs a row; the peak +4-6 MB in the reading benchmark (one chunk held while the next
# downloads), ~5-12 MB end to end, within the noise (three paired runs each way: 259-277
# against 257-289 MB). 8 MiB ranges: +13 MB in the reading benchmark. Blob Storage
# charges per request, so fewer, larger GETs cost no more there either.
DEFAULT_CHUNK_SIZE = 5 * 1024 * 1024
_SCAN_MARGIN = 64 * 1024  # looked at past the target, to find the record that ends the block
# A record that does not end within this is passed over and rejected, not held whole.
MAX_RECORD_BYTES = 4 * 1024 * 1024


def column_name(position: int) -> str:
    """The name of column ``position`` in a RowBlock's frame."""
    return f"c{position}"


class RecordReject(NamedTuple):
    """A record that is not a row: its line, a reason code and a detail without values."""

    line: int
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class RowBlock:
    """Whole records of one file: ``frame`` holds the requested columns of the rows
    (``column_name(position)``, strings), ``lines`` the line each row starts on;
    ``rejects`` are the records that are not rows, in line order."""

    file_index: int
    file: str
    frame: pl.DataFrame
    lines: np.ndarray
    rejects: tuple[RecordReject, ...] = ()
    controls: bool = True  # the rows may hold control characters (False: they do not)
    # Per row: its record holds no byte a JSON string must escape (backslash, quote,
    # control character); None: not known, escape every row.
    plain: np.ndarray | None = None

    @property
    def records(self) -> int:
        """Records read: rows and rejects."""
        return self.frame.height + len(self.rejects)


@dataclass(slots=True)
class _OpenFile:
    index: int
    name: str
    format: CsvFormat
    source: ByteSource  # read on from the first record after the header
    header: tuple[str, ...] | None = None


class BlockReader:
    """Streams a snapshot's files as RowBlocks, in partition order.

    ``chunk_size`` bytes per ranged GET, ``max_concurrency`` GETs at once, at most
    ``prefetch_chunks`` chunks held ahead; ``block_bytes`` of records per block.
    ``encoding_errors`` is the codec error handler: "strict" raises InputError (file and
    line) on bytes that do not decode. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        container_client: object,
        snapshot: Snapshot,
        entity: CdmEntity,
        *,
        encoding_errors: str = "strict",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = 1,
        prefetch_chunks: int = 1,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
    ) -> None:
        self._client = container_client
        self._snapshot = snapshot
        self._entity = entity
        self._errors = encoding_errors
        self._download = {
            "chunk_size": max(1, chunk_size),
            "max_concurrency": max(1, max_concurrency),
            "depth": max(1, prefetch_chunks),
        }
        self._block_bytes = max(1024, block_bytes)
        self._formats = tuple(partition_format(entity, name) for name in snapshot.files)
        self._codecs = tuple(
            text_codec(f, n) for f, n in zip(self._formats, snapshot.files, strict=True)
        )
        self._prefetcher: Prefetcher | None = None
        self._next_file = 0
        self._pending: _OpenFile | None = None  # opened to read its header, rows not read yet
        self._columns: tuple[str, ...] | None = None
        self._header_file: str | None = None
        self._started = False

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names in file order (reads the first file's header if it has one)."""
        if self._columns is None:
            self.open()
        assert self._columns is not None  # set by open()
        return self._columns

    def open(self) -> BlockReader:
        """Start the download and settle the columns; called by ``columns`` and ``blocks``."""
        if self._columns is not None:
            return self
        try:
            self._columns = self._settle_columns()
        except BaseException:
            self.close()
            raise
        return self

    def blocks(self, positions: Sequence[int] | None = None) -> Iterator[RowBlock]:
        """Every file's records in order, as blocks holding the columns at ``positions``
        (all columns when None); may be iterated once."""
        if self._started:
            raise RuntimeError("BlockReader.blocks() can be iterated only once")
        self._started = True
        try:
            columns = self.columns
            wanted = sorted(set(range(len(columns)) if positions is None else positions))
            while True:
                opened = self._pending or self._open_if_any()
                self._pending = None
                if opened is None:
                    return
                self._check_header(opened, columns)
                yield from self._file_blocks(opened, wanted, len(columns))
        finally:
            self.close()

    def close(self) -> None:
        """Stop the downloads and drop buffered data."""
        self._pending = None
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- files and columns ------------------------------------------------------------

    def _settle_columns(self) -> tuple[str, ...]:
        while self._next_file < len(self._snapshot.files):
            opened = self._open_next()
            if opened.header is None and opened.format.header:
                continue  # an empty file with a header setting: no header, no rows
            self._pending = opened
            if opened.header is None:
                return self._attributes(opened.name)
            self._header_file = opened.name
            if self._entity.attributes and opened.header != self._entity.attributes:
                logger.warning(
                    "%s: header differs from the model's attributes of %s; using the header",
                    opened.name,
                    self._entity.name,
                )
            return opened.header
        # Every file was empty: no rows, but columns still answer from the model.
        return self._entity.attributes

    def _open_if_any(self) -> _OpenFile | None:
        return self._open_next() if self._next_file < len(self._snapshot.files) else None

    def _open_next(self) -> _OpenFile:
        if self._prefetcher is None:
            snap = self._snapshot
            self._prefetcher = Prefetcher(
                self._client, snap.files, snap.sizes, snap.etags, **self._download
            )
        index = self._next_file
        self._next_file += 1
        name = self._snapshot.files[index]
        fmt = self._formats[index]
        chunks = utf8_chunks(
            self._prefetcher.file_chunks(index), name, self._codecs[index], errors=self._errors
        )
        opened = _OpenFile(index, name, fmt, ByteSource(chunks))
        if fmt.header:
            # The first record that is not a blank line (it may span lines).
            exact = ExactRecords(opened.source, dialect=_dialect(fmt), name=name)
            result = exact.read(1)
            if result.rejects or result.skip:
                line = result.rejects[0][0] if result.rejects else opened.source.line
                raise InputError("the header row cannot be read (damaged)", file=name, line=line)
            if result.records:
                opened.header = tuple(result.records[0][1])
        return opened

    def _attributes(self, name: str) -> tuple[str, ...]:
        if not self._entity.attributes:
            raise InputError(
                f"no column names: {name} has no header row and the model lists no "
                f"attributes for entity {self._entity.name!r}",
                file=name,
            )
        return self._entity.attributes

    @property
    def columns_from_header(self) -> bool:
        """Whether the columns were read from a header row (whose cells may be data)."""
        self.open()
        return self._header_file is not None

    def check_structure(self) -> None:
        """Check every partition's header, or its first records' field count, against the
        columns (one small read each); InputError for a structural problem. Call before
        sending anything."""
        snap = self._snapshot
        check_partitions(
            self._client,
            snap.files,
            snap.sizes,
            snap.etags,
            self._formats,
            self._codecs,
            self.columns,
            reference=self._reference(),
            model_names=self._model_names(),
        )

    def _reference(self) -> str:
        return (
            f"the header of {self._header_file}"
            if self._header_file
            else ("the model's attributes")
        )

    def _model_names(self) -> tuple[str, ...]:
        # Shown only when the columns are the model's own names.
        return () if self._header_file else self._entity.attributes

    def _check_header(self, opened: _OpenFile, columns: tuple[str, ...]) -> None:
        if opened.header is None or opened.header == columns:
            return
        difference = header_difference(columns, opened.header, names=self._model_names())
        raise InputError(
            f"header differs from {self._reference()}: {difference}", file=opened.name, line=1
        )

    # -- blocks of one file -----------------------------------------------------------

    def _file_blocks(self, f: _OpenFile, wanted: list[int], expected: int) -> Iterator[RowBlock]:
        dialect = _dialect(f.format)
        source, target = f.source, self._block_bytes
        exact = ExactRecords(
            source,
            dialect=dialect,
            name=f.name,
            errors=self._errors,
            encoding=f.format.encoding,
        )
        if dialect.byte < 0:  # a non-ASCII delimiter: csv.reader reads the whole file
            while not source.done:
                yield from self._exact_blocks(f, exact, dialect, wanted, expected)
            return
        window = target + _SCAN_MARGIN
        while not source.done:
            source.fill(window)
            if not len(source):
                return
            whole = len(source) <= window
            step = scan_block(
                source.buffer if whole else source.buffer[:window],
                dialect=dialect,
                first_line=source.line,
                eof=source.eof and whole,
                target=target,
            )
            if step.scan is not None:
                source.consume(step.used, step.scan.next_line)
                yield self._fast_block(f, step.scan, dialect, wanted, expected)
            if step.exact:
                yield from self._exact_blocks(f, exact, dialect, wanted, expected)
            elif step.used == 0 and window >= MAX_RECORD_BYTES:
                # No record ends within the limit: pass over it without holding it.
                yield _skipped(f, source, dialect, wanted, larger_than=MAX_RECORD_BYTES)
            elif step.used == 0:
                window *= 2  # a record longer than the window: look further
                continue
            window = target + _SCAN_MARGIN

    def _exact_blocks(
        self,
        f: _OpenFile,
        exact: ExactRecords,
        dialect: CsvDialect,
        wanted: list[int],
        expected: int,
    ) -> Iterator[RowBlock]:
        """One block's worth of records read by csv.reader (and a record too large for it)."""
        result = exact.read(self._block_bytes)
        yield _block_of_records(f, result, wanted, expected)
        if result.skip:
            yield _skipped(f, f.source, dialect, wanted)

    def _fast_block(
        self, f: _OpenFile, scan: Scan, dialect: CsvDialect, wanted: list[int], expected: int
    ) -> RowBlock:
        damaged = damaged_records(scan, dialect, f.format.encoding)
        good = (scan.fields == expected) & ~damaged.mask
        bad = ~good & ~damaged.mask & (scan.fields != 0)  # 0 fields: a blank line, no record
        rejects = [
            RecordReject(line, "malformed_row", _count_error(expected, found))
            for line, found in zip(scan.lines[bad].tolist(), scan.fields[bad].tolist(), strict=True)
        ]
        rejects = sorted(rejects + [RecordReject(*r) for r in damaged.rejects])
        data = scan.data if good.all() else _only(scan, good)
        frame = _parse(data, dialect, wanted, expected) if good.any() else _empty(wanted)
        if frame.height != int(good.sum()):
            # polars and the record table disagree (it should not happen): csv.reader rules.
            logger.warning("%s:%d: block re-read by csv.reader", f.name, int(scan.lines[0]))
            again = ByteSource(iter(()), scan.data, int(scan.lines[0]))
            again.eof = True
            exact = ExactRecords(again, dialect=dialect, name=f.name, errors=self._errors)
            return _block_of_records(f, exact.read(len(scan.data) + 1), wanted, expected)
        controls = has_controls(scan)
        plain = scan.plain[good] if scan.plain is not None else None
        return RowBlock(f.index, f.name, frame, scan.lines[good], tuple(rejects), controls, plain)


def _skipped(
    f: _OpenFile,
    source: ByteSource,
    dialect: CsvDialect,
    wanted: list[int],
    *,
    larger_than: int | None = None,
) -> RowBlock:
    """A record too large to read, passed over (see ``damage.skipped``)."""
    rejects = tuple(RecordReject(*r) for r in skipped(source, dialect, larger_than=larger_than))
    return RowBlock(f.index, f.name, _empty(wanted), np.empty(0, dtype=np.int64), rejects)


def _dialect(fmt: CsvFormat) -> CsvDialect:
    return CsvDialect(delimiter=fmt.delimiter, quoting=fmt.quote_style != "none")


def _count_error(expected: int, found: int) -> str:
    return f"expected {expected} fields, found {found}"


def _only(scan: Scan, keep: np.ndarray) -> bytes:
    """The bytes of the kept records (each with its line end), in order."""
    a = np.frombuffer(scan.data, dtype=np.uint8)
    extents = np.diff(np.concatenate((scan.starts, [a.size])))
    return a[np.repeat(keep, extents)].tobytes()


def _parse(data: bytes, dialect: CsvDialect, wanted: list[int], expected: int) -> pl.DataFrame:
    return pl.read_csv(
        data,
        has_header=False,
        separator=dialect.delimiter,
        quote_char='"' if dialect.quoting else None,
        schema={column_name(i): pl.String for i in range(expected)},
        columns=wanted,
        empty_string_is_null=False,
        missing_columns="insert",
        extra_columns="ignore",
        truncate_ragged_lines=True,
    ).rechunk()


def _empty(wanted: list[int]) -> pl.DataFrame:
    return pl.DataFrame(schema={column_name(i): pl.String for i in wanted})


def _block_of_records(
    f: _OpenFile, result: ExactResult, wanted: list[int], expected: int
) -> RowBlock:
    rows = [(line, values) for line, values in result.records if len(values) == expected]
    rejects = [
        RecordReject(line, "malformed_row", _count_error(expected, len(values)))
        for line, values in result.records
        if len(values) != expected
    ]
    rejects += [RecordReject(line, code, detail) for line, code, detail in result.rejects]
    frame = pl.DataFrame(
        {column_name(i): [values[i] for _, values in rows] for i in wanted},
        schema={column_name(i): pl.String for i in wanted},
    )
    lines = np.array([line for line, _ in rows], dtype=np.int64)
    return RowBlock(f.index, f.name, frame, lines, tuple(sorted(rejects)))


def partition_format(entity: CdmEntity, name: str) -> CsvFormat:
    """The CSV settings of the partition whose location is this blob, else the first one's."""
    chosen = next(
        (p for p in entity.partitions if p.path == name or p.path.endswith("/" + name)),
        entity.partitions[0] if entity.partitions else None,
    )
    if chosen is None:
        return CsvFormat()
    if chosen.csv is None:
        raise InputError(f"partition {chosen.name or chosen.location} is not CSV", file=name)
    return chosen.csv
