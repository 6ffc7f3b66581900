"""Storage clients for a configured connection (connection string or identity)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from shared.settings import StorageConnection

__all__ = ["blob_service", "queue_service"]


@lru_cache(maxsize=8)
def _credential(client_id: str | None) -> Any:
    # Imported lazily: azure-identity is only needed for identity-based connections.
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id)


def blob_service(connection: StorageConnection, **kwargs: Any) -> BlobServiceClient:
    """A BlobServiceClient for ``connection``; create once per process and reuse it."""
    if connection.connection_string:
        return BlobServiceClient.from_connection_string(connection.connection_string, **kwargs)
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
