"""Storage clients for a configured connection (connection string or identity)."""

from __future__ import annotations

import base64
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient, ContentSettings
from azure.storage.queue import QueueServiceClient

from shared.errors import SettingsError
from shared.settings import StorageConnection

__all__ = ["CappedRead", "blob_service", "queue_service", "read_capped", "upload_in_blocks"]

UPLOAD_BLOCK = 1 << 20  # bytes per staged block
UPLOAD_THREADS = 3  # blocks staged at once


@lru_cache(maxsize=8)
def _credential(client_id: str | None) -> Any:
    # Imported lazily: azure-identity is only needed for identity-based connections.
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id)


def blob_service(connection: StorageConnection, **kwargs: Any) -> BlobServiceClient:
    """A BlobServiceClient for ``connection``; create once per process and reuse it."""
    if connection.connection_string:
        try:
            return BlobServiceClient.from_connection_string(connection.connection_string, **kwargs)
        except ValueError:  # its text says "malformed", not which setting (nor the value)
            raise SettingsError(
                connection.setting, "is not a valid storage connection string"
            ) from None
    return BlobServiceClient(
        connection.blob_service_uri, credential=_credential(connection.client_id), **kwargs
    )


def queue_service(connection: StorageConnection, **kwargs: Any) -> QueueServiceClient:
    """A QueueServiceClient for ``connection`` (the app's own storage)."""
    if connection.connection_string:
        return QueueServiceClient.from_connection_string(connection.connection_string, **kwargs)
    if not connection.queue_service_uri:
        raise ValueError(f"{connection.setting}__queueServiceUri is not set")
    return QueueServiceClient(
        connection.queue_service_uri, credential=_credential(connection.client_id), **kwargs
    )


@dataclass(frozen=True, slots=True)
class CappedRead:
    """A small blob read whole, unless it is over the limit (then ``data`` is empty)."""

    data: bytes
    size: int  # of the whole blob
    etag: str
    limit: int

    @property
    def too_large(self) -> bool:
        return self.size > self.limit


def read_capped(blob: BlobClient, limit: int) -> CappedRead:
    """Read ``blob`` if it holds at most ``limit`` bytes; a larger one is not downloaded
    (its size comes from a HEAD). ResourceNotFoundError when it does not exist."""
    head = blob.get_blob_properties()
    if head.size > limit or head.size == 0:
        return CappedRead(b"", head.size, head.etag, limit)
    try:
        # Ranged, in case the blob grew since the HEAD: never more than limit + 1 bytes.
        download = blob.download_blob(offset=0, length=limit + 1)
    except HttpResponseError as exc:
        if exc.status_code != 416:
            raise
        # Emptied since the HEAD: storage answers a ranged GET of an empty blob with 416.
        return CappedRead(b"", 0, head.etag, limit)
    properties = download.properties
    # properties.size is what this ranged GET returns; "bytes 0-N/<total>" has the blob's.
    total = (properties.content_range or "").rpartition("/")[2]
    size = int(total) if total.isdigit() else properties.size
    data = download.readall() if size <= limit else b""
    return CappedRead(data, size, properties.etag, limit)


def upload_in_blocks(
    blob: BlobClient, body: IO[bytes], content_settings: ContentSettings | None = None
) -> dict[str, Any]:
    """Upload ``body`` as a block blob, ``UPLOAD_THREADS`` blocks of ``UPLOAD_BLOCK`` bytes
    at a time (that many in memory); the blob changes only when the block list is
    committed, so readers see the whole file or the one before.

    Staged one after the other, each block is mostly a round trip: 24 blocks took 0.5 s
    on Azurite, at the end of a run (measured)."""
    blocks: list[BlobBlock] = []
    pending: deque[Future[Any]] = deque()
    with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="blob-upload") as pool:
        try:
            while chunk := body.read(UPLOAD_BLOCK):
                block = BlobBlock(base64.b64encode(f"{len(blocks):08d}".encode()).decode())
                pending.append(pool.submit(blob.stage_block, block.id, chunk, length=len(chunk)))
                blocks.append(block)
                if len(pending) >= UPLOAD_THREADS:
                    pending.popleft().result()  # raises what that stage_block raised
            while pending:
                pending.popleft().result()
        finally:
            for staged in pending:  # after a failure: the rest need not run
                staged.cancel()
    return blob.commit_block_list(blocks, content_settings=content_settings)
