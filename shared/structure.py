"""What every partition of a snapshot must agree on, checked before anything is sent.

A run reads partitions one after the other; a later partition whose header differs, or
whose records have another number of fields than the columns, would otherwise fail the
run after the first jobs were sent. So before the first job, :func:`check_partitions`
reads the head of every partition (one small ranged GET each) and compares its header, or
without one the field counts of its first records, with the columns. A structural problem
fails the run there, naming the file, line and column positions.

Cells read from a data file are never quoted in these messages: when a file has no header
row although the model says it has (or the other way round), the "header" is a row of
data, e-mail addresses and phone numbers included. Only names from the model are shown.
"""

from __future__ import annotations

import codecs
import csv
import io
import zlib
from collections.abc import Sequence
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.cdm import CsvFormat
from shared.errors import InputError

__all__ = ["HEAD_BYTES", "check_partitions", "header_difference"]

HEAD_BYTES = 256 * 1024  # read of each partition to check its structure
_SAMPLE = 20  # records looked at after the header
_SHOWN = 5  # positions listed in a message


def header_difference(
    expected: Sequence[str], found: Sequence[str], *, names: Sequence[str] = ()
) -> str:
    """Where ``found`` differs from ``expected``, by count and 1-based column positions.

    ``names`` (the model's attribute names, safe to show) name the expected columns; the
    cells themselves are never shown.
    """
    if len(found) != len(expected):
        return f"{len(found)} columns where {len(expected)} were expected"
    differ = [i for i, (a, b) in enumerate(zip(expected, found, strict=True)) if a != b]
    shown = ", ".join(_position(i, names) for i in differ[:_SHOWN])
    more = f" and {len(differ) - _SHOWN} more" if len(differ) > _SHOWN else ""
    if len(differ) == 1:
        return f"column {shown} differs"
    return f"columns {shown}{more} differ"


def _position(index: int, names: Sequence[str]) -> str:
    if index < len(names):
        return f"{index + 1} ({names[index]!r} in the model)"
    return str(index + 1)


def check_partitions(
    client: Any,
    files: Sequence[str],
    sizes: Sequence[int],
    etags: Sequence[str],
    formats: Sequence[CsvFormat],
    codec_names: Sequence[str],
    columns: Sequence[str],
    *,
    reference: str,
    model_names: Sequence[str] = (),
) -> None:
    """Raise InputError for the first partition whose header differs from ``columns`` or
    whose first records all have another field count. ``reference`` names where the
    columns come from (the first file's header, or the model)."""
    for index, name in enumerate(files):
        fmt = formats[index]
        size = sizes[index] if index < len(sizes) else None
        etag = etags[index] if index < len(etags) else None
        text = _head(client, name, size, etag, codec_names[index])
        records = _records(text, fmt)
        if fmt.header and records:
            line, header = records[0]
            if tuple(header) != tuple(columns):
                difference = header_difference(columns, header, names=model_names)
                raise InputError(
                    f"header differs from {reference}: {difference}", file=name, line=line
                )
            records = records[1:]
        if records and not any(len(values) == len(columns) for _, values in records):
            counts = sorted({len(values) for _, values in records})
            raise InputError(
                f"its first {len(records)} records have {_counts(counts)} fields where the "
                f"segment has {len(columns)} columns",
                file=name,
                line=records[0][0],
            )


def _counts(counts: list[int]) -> str:
    return " or ".join(str(c) for c in counts)


def _head(client: Any, name: str, size: int | None, etag: str | None, codec: str) -> str:
    """The first bytes of a partition as text (gunzipped, decoded, no BOM), cut after the
    last line end so that no record is cut short."""
    length = HEAD_BYTES if size is None else min(size, HEAD_BYTES)
    if length == 0:
        return ""
    conditions: dict[str, Any] = {}
    if etag:
        conditions = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
    try:
        data = client.download_blob(name, offset=0, length=length, **conditions).readall()
    except ResourceNotFoundError as exc:
        raise InputError("data file disappeared while being read", file=name) from exc
    except ResourceModifiedError as exc:
        raise InputError("data file changed after the snapshot was listed", file=name) from exc
    if name.lower().endswith(".gz"):
        try:
            data = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(data, 4 * HEAD_BYTES)
        except zlib.error as exc:
            raise InputError(f"not a valid gzip file: {exc}", file=name) from exc
    # A byte that does not decode is a damaged row, not a structural problem: the field
    # counts are what matter here.
    text = codecs.getincrementaldecoder(codec)("replace").decode(data, False)
    text = text.removeprefix("\ufeff")
    whole = length == size and not name.lower().endswith(".gz")
    if not whole:
        end = max(text.rfind("\n"), text.rfind("\r"))
        text = text[: end + 1] if end >= 0 else ""
    return text


def _records(text: str, fmt: CsvFormat) -> list[tuple[int, list[str]]]:
    """The first records of ``text`` (blank lines skipped) with the line each starts on."""
    quoting = csv.QUOTE_NONE if fmt.quote_style == "none" else csv.QUOTE_MINIMAL
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=fmt.delimiter,
        quotechar='"',
        doublequote=True,
        quoting=quoting,
        strict=False,
    )
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for values in reader:
            if values:
                records.append((start, values))
                if len(records) > _SAMPLE:
                    break
            start = reader.line_num + 1
    except csv.Error:
        pass  # a record too large for csv.reader: the sample so far decides
    return records
