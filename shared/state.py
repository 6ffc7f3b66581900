"""The app's own state in Blob Storage: export definitions (``definitions/<name>.json``).

Writes carry ETag conditions so that two writers cannot silently overwrite each other.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import ContainerClient, ContentSettings

from shared.definitions import ExportDefinition, parse_definition
from shared.errors import ExportError, NotFoundError
from shared.settings import Settings, StorageConnection
from shared.storage import blob_service

__all__ = ["ConcurrentUpdateError", "DefinitionStore", "open_state"]

_JSON = ContentSettings(content_type="application/json")


class ConcurrentUpdateError(ExportError):
    """The blob changed since it was read (ETag mismatch)."""


@lru_cache(maxsize=8)
def _state_container(connection: StorageConnection, name: str) -> ContainerClient:
    container = blob_service(connection).get_container_client(name)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    return container


def open_state(settings: Settings) -> ContainerClient:
    """The state container in the app's storage, created on first use in this process."""
    return _state_container(settings.app_storage, settings.state_container)


class DefinitionStore:
    """Export definitions as JSON blobs."""

    prefix = "definitions/"

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def _blob_name(self, name: str) -> str:
        return f"{self.prefix}{name}.json"

    def get(self, name: str) -> tuple[ExportDefinition, str]:
        """The definition and its ETag; NotFoundError when there is none."""
        blob = self._container.get_blob_client(self._blob_name(name))
        try:
            download = blob.download_blob()
        except ResourceNotFoundError:
            raise NotFoundError(f"export {name!r} not found") from None
        data = download.readall()
        return parse_definition(data, source=blob.blob_name), download.properties.etag

    def put(self, definition: ExportDefinition, *, etag: str | None = None) -> str:
        """Create or replace; with ``etag``, only if unchanged since it was read."""
        blob = self._container.get_blob_client(self._blob_name(definition.name))
        body = orjson.dumps(definition.to_dict(), option=orjson.OPT_INDENT_2)
        conditions = (
            {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        )
        try:
            result = blob.upload_blob(body, overwrite=True, content_settings=_JSON, **conditions)
        except ResourceModifiedError:
            raise ConcurrentUpdateError(
                f"export {definition.name!r} changed since it was read; read it again"
            ) from None
        return result["etag"]

    def delete(self, name: str) -> None:
        try:
            self._container.delete_blob(self._blob_name(name))
        except ResourceNotFoundError:
            raise NotFoundError(f"export {name!r} not found") from None

    def names(self) -> list[str]:
        start = len(self.prefix)
        return sorted(
            b.name[start:-5]
            for b in self._container.list_blobs(name_starts_with=self.prefix)
            if b.name.endswith(".json")
        )

    def list(self) -> list[ExportDefinition]:
        return [self.get(name)[0] for name in self.names()]
