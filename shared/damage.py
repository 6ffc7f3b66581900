"""Damaged records: what becomes a rejected record, with a reason, instead of a failed run.

The block reader hands each block's record table here: a record with bytes that are not
valid in the file's encoding (``undecodable_row``), or with a field over csv.reader's
131,072-character limit (``field_too_large``), is rejected and the block reads on. A record
too large to hold is passed over streamed (``exactrecords.skip_record``): rejected whole, or
line by line when the file ends inside it (``unterminated_quote``). Rejects are
``(line, code, detail)``; details name fields by position and never quote values.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass

import numpy as np

from shared.exactrecords import (
    FIELD_LIMIT,
    SURROGATES,
    skip_record,
    undecodable_detail,
    unterminated_detail,
)
from shared.records import ByteSource, CsvDialect, Scan, byte_positions

__all__ = ["Damage", "damaged_records", "has_controls", "is_utf8", "skipped"]

_SPACE = 0x20


@dataclass(frozen=True, slots=True)
class Damage:
    """Per record of a scan: damaged or not; and the rejects, ``(line, code, detail)``."""

    mask: np.ndarray
    rejects: list[tuple[int, str, str]]


def is_utf8(data: bytes) -> bool:
    """Whether ``data`` decodes as strict UTF-8, without decoding all of it.

    An ASCII byte is always a character of its own and never part of a multi-byte
    sequence, so ``data`` is valid exactly when each run of bytes >= 0x80 is valid on its
    own: those runs, an ASCII space between each two, are decoded instead. Decoding a
    whole block cost 8 ms (its str widened by the first non-Latin-1 character), this a
    fraction of that, and with the GIL held either way.
    """
    a = np.frombuffer(data, dtype=np.uint8)
    high = byte_positions(a, np.greater_equal, 0x80)
    if not high.size:
        return True
    # Run k's bytes are shifted right by k: one space before every run after the first.
    gap = np.concatenate(([False], np.diff(high) > 1))
    out = np.full(high.size + int(gap.sum()), _SPACE, dtype=np.uint8)
    out[np.arange(high.size) + np.cumsum(gap)] = a[high]
    try:
        out.tobytes().decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def damaged_records(scan: Scan, dialect: CsvDialect, encoding: str) -> Damage:
    """Records with bytes that are not UTF-8 (``encoding`` names what the file declared),
    or with a field over csv's 131,072-character limit."""
    mask = np.zeros(scan.starts.size, dtype=bool)
    rejects: list[tuple[int, str, str]] = []
    clean = is_utf8(scan.data)
    # Only a record longer than the limit in bytes can hold a field longer in characters.
    long = np.flatnonzero(scan.ends - scan.starts > FIELD_LIMIT)
    suspects = range(scan.starts.size) if not clean else long.tolist()
    for i in suspects:
        raw = scan.data[int(scan.starts[i]) : int(scan.ends[i])]
        text = raw.decode("utf-8", "surrogateescape")
        try:
            values = next(csv.reader([text], **dialect.reader_options()), [])
        except csv.Error:
            detail = f"a field longer than {FIELD_LIMIT:,} characters"
            mask[i] = True
            rejects.append((int(scan.lines[i]), "field_too_large", detail))
            continue
        if not clean:
            bad = next((k for k, v in enumerate(values) if SURROGATES.search(v)), None)
            if bad is not None:
                mask[i] = True
                detail = undecodable_detail(bad, encoding)
                rejects.append((int(scan.lines[i]), "undecodable_row", detail))
    return Damage(mask, rejects)


def skipped(
    source: ByteSource, dialect: CsvDialect, *, larger_than: int | None = None
) -> list[tuple[int, str, str]]:
    """Pass over the record the source starts at (too large to hold): one
    ``field_too_large`` reject, or ``unterminated_quote`` for each of its lines when the
    file ends inside it. ``larger_than``: it was passed over for not ending within that
    many bytes."""
    first, lines, open_ = skip_record(source, quoting=dialect.quoting)
    if open_:
        detail = unterminated_detail(first)
        return [(line, "unterminated_quote", detail) for line in lines]
    detail = f"a field longer than {FIELD_LIMIT:,} characters"
    if larger_than is not None:
        mb = larger_than >= 1 << 20
        size = f"{larger_than >> 20} MB" if mb else f"{larger_than >> 10} KB"
        detail = f"a record over {size}: {detail}, or a quote closed much later"
    return [(first, "field_too_large", detail)]


_C1 = re.compile(b"\xc2[\x80-\x9f]")


def has_controls(scan: Scan) -> bool:
    """Whether the block holds a control character other than tab, CR and LF (C0, found
    by the record scan; DEL; or C1, in UTF-8 C2 80-9F): the mapper's clean-up is skipped
    for blocks without. memchr-fast on clean data."""
    data = scan.data
    if scan.c0_controls or data.find(b"\x7f") >= 0:
        return True
    return data.find(b"\xc2") >= 0 and _C1.search(data) is not None
