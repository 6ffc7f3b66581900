import numpy as np
import pytest

from shared import chunked
from shared.chunked import ChunkedArray, ChunkedStrings
from shared.engine import pl


def test_an_array_appended_across_chunks_reads_back_in_order():
    column = ChunkedArray(np.uint64, chunk_bytes=64)  # 8 values a chunk
    values = np.arange(1000, dtype=np.uint64)
    for start in range(0, 1000, 37):
        column.append(values[start : start + 37])
    assert len(column) == 1000
    assert np.array_equal(column.to_array(), values)
    assert column.nbytes == 8 * 8 * 125  # whole chunks, nothing per append
    column.clear()
    assert len(column) == 0 and column.to_array().size == 0


def test_strings_read_back_whole_across_chunk_boundaries_in_any_order():
    store = ChunkedStrings(chunk_bytes=100)  # strings of 10-60 bytes: many boundaries
    expected: list[str] = []
    for block in range(60):
        strings = [f"{block}.é{i}@ex.com" * (1 + i % 3) for i in range(block % 7)]
        expected += strings
        store.append(pl.Series(strings, dtype=pl.String))
    order = np.random.default_rng(3).permutation(len(expected))
    drained = store.drain_sorted(order).to_series()
    assert drained.dtype == pl.String and drained.name == "email"
    assert drained.to_list() == [expected[i] for i in order]
    assert len(store) == 0 and store.nbytes == 0  # the chunks are freed
    assert store.drain_sorted().to_series().to_list() == []


def test_strings_default_to_input_order_and_refuse_what_a_length_cannot_hold():
    store = ChunkedStrings()
    store.append(pl.Series(["b@x.io", "a@x.io"]))
    store.append(pl.Series([], dtype=pl.String))
    assert store.drain_sorted().to_series().to_list() == ["b@x.io", "a@x.io"]
    with pytest.raises(ValueError, match="65,535"):
        store.append(pl.Series(["x" * 70_000]))
    with pytest.raises(ValueError, match="no nulls"):
        store.append(pl.Series(["a@x.io", None]))
    assert len(store) == 0  # nothing half-appended


def test_an_array_is_placed_a_chunk_at_a_time_leaving_out_the_unplaced():
    column = ChunkedArray(np.int64, chunk_bytes=80, spill=True)  # 10 values a chunk
    values = np.arange(100, 135, dtype=np.int64)
    column.append(values)
    dest = np.full(35, -1, np.int32)
    keep = np.random.default_rng(2).permutation(35)[:20]
    dest[keep] = np.arange(20)
    assert np.array_equal(column.placed(dest, 20), values[keep])
    everyone = np.random.default_rng(4).permutation(35).astype(np.int32)
    expected = np.empty(35, np.int64)
    expected[everyone] = values
    assert np.array_equal(column.placed(everyone, 35), expected)


def test_strings_drained_to_places_leave_out_the_unplaced_and_take_each_once():
    store = ChunkedStrings(chunk_bytes=100, spill=True)
    expected = [f"{i}.x@ex.com" for i in range(50)]
    for start in range(0, 50, 9):
        store.append(pl.Series(expected[start : start + 9]))
    dest = np.full(50, -1, np.int32)
    keep = np.random.default_rng(8).permutation(50)[:30]
    dest[keep] = np.arange(30)
    drained = store.drain_to(dest, 30, "email").to_series().to_list()
    assert drained == [expected[i] for i in keep]
    assert len(store) == 0
    store.append(pl.Series(expected[:3]))
    with pytest.raises(ValueError, match="at most once"):
        store.drain_sorted(np.array([2, 0, 2]))


def test_spilled_chunks_leave_memory_and_read_back_the_same():
    column = ChunkedArray(np.int64, chunk_bytes=80, spill=True)  # 10 values a chunk
    values = np.arange(-500, 500, dtype=np.int64)
    for start in range(0, 1000, 33):
        column.append(values[start : start + 33])
    assert column.nbytes == 80  # only the chunk being filled is held
    assert np.array_equal(column.to_array(), values)
    assert np.array_equal(column.to_array(), values)  # reading back does not consume

    store = ChunkedStrings(chunk_bytes=64, spill=True)
    expected = [f"p{i}@ex.ample" for i in range(300)]
    for start in range(0, 300, 7):
        store.append(pl.Series(expected[start : start + 7]))
    assert store.nbytes == 64 + (1 << 19)  # one chunk of bytes, one of lengths (512 KB)
    assert store.drain_sorted(np.arange(299, -1, -1)).to_series().to_list() == expected[::-1]


