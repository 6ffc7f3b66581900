"""Blob leases that keep runs apart, held and renewed for the length of a run.

- ``RunLock`` (``locks/<export>``): one run per export at a time.
- ``ConnectionLock`` (``connection-locks/<api_key_secret>``): one run per Klaviyo connection
  at a time. Klaviyo's rate limits are per account, and Flex Consumption runs queued runs
  on separate instances, so two exports into one account would otherwise each spend the
  whole budget and meet in a storm of 429s.

A lease left by a crashed instance expires after ``duration`` seconds, and the next run can
then take it. The holder writes its run id and export into the blob's metadata (and clears
them before it lets go), so a run that finds a lease taken can say which run holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobLeaseClient, ContainerClient

from shared.errors import ExportError, RunConflictError

__all__ = ["BlobLock", "ConnectionBusyError", "ConnectionLock", "RunLock"]

logger = logging.getLogger(__name__)

_HOLDER_READS = 10  # a refused caller reads the holder's name up to this many times,
_HOLDER_READ_INTERVAL = 0.05  # this many seconds apart


class ConnectionBusyError(RunConflictError):
    """Another run holds the lease of the same Klaviyo connection (``connection``)."""

    def __init__(self, connection: str, run_id: str | None, export: str | None) -> None:
        # Not RunConflictError's message: this one names the connection, not this export.
        ExportError.__init__(
            self,
            f"Klaviyo connection {connection!r} is in use by run {run_id or 'unknown'} "
            f"of export {export or 'unknown'!r}",
        )
        self.connection = connection
        self.run_id = run_id
        self.export = export


class BlobLock:
    """A lease on one blob; use ``async with lock.hold(run_id, export):``."""

    def __init__(self, container: ContainerClient, blob: str, *, duration: int = 60) -> None:
        if not 15 <= duration <= 60:
            raise ValueError("blob leases last 15 to 60 seconds")
        self.duration = duration
        self.label = blob
        self.blob_name = blob
        self._blob = container.get_blob_client(blob)

    def busy_error(self, holder: dict[str, str]) -> RunConflictError:
        """What a refused ``acquire`` raises; ``holder`` is the holder's metadata."""
        return RunConflictError(self.label, holder.get("run_id"))

    def _ensure_blob(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._blob.upload_blob(b"", overwrite=False)

    def acquire(self, run_id: str, export: str = "") -> BlobLeaseClient:
        """Take the lease or raise ``busy_error`` naming the run that holds it."""
        self._ensure_blob()
        lease = BlobLeaseClient(self._blob)
        try:
            lease.acquire(lease_duration=self.duration)
        except HttpResponseError as exc:
            if exc.status_code != 409:
                raise
            raise self.busy_error(self._named_holder()) from exc
        # Record who holds it, so a refused caller can name the run in progress.
        holder = {"run_id": run_id, "export": export} if export else {"run_id": run_id}
        self._blob.set_blob_metadata(holder, lease=lease)
        return lease

    def holder(self) -> dict[str, str]:
        """The metadata the current holder wrote (empty while it has not yet)."""
        try:
            return dict(self._blob.get_blob_properties().metadata or {})
        except HttpResponseError:
            return {}

    def _named_holder(self) -> dict[str, str]:
        # Taking the lease and naming the holder are two requests, so a refusal can come
        # between them and find no name: read again for a moment (a retry, not a sync
        # point) before calling the holder unknown.
        for _ in range(_HOLDER_READS - 1):
            holder = self.holder()
            if holder.get("run_id"):
                return holder
            time.sleep(_HOLDER_READ_INTERVAL)
        return self.holder()

    def _release(self, lease: BlobLeaseClient) -> None:
        # Unnamed first: a refusal after this never names a run that has finished.
        with contextlib.suppress(HttpResponseError):
            self._blob.set_blob_metadata({}, lease=lease)
        lease.release()

    @contextlib.asynccontextmanager
    async def hold(self, run_id: str, export: str = "") -> AsyncIterator[BlobLeaseClient]:
        """Hold the lease while the body runs, renewing it at a third of its duration."""
        lease = await asyncio.to_thread(self.acquire, run_id, export)
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
                f"{self.label}: lost the lease; stopped so that no other instance runs "
                "beside this one (the next attempt resumes)"
            ) from lost[0]
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(HttpResponseError):
                await asyncio.to_thread(self._release, lease)

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
                logger.error("%s: lost the lease: %s", self.label, exc)
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


class RunLock(BlobLock):
    """The lease on ``locks/<export>``: one run of an export at a time."""

    def __init__(self, container: ContainerClient, export: str, *, duration: int = 60) -> None:
        super().__init__(container, f"locks/{export}", duration=duration)
        self.export = export
        self.label = f"export {export}"

    def busy_error(self, holder: dict[str, str]) -> RunConflictError:
        return RunConflictError(self.export, holder.get("run_id"))


class ConnectionLock(BlobLock):
    """The lease on ``connection-locks/<secret>``: one run per Klaviyo connection at a time.

    A connection is its Key Vault secret (``connection.api_key_secret``); Key Vault secret
    names are case-insensitive, so the blob name is lower-cased. (A separate prefix from
    ``locks/``, so that no export name can collide with it.)
    """

    def __init__(self, container: ContainerClient, secret: str, *, duration: int = 60) -> None:
        super().__init__(container, f"connection-locks/{secret.lower()}", duration=duration)
        self.connection = secret
        self.label = f"Klaviyo connection {secret}"

    def busy_error(self, holder: dict[str, str]) -> RunConflictError:
        return ConnectionBusyError(self.connection, holder.get("run_id"), holder.get("export"))
