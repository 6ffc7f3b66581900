"""Write a realistic Customer Insights segment export to Blob Storage (demo, benchmark, tests).

The export has the real layout: ``<folder>/model.json`` and
``<folder>/<segment>/<YYYY>/<MM>/<DD>/<HHMM>/<segment>_<n>.csv`` (UTF-8 with a BOM, CRLF,
optionally gzipped), and what real exports contain: mixed-case and padded addresses,
duplicates, invalid addresses, non-ASCII names, quoted fields with commas and newlines,
empty values, phones in local and E.164 formats. Files are streamed to Blob Storage in
blocks (``stage_block`` + ``commit_block_list``); no file is ever held whole.

The returned :class:`SampleSummary` holds the counts the generator knows, so a run's report
can be checked exactly. Its definitions:

- an e-mail is *valid* when it is a plain ``local@domain.tld`` once surrounding spaces are
  stripped (case does not matter); *invalid* ones break that (no ``@``, two ``@``, a space
  inside, no dot in the domain); *missing* ones are empty;
- a *duplicate* is a row whose valid e-mail, stripped and lower-cased, equals an earlier
  row's; ``unique_valid_emails`` counts the distinct ones, so
  ``rows == unique_valid_emails + duplicate_emails + invalid_emails + missing_emails``;
- a phone is *valid* when libphonenumber accepts it with the row's Country as the region
  for local formats; empty phones are neither valid nor invalid.

Usage::

    python -m devtools.sample_export --connection-string "$CS" --container segments --rows 100000
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import zlib
from collections import deque
from collections.abc import Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

from devtools.sample_rows import COLUMNS, RowMaker

__all__ = ["COLUMNS", "SampleSummary", "main", "write_sample_export"]

BLOCK_SIZE = 4 * 1024 * 1024  # bytes staged per block
_IN_FLIGHT = 2  # blocks being uploaded while the next one is generated
_CHECK_EVERY = 512  # rows between buffer-size checks


@dataclass(frozen=True, slots=True)
class SampleSummary:
    """What was written, and the counts a correct run must report (module docstring)."""

    container: str
    folder: str
    segment: str
    prefix: str  # the snapshot folder, ending in "/"
    taken_at: datetime
    files: tuple[str, ...]
    header: bool
    rows: int
    bytes: int
    invalid_emails: int
    missing_emails: int
    duplicate_emails: int
    unique_valid_emails: int
    valid_phones: int
    invalid_phones: int
    multiline_rows: int  # rows with a newline inside a quoted field


# ---------------------------------------------------------------- writing


class _BlockWriter:
    """Stages one blob in blocks as text arrives, a few uploads in flight; never the whole file."""

    def __init__(self, container_client: ContainerClient, name: str, *, gzip_file: bool) -> None:
        self._blob = container_client.get_blob_client(name)
        self._ids: list[str] = []
        self._in_flight: deque[Future[None]] = deque()
        self._pool = ThreadPoolExecutor(max_workers=_IN_FLIGHT, thread_name_prefix="stage")
        # wbits=31: a gzip stream (header + trailer), as `gzip` writes it.
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip_file else None
        self.bytes = 0

    def write(self, text: str) -> None:
        """Stage ``text`` (UTF-8) as the next block."""
        self._stage(text.encode("utf-8"))

    def commit(self) -> None:
        """Flush, wait for the uploads and commit the block list."""
        if self._compressor is not None:
            self._put(self._compressor.flush())
        for future in self._in_flight:
            future.result()
        self._pool.shutdown()
        content_type = "application/gzip" if self._compressor is not None else "text/csv"
        self._blob.commit_block_list(
            self._ids, content_settings=ContentSettings(content_type=content_type)
        )

    def _stage(self, data: bytes) -> None:
        if self._compressor is not None:
            data = self._compressor.compress(data)
        self._put(data)

    def _put(self, data: bytes) -> None:
        if not data:
            return
        while len(self._in_flight) >= _IN_FLIGHT:
            self._in_flight.popleft().result()
        block_id = f"{len(self._ids):08d}"  # the SDK base64-encodes it; all ids same length
        self._ids.append(block_id)
        self._in_flight.append(self._pool.submit(self._blob.stage_block, block_id, data))
        self.bytes += len(data)


def _write_partition(
    container_client: ContainerClient,
    name: str,
    rows: range,
    maker: RowMaker,
    *,
    header: bool,
    gzip_file: bool,
) -> int:
    """Write rows ``rows`` to blob ``name``; returns the bytes stored."""
    out = _BlockWriter(container_client, name, gzip_file=gzip_file)
    buffer = io.StringIO()
    buffer.write("\ufeff")  # Customer Insights writes a UTF-8 byte-order mark
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header:
        writer.writerow([column for column, _ in COLUMNS])
    for count, i in enumerate(rows, 1):
        values = maker.row(i)
        if maker.needs_quoting:
            writer.writerow(values)
            maker.needs_quoting = False
        else:
            # No other value holds a comma, quote or newline: a plain join is valid CSV,
            # and ten times faster than csv.writer.
            buffer.write(",".join(values) + "\r\n")
        if count % _CHECK_EVERY == 0 and buffer.tell() >= BLOCK_SIZE:
            out.write(buffer.getvalue())
            buffer.seek(0)
            buffer.truncate()
    out.write(buffer.getvalue())
    out.commit()
    return out.bytes


def _write_model(
    container_client: ContainerClient,
    folder: str,
    segment: str,
    files: Sequence[str],
    *,
    header: bool,
    taken_at: datetime,
) -> None:
    """Write (or update) model.json with the segment's entity and its partitions."""
    path = f"{folder}/model.json"
    try:
        model = json.loads(container_client.download_blob(path).readall())
    except ResourceNotFoundError:
        model = {"name": "CustomerInsights", "version": "1.0", "entities": []}
    base = (
        f"https://{container_client.account_name}.blob.core.windows.net/"
        f"{container_client.container_name}/"
    )
    settings = {
        "$type": "CsvFormatSettings",
        "columnHeaders": header,
        "delimiter": ",",
        "quoteStyle": "QuoteStyle.Csv",
        "csvStyle": "CsvStyle.QuoteAlways",
        "encoding": "UTF-8",
    }
    entity = {
        "$type": "LocalEntity",
        "name": segment,
        "description": f"Segment {segment} exported by Customer Insights",
        "attributes": [{"name": n, "dataType": t} for n, t in COLUMNS],
        "partitions": [
            {
                "name": name.rsplit("/", 1)[1].split(".")[0],
                "refreshTime": _iso(taken_at),
                "location": base + quote(name),
                "fileFormatSettings": settings,
            }
            for name in files
        ],
    }
    others = [e for e in model.get("entities", []) if e.get("name") != segment]
    model["entities"] = [*others, entity]
    model["modifiedTime"] = _iso(taken_at)
    container_client.upload_blob(path, json.dumps(model, indent=2).encode(), overwrite=True)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def write_sample_export(
    container_client: ContainerClient,
    *,
    folder: str,
    segment: str,
    rows: int,
    partitions: int = 1,
    header: bool = False,
    seed: int = 7,
    taken_at: datetime | None = None,
    dirty: bool = True,
    phone_share: float = 0.3,
    gzip_files: bool | Collection[int] = False,
) -> SampleSummary:
    """Write model.json and ``partitions`` CSV files holding ``rows`` rows in all.

    Deterministic for a ``seed`` (and ``taken_at``, which names the snapshot folder; default
    now). ``dirty`` adds the invalid, missing and duplicate e-mails, invalid phones, quoted
    cities and empty values described in the module docstring; ``phone_share`` is the share
    of rows with a valid phone. ``header`` writes a header row (and says so in model.json);
    ``gzip_files`` writes ``.csv.gz`` (True: every partition; a collection: the partitions
    of those 0-based indexes).
    """
    if rows < 0 or partitions < 1:
        raise ValueError("rows must be >= 0 and partitions >= 1")
    folder = folder.strip("/")
    taken_at = (taken_at or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
    prefix = f"{folder}/{segment}/{taken_at:%Y/%m/%d/%H%M}/"
    maker = RowMaker(seed, dirty=dirty, phone_share=phone_share)
    files: list[str] = []
    stored = 0
    for p in range(partitions):
        zipped = p in gzip_files if isinstance(gzip_files, Collection) else gzip_files
        name = f"{prefix}{segment}_{p + 1}{'.csv.gz' if zipped else '.csv'}"
        span = range(rows * p // partitions, rows * (p + 1) // partitions)
        stored += _write_partition(
            container_client, name, span, maker, header=header, gzip_file=zipped
        )
        files.append(name)
    _write_model(container_client, folder, segment, files, header=header, taken_at=taken_at)
    t = maker.tally
    return SampleSummary(
        container=container_client.container_name,
        folder=folder,
        segment=segment,
        prefix=prefix,
        taken_at=taken_at,
        files=tuple(files),
        header=header,
        rows=rows,
        bytes=stored,
        invalid_emails=t.invalid_emails,
        missing_emails=t.missing_emails,
        duplicate_emails=t.duplicate_emails,
        unique_valid_emails=t.unique_valid_emails,
        valid_phones=t.valid_phones,
        invalid_phones=t.invalid_phones,
        multiline_rows=t.multiline_rows,
    )


# ---------------------------------------------------------------- command line


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.sample_export", description=__doc__)
    parser.add_argument(
        "--connection-string",
        default=os.environ.get("AZURE_STORAGE_CONNECTION_STRING"),
        help="storage connection string (default: $AZURE_STORAGE_CONNECTION_STRING)",
    )
    parser.add_argument("--container", required=True, help="created if missing")
    parser.add_argument("--folder", default="CustomerInsights_00000000-sample/klaviyo")
    parser.add_argument("--segment", default="NewsletterSubscribers")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--header", action="store_true", help="write a header row")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clean", action="store_true", help="no invalid or duplicate values")
    parser.add_argument("--phone-share", type=float, default=0.3)
    parser.add_argument("--gzip", action="store_true", help="write .csv.gz files")
    args = parser.parse_args(argv)
    if not args.connection_string:
        parser.error("--connection-string or AZURE_STORAGE_CONNECTION_STRING is required")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Write a sample export and print its summary as JSON."""
    args = _arguments(argv)
    service = BlobServiceClient.from_connection_string(args.connection_string)
    container = service.get_container_client(args.container)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    summary = write_sample_export(
        container,
        folder=args.folder,
        segment=args.segment,
        rows=args.rows,
        partitions=args.partitions,
        header=args.header,
        seed=args.seed,
        dirty=not args.clean,
        phone_share=args.phone_share,
        gzip_files=args.gzip,
    )
    json.dump(asdict(summary), sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
