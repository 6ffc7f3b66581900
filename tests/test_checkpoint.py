"""The checkpoint writer coalesces: it never queues one write per change behind a lock."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from shared.checkpoint import CheckpointWriter


class _BlockingStore:
    """Records what each write held; the first write waits until the test lets it go."""

    def __init__(self) -> None:
        self.release_first = threading.Event()
        self.first_started = threading.Event()
        self.saved: list[dict] = []

    def save(self, doc: dict) -> None:
        if not self.saved and not self.first_started.is_set():
            self.first_started.set()
            assert self.release_first.wait(timeout=10)
        self.saved.append({"jobs": dict(doc["jobs"])})


async def test_changes_during_a_write_are_stored_by_the_next_single_write():
    store = _BlockingStore()
    writer = CheckpointWriter({"jobs": {}}, store.save)

    writer.document["jobs"]["0"] = "job-0"
    first = asyncio.create_task(writer.changed())
    await asyncio.to_thread(store.first_started.wait, 10)
    waiters = []
    for i in range(1, 10):  # nine more jobs accepted while the first write is stuck
        writer.document["jobs"][str(i)] = f"job-{i}"
        waiters.append(asyncio.create_task(writer.changed()))
    store.release_first.set()
    await asyncio.gather(first, *waiters)

    assert writer.writes == 2  # the first, then one with the other nine: not ten
    assert store.saved[0] == {"jobs": {"0": "job-0"}}
    assert store.saved[1]["jobs"] == {str(i): f"job-{i}" for i in range(10)}


async def test_each_change_returns_only_after_a_write_that_holds_it():
    store = _BlockingStore()
    store.first_started.set()  # no blocking
    writer = CheckpointWriter({"jobs": {}}, store.save)
    for i in range(3):
        writer.document["jobs"][str(i)] = i
        await writer.changed()
        assert store.saved[-1]["jobs"] == {str(j): j for j in range(i + 1)}
    assert writer.writes == 3


async def test_a_failed_write_is_raised_to_every_waiter_and_later_changes():
    def save(doc: dict) -> None:
        raise RuntimeError("checkpoint changed by another instance")

    writer = CheckpointWriter({"jobs": {}}, save)
    results = await asyncio.gather(writer.changed(), writer.changed(), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    with pytest.raises(RuntimeError, match="another instance"):
        await writer.changed()
    assert writer.writes == 0


async def test_writes_start_at_least_the_interval_apart_and_take_every_change_between():
    starts: list[float] = []
    saved: list[dict] = []

    def save(doc: dict) -> None:
        starts.append(time.monotonic())
        saved.append(dict(doc["jobs"]))

    writer = CheckpointWriter({"jobs": {}}, save, min_interval=0.3)
    writer.document["jobs"]["0"] = 0
    # The writer counts the interval from when it starts a write, which is before its
    # thread runs save(): time the first start from here, not from inside save(), or a
    # thread that starts late (a busy machine) shortens the interval seen.
    first_started = time.monotonic()
    await writer.changed()  # the first write does not wait
    waiters = []
    for i in range(1, 6):  # five jobs accepted within the interval
        writer.document["jobs"][str(i)] = i
        waiters.append(asyncio.create_task(writer.changed()))
    await asyncio.gather(*waiters)

    assert writer.writes == 2
    assert starts[1] - first_started >= 0.3
    assert saved[1] == {str(i): i for i in range(6)}
