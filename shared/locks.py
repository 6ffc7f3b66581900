"""One run per export at a time: a blob lease, held and renewed for the length of a run.

A lease left by a crashed instance expires after ``duration`` seconds, and the next run
of that export can then take it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobLeaseClient, ContainerClient

from shared.errors import ExportError, RunConflictError

__all__ = ["RunLock"]

logger = logging.getLogger(__name__)


class RunLock:
    """The lease on ``locks/<export>``; use ``async with lock.hold(run_id):``."""

    def __init__(self, container: ContainerClient, export: str, *, duration: int = 60) -> None:
        if not 15 <= duration <= 60:
            raise ValueError("blob leases last 15 to 60 seconds")
        self.export = export
        self.duration = duration
        self._blob = container.get_blob_client(f"locks/{export}")

    def _ensure_blob(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._blob.upload_blob(b"", overwrite=False)

    def acquire(self, run_id: str) -> BlobLeaseClient:
        """Take the lease or raise RunConflictError naming the run that holds it."""
        self._ensure_blob()
        lease = BlobLeaseClient(self._blob)
        try:
            lease.acquire(lease_duration=self.duration)
        except HttpResponseError as exc:
            if exc.status_code != 409:
                raise
            holder = (self._blob.get_blob_properties().metadata or {}).get("run_id")
            raise RunConflictError(self.export, holder) from exc
        # Record who holds it, so a refused caller can name the run in progress.
        self._blob.set_blob_metadata({"run_id": run_id}, lease=lease)
        return lease

    @contextlib.asynccontextmanager
    async def hold(self, run_id: str) -> AsyncIterator[BlobLeaseClient]:
        """Hold the lease while the body runs, renewing it at a third of its duration."""
        lease = await asyncio.to_thread(self.acquire, run_id)
        owner = asyncio.current_task()
        lost: list[BaseException] = []
        renewer = asyncio.create_task(self._renew(lease, owner, lost))
        try:
            yield lease
        except asyncio.CancelledError:
            if not lost or owner is None:
                raise
            owner.uncancel()
            raise ExportError(
                f"export {self.export}: lost the run lease; stopped so that no other "
                "instance runs beside this one (the next attempt resumes)"
            ) from lost[0]
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(HttpResponseError):
                await asyncio.to_thread(lease.release)

    async def _renew(
        self, lease: BlobLeaseClient, owner: asyncio.Task | None, lost: list[BaseException]
    ) -> None:
        while True:
            await asyncio.sleep(self.duration / 3)  # the renewal period, not a sync point
            try:
                await asyncio.to_thread(lease.renew)
            except HttpResponseError as exc:
                # The lease is gone (e.g. the process stalled past its expiry): stop the
                # run rather than run beside another instance.
                logger.error("export %s: lost the run lease: %s", self.export, exc)
                lost.append(exc)
                if owner is not None:
                    owner.cancel()
                return

    def is_held(self) -> bool:
        """Whether any instance holds the lease right now."""
        try:
            props = self._blob.get_blob_properties()
        except HttpResponseError:
            return False
        return props.lease.state == "leased"
