"""Storage clients for a configured connection (connection string or identity)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient, BlobServiceClient
from azure.storage.queue import QueueServiceClient

from shared.errors import SettingsError
from shared.settings import StorageConnection

__all__ = ["CappedRead", "blob_service", "queue_service", "read_capped"]


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
    """Read ``blob`` if it holds at most ``limit`` bytes, without downloading more than
    ``limit + 1`` of a larger one. ResourceNotFoundError when it does not exist."""
    try:
        download = blob.download_blob(offset=0, length=limit + 1)
    except HttpResponseError as exc:
        if exc.status_code != 416:
            raise
        # Storage answers a ranged GET of an empty blob with 416 (InvalidRange).
        properties = blob.get_blob_properties()
        return CappedRead(b"", properties.size, properties.etag, limit)
    size, etag = download.properties.size, download.properties.etag
    data = download.readall() if size <= limit else b""
    return CappedRead(data, size, etag, limit)
