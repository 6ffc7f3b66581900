"""ReadAhead: the reader's thread keeps order, hands on its errors, and stops when closed."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from shared.readahead import ReadAhead


def test_items_come_out_in_order_and_end() -> None:
    with ReadAhead(iter(range(1000)), depth=2) as items:
        assert list(items) == list(range(1000))
        assert list(items) == []  # stays exhausted


def test_an_error_is_raised_where_its_item_would_have_come() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("line 3 of part-00001.csv")

    items = ReadAhead(source())
    assert next(items) == 1
    assert next(items) == 2
    with pytest.raises(ValueError, match="line 3"):
        next(items)
    with pytest.raises(StopIteration):
        next(items)


def test_the_source_runs_in_another_thread_at_most_depth_ahead() -> None:
    produced: list[int] = []
    threads: set[str] = set()

    def source() -> Iterator[int]:
        for i in range(100):
            threads.add(threading.current_thread().name)
            produced.append(i)
            yield i

    items = ReadAhead(source(), depth=1, name="block-reader")
    assert next(items) == 0
    # The thread may have made item 1 (queued) and item 2 (waiting to be queued), no more.
    items.close()
    assert threads == {"block-reader"}
    assert len(produced) <= 3


def test_close_closes_the_source_in_its_thread() -> None:
    closed: list[str] = []

    def source() -> Iterator[int]:
        try:
            yield from range(10**9)
        finally:
            closed.append(threading.current_thread().name)

    items = ReadAhead(source(), name="block-reader")
    assert next(items) == 0
    items.close()
    items.close()  # idempotent
    assert closed == ["block-reader"]
    with pytest.raises(StopIteration):
        next(items)
