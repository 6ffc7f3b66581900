"""A refused run names the run that holds the lease, also in the moment before it is named."""

from __future__ import annotations

import pytest
from azure.storage.blob import BlobLeaseClient

from shared import locks
from shared.errors import RunConflictError
from shared.locks import RunLock


@pytest.fixture(autouse=True)
def _no_wait_between_reads(monkeypatch):
    monkeypatch.setattr(locks, "_HOLDER_READ_INTERVAL", 0.0)


def _taken_unnamed(lock: RunLock) -> BlobLeaseClient:
    """The lease taken as ``acquire`` takes it, before the holder has named itself."""
    lock._ensure_blob()
    lease = BlobLeaseClient(lock._blob)
    lease.acquire(lease_duration=15)
    return lease


def test_a_refusal_before_the_holder_names_itself_reads_again(container, monkeypatch):
    lock = RunLock(container, "vip")
    lease = _taken_unnamed(lock)
    real_holder, reads = lock.holder, []

    def holder_named_after_first_read() -> dict[str, str]:
        reads.append(found := real_holder())
        if len(reads) == 1:  # the winner names itself just after this read
            lock._blob.set_blob_metadata({"run_id": "run-1", "export": "vip"}, lease=lease)
        return found

    monkeypatch.setattr(lock, "holder", holder_named_after_first_read)
    with pytest.raises(RunConflictError) as refused:
        lock.acquire("run-2", "vip")
    assert refused.value.run_id == "run-1"
    assert reads[0] == {} and len(reads) == 2
    lease.release()


def test_a_holder_that_never_names_itself_is_unknown_after_a_few_reads(container, monkeypatch):
    lock = RunLock(container, "vip")
    lease = _taken_unnamed(lock)
    reads = []
    real_holder = lock.holder
    monkeypatch.setattr(lock, "holder", lambda: reads.append(1) or real_holder())
    with pytest.raises(RunConflictError) as refused:
        lock.acquire("run-2", "vip")
    assert refused.value.run_id is None
    assert len(reads) == locks._HOLDER_READS
    lease.release()


async def test_a_released_lease_names_no_one(container):
    lock = RunLock(container, "vip")
    async with lock.hold("run-1", "vip"):
        assert lock.holder() == {"run_id": "run-1", "export": "vip"}
        with pytest.raises(RunConflictError) as refused:
            RunLock(container, "vip").acquire("run-2", "vip")
        assert refused.value.run_id == "run-1"
    assert lock.holder() == {}
    assert not lock.is_held()
