"""The app's own state in Blob Storage: export definitions (``definitions/<name>.json``).

Writes carry ETag conditions so that two writers cannot silently overwrite each other.
A definition blob that cannot be used (not JSON, invalid, too large, a blob name that is
no export name) is one broken definition: :meth:`DefinitionStore.scan` lists it beside the
good ones instead of failing the whole listing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import ContainerClient, ContentSettings

from shared.definitions import MAX_DEFINITION_BYTES, ExportDefinition, parse_definition
from shared.errors import DefinitionError, ExportError, InvalidNameError, NotFoundError
from shared.names import check_export_name
from shared.settings import Settings, StorageConnection
from shared.storage import blob_service, read_capped

__all__ = [
    "BrokenDefinition",
    "ConcurrentUpdateError",
    "DefinitionStore",
    "StoredDefinitionError",
    "open_state",
]

_JSON = ContentSettings(content_type="application/json")


class ConcurrentUpdateError(ExportError):
    """The blob changed since it was read (ETag mismatch)."""


class StoredDefinitionError(DefinitionError):
    """A stored definition blob cannot be used: the store's state, not the caller's input
    (the API answers 409; a PUT of a valid definition replaces it)."""


@lru_cache(maxsize=8)
def _state_container(connection: StorageConnection, name: str) -> ContainerClient:
    container = blob_service(connection).get_container_client(name)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    return container


def open_state(settings: Settings) -> ContainerClient:
    """The state container in the app's storage, created on first use in this process."""
    return _state_container(settings.app_storage, settings.state_container)


@dataclass(frozen=True, slots=True)
class BrokenDefinition:
    """A definition blob that cannot be used, and why (the error names the field)."""

    name: str  # from the blob name; may itself be what is wrong
    blob: str
    error: DefinitionError | InvalidNameError

    def as_dict(self) -> dict[str, Any]:
        code = "invalid_name" if isinstance(self.error, InvalidNameError) else "invalid_definition"
        return {
            "name": self.name,
            "blob": self.blob,
            "error": {"code": code, "message": str(self.error), "field": self.error.field},
        }


class DefinitionStore:
    """Export definitions as JSON blobs."""

    prefix = "definitions/"

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def _blob_name(self, name: str) -> str:
        # Checked before any storage call: "../x" or "x\n" must never become a blob path.
        return f"{self.prefix}{check_export_name(name)}.json"

    def get(self, name: str) -> tuple[ExportDefinition, str]:
        """The definition and its ETag; NotFoundError when there is none."""
        blob = self._container.get_blob_client(self._blob_name(name))
        try:
            read = read_capped(blob, MAX_DEFINITION_BYTES)  # a huge blob is refused, not loaded
        except ResourceNotFoundError as exc:
            if exc.error_code == "ContainerNotFound":
                raise  # not "no such export": the state container itself is missing
            raise NotFoundError(f"export {name!r} not found") from None
        if read.too_large:
            raise StoredDefinitionError(
                "",
                f"the definition is {read.size:,} bytes; at most "
                f"{MAX_DEFINITION_BYTES // 1024} KB is read",
                source=blob.blob_name,
            )
        try:
            return parse_definition(read.data, source=blob.blob_name), read.etag
        except DefinitionError as exc:
            raise StoredDefinitionError(exc.field, exc.detail, source=exc.source) from None

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
        """The name of every definition blob, valid export names or not (see scan)."""
        start = len(self.prefix)
        return sorted(
            b.name[start:-5]
            for b in self._container.list_blobs(name_starts_with=self.prefix)
            if b.name.endswith(".json")
        )

    def scan(self) -> tuple[list[ExportDefinition], list[BrokenDefinition]]:
        """Every definition: the good ones, and beside them the ones that cannot be used."""
        good: list[ExportDefinition] = []
        broken: list[BrokenDefinition] = []
        for name in self.names():
            try:
                good.append(self.get(name)[0])
            except NotFoundError:
                continue  # deleted since the listing
            except (DefinitionError, InvalidNameError) as exc:
                broken.append(BrokenDefinition(name, f"{self.prefix}{name}.json", exc))
        return good, broken

    def list(self) -> list[ExportDefinition]:
        """The definitions that can be used (broken ones left out: see scan)."""
        return self.scan()[0]