@pytest.mark.parametrize("chunk_bytes", [700, 1 << 12, 1 << 21])
def test_strings_of_every_length_read_back_in_any_order(chunk_bytes):
    # Short strings are gathered as fixed-width rows, long ones (over 64 bytes) apart,
    # and the last strings of a chunk from a padded copy of its end: all come back whole.
    rng = np.random.default_rng(7)
    sizes = np.concatenate([rng.integers(1, 60, 2000), [63, 64, 65, 66, 128, 255, 299]])
    rng.shuffle(sizes)
    expected = [f"{i}:" + "é" * int(n // 2) + "x" * int(n % 2) for i, n in enumerate(sizes)]
    store = ChunkedStrings(chunk_bytes=chunk_bytes, spill=chunk_bytes > 1000)
    for start in range(0, len(expected), 97):
        store.append(pl.Series(expected[start : start + 97]))
    order = rng.permutation(len(expected))
    assert store.drain_sorted(order).to_series().to_list() == [expected[i] for i in order]


def test_more_strings_than_one_gathering_pass_come_back_in_order():
    store = ChunkedStrings(spill=True)
    expected = [f"person.{i}@example.com" for i in range(300_000)]  # > 2 passes of 131,072
    for start in range(0, len(expected), 10_000):
        store.append(pl.Series(expected[start : start + 10_000]))
    order = np.random.default_rng(1).permutation(len(expected))
    assert store.drain_sorted(order).to_series().to_list() == [expected[i] for i in order]


def test_drained_strings_are_on_disk_twice_at_most(monkeypatch):
    # Pass two (a part put in order) starts only once the chunks' own file is closed.
    store = ChunkedStrings(chunk_bytes=1 << 12, spill=True)
    for start in range(0, 2_000, 100):
        store.append(pl.Series([f"p{i}@x.io" for i in range(start, start + 100)]))
    assert store._spill is not None and store._spill._file is not None
    open_then = []
    real = chunked._part_in_order
    monkeypatch.setattr(
        chunked,
        "_part_in_order",
        lambda runs, pieces: open_then.append(store._spill._file) or real(runs, pieces),
    )
    drained = store.drain_sorted(np.arange(1_999, -1, -1))
    assert open_then == [None]  # one part, made with the chunks' file gone
    assert drained.to_series().to_list() == [f"p{i}@x.io" for i in range(1_999, -1, -1)]


def test_a_failed_drain_leaves_no_file_open(monkeypatch):
    store = ChunkedStrings(chunk_bytes=1 << 12, spill=True)
    store.append(pl.Series([f"p{i}@x.io" for i in range(1_000)]))
    made = []
    real_spill = chunked._Spill

    class Tracked(real_spill):
        def __init__(self):
            super().__init__()
            made.append(self)

    monkeypatch.setattr(chunked, "_Spill", Tracked)
    monkeypatch.setattr(chunked, "_PART", 100)  # ten parts: one is written, then a failure
    real_part = chunked._part_in_order
    calls = []

    def broken(runs, pieces):
        calls.append(1)
        if len(calls) > 1:
            raise OSError("disk full")
        return real_part(runs, pieces)

    monkeypatch.setattr(chunked, "_part_in_order", broken)
    with pytest.raises(OSError, match="disk full"):
        store.drain_sorted()
    assert len(made) == 2 and all(spill._file is None for spill in made)  # runs, output
    assert store._spill is not None and store._spill._file is None
    assert len(store) == 0


@pytest.mark.parametrize("spill", [False, True])
def test_sorted_strings_read_back_a_slice_at_a_time_in_order(spill):
    store = ChunkedStrings(chunk_bytes=1 << 16, spill=spill)
    expected = [f"person.{i}.é@example.com" for i in range(300_000)]  # > 2 parts of 131,072
    for start in range(0, len(expected), 10_000):
        store.append(pl.Series(expected[start : start + 10_000]))
    order = np.random.default_rng(5).permutation(len(expected))
    on_disk = store.drain_sorted(order, name="email")
    assert len(store) == 0 and store.nbytes == 0  # the store is freed: a file is left
    assert len(on_disk) == len(expected) and on_disk.nbytes == 2 * len(expected)
    slices = list(on_disk.slices(50_000))
    # Slices end where the parts do (131,072 strings each).
    assert [len(s) for s in slices] == [50_000, 50_000, 31_072] * 2 + [300_000 - 2 * 131_072]
    assert all(s.dtype == pl.String and s.name == "email" for s in slices)
    whole = on_disk.to_series()
    assert whole.to_list() == [expected[i] for i in order]
    assert pl.concat(list(on_disk.slices(7_000))).equals(whole)  # read again, same
    assert ChunkedStrings().drain_sorted().to_series().to_list() == []
