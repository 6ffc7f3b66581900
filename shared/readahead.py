"""An iterator run in its own thread, a bounded number of items ahead of its consumer.

The reading stage is a pipeline of two halves that each spend most of their time in
native code that releases the GIL: the reader (record scan in numpy, the CSV parse in
polars) and the mapper (polars expressions, numpy). Run one after the other in one thread
they leave the second core idle; with the reader one block ahead in a thread of its own,
the two overlap. Memory grows by ``depth`` blocks, not with the snapshot.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["ReadAhead"]

T = TypeVar("T")

_ITEM, _END, _ERROR = range(3)


class ReadAhead(Generic[T]):
    """Iterates ``source`` in a thread, at most ``depth`` items ahead.

    Items come out in order; an exception raised by ``source`` is raised here, where the
    item it stopped would have come. :meth:`close` (or leaving a ``with`` block) stops
    the thread after the item it is producing and closes ``source`` in that thread.
    """

    def __init__(self, source: Iterator[T], *, depth: int = 1, name: str = "read-ahead") -> None:
        self._queue: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(
            target=self._produce, args=(source,), name=name, daemon=True
        )
        self._thread.start()

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value  # type: ignore[return-value]
        self._finished = True
        self._thread.join()
        if kind == _ERROR:
            assert isinstance(value, BaseException)
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop producing; idempotent. Waits for the item being produced, not the rest."""
        self._finished = True
        self._stop.set()
        self._drain()  # unblocks a put the thread may be waiting in
        self._thread.join()
        self._drain()  # what it put after the first drain: let it be freed now

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the producing thread ---------------------------------------------------------

    def _produce(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not self._offer(_ITEM, item):
                    return
            self._offer(_END, None)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._offer(_ERROR, exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def _offer(self, kind: int, value: object) -> bool:
        # The stop check before a blocking put cannot deadlock: close() sets the flag
        # before it drains, so a put that slips past the check finds room or is drained.
        if self._stop.is_set():
            return False
        self._queue.put((kind, value))
        return not self._stop.is_set()

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
