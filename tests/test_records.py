"""The record scan's flag for rows whose JSON needs no escapes (shared/records.py), and
the ByteSource the scan reads from.

The mapper writes the JSON of a ``plain`` row without escaping it, so a row flagged plain
must hold no backslash, no quote that is data and no control character (line ends inside
quotes included); flagging a row that needs none is only slower.
"""

from __future__ import annotations

import csv
import io
import random

import pytest

from shared import records
from shared.records import ByteSource, CsvDialect, scan_block


def _scan(data: bytes, *, quoting: bool = True):
    step = scan_block(
        data, dialect=CsvDialect(quoting=quoting), first_line=1, eof=True, target=len(data) + 1
    )
    assert step.scan is not None and not step.exact
    return step.scan


def test_rows_flagged_plain_are_those_without_escapes():
    data = (
        b"a,b,c\r\n"  # plain
        b'a,"x, y",c\r\n'  # quoted comma: still plain
        b'a,"say ""hi""",c\r\n'  # a quote in the value
        b'a,"multi\nline",c\r\n'  # a line end in the value
        b"a,back\\slash,c\r\n"
        b"a,tab\there,c\r\n"
        b'a,"",c\r\n'  # an empty quoted value: flagged, to be safe
        b"\r\n"  # a blank line is no record
        b"a,b,c\r"  # a lone CR ends this one
        b"x,y,z"
    )
    scan = _scan(data)
    records = [int(s) for s, n in zip(scan.starts, scan.fields, strict=True) if n]
    flags = [bool(p) for p, n in zip(scan.plain, scan.fields, strict=True) if n]
    assert len(records) == 9
    assert flags == [True, True, False, False, False, False, False, True, True]


def test_without_quoting_a_quote_is_data():
    scan = _scan(b'a,say "hi",c\nd,e,f\n', quoting=False)
    assert scan.plain.tolist() == [False, True]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_row_that_needs_an_escape_is_flagged_plain(seed):
    rng = random.Random(seed)
    pieces = ["a", "b c", "x,y", 'q"uote', "new\nline", "cr\r\nlf", "tab\t", "\\", "é", "", "\x01"]
    rows = [[rng.choice(pieces) for _ in range(4)] for _ in range(400)]
    text = io.StringIO(newline="")
    csv.writer(text, lineterminator="\r\n").writerows(rows)
    scan = _scan(text.getvalue().encode())
    assert scan.starts.size == len(rows)
    for row, plain in zip(rows, scan.plain.tolist(), strict=True):
        needs = any(c in '"\\' or ord(c) < 0x20 for value in row for c in value)
        assert not (plain and needs), row
    assert 0 < sum(scan.plain.tolist()) < len(rows)


# ---------------------------------------------------------------- ByteSource


def test_a_large_chunk_is_taken_a_piece_at_a_time(monkeypatch):
    monkeypatch.setattr(records, "PIECE_BYTES", 4)
    chunks = [b"0123456789", b"", b"ab", b"", b""]
    source = ByteSource(iter(chunks))
    seen = []
    while source.more():
        seen.append(bytes(source.buffer))  # a view lasts only until the next more()
    # Pieces of at most 4 bytes, never across a chunk's end; empty chunks are skipped.
    assert seen == [b"0123", b"01234567", b"0123456789", b"0123456789ab"]
    assert source.eof and not source.more()


def test_fill_consume_and_done_over_pieces(monkeypatch):
    monkeypatch.setattr(records, "PIECE_BYTES", 3)
    source = ByteSource(iter([b"abcdefgh", b"ij"]), line=5)
    source.fill(5)
    assert source.buffer == b"abcdef" and not source.eof
    source.consume(4, 6)
    assert (source.buffer, source.line) == (b"ef", 6)
    source.fill(100)
    assert source.buffer == b"efghij" and source.eof and not source.done
    source.consume(6, 7)
    assert source.done


def test_the_storage_is_kept_across_blocks_and_bytes_move_to_its_front(monkeypatch):
    monkeypatch.setattr(records, "PIECE_BYTES", 4)
    data = bytes(range(100))
    source = ByteSource(iter([data]))
    taken, storages = b"", []
    source.fill(6)
    while not source.done:
        taken += bytes(source.buffer[:3])
        source.consume(3, 1)
        source.fill(6)
        storages.append(source._data)
    assert taken == data
    # It grows to a block and a piece in the first rounds; from then on the bytes left
    # are moved to the front of the same array, never copied into a new one.
    assert len(storages) > 20 and all(s is storages[3] for s in storages[3:])


def test_storage_a_long_record_needed_is_not_kept(monkeypatch):
    monkeypatch.setattr(records, "PIECE_BYTES", 4)
    monkeypatch.setattr(records, "_KEEP_BYTES", 16)
    source = ByteSource(iter([bytes(100)]))
    source.fill(64)  # a record 64 bytes long, say
    assert source._data.size >= 64
    source.consume(64, 2)
    source.fill(4)
    source.fill(8)
    assert 8 <= source._data.size < 64 and bytes(source.buffer) == bytes(len(source))
