"""Where one run keeps its checkpoint, report and rejected rows: blobs under
``runs/<export>/<run_id>/`` in the app's state container."""

from __future__ import annotations

from typing import IO, Any

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from shared.errors import ExportError

__all__ = ["BlobRunStore", "run_prefix"]

_JSON = ContentSettings(content_type="application/json")
_CSV = ContentSettings(content_type="text/csv; charset=utf-8")


def run_prefix(export: str, run_id: str) -> str:
    return f"runs/{export}/{run_id}/"


class BlobRunStore:
    """A run's files in Blob Storage. The checkpoint is written with ETag conditions, so
    an instance that lost the run to another cannot overwrite the newer checkpoint."""

    def __init__(self, container: ContainerClient, export: str, run_id: str) -> None:
        self._container = container
        self.prefix = run_prefix(export, run_id)
        self._checkpoint_etag: str | None = None

    def _blob(self, name: str) -> Any:
        return self._container.get_blob_client(self.prefix + name)

    def load_checkpoint(self) -> dict[str, Any] | None:
        try:
            download = self._blob("checkpoint.json").download_blob()
        except ResourceNotFoundError:
            return None
        self._checkpoint_etag = download.properties.etag
        return orjson.loads(download.readall())

    def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        blob = self._blob("checkpoint.json")
        data = orjson.dumps(checkpoint)
        try:
            if self._checkpoint_etag is None:
                result = blob.upload_blob(data, overwrite=False, content_settings=_JSON)
            else:
                result = blob.upload_blob(
                    data,
                    overwrite=True,
                    etag=self._checkpoint_etag,
                    match_condition=MatchConditions.IfNotModified,
                    content_settings=_JSON,
                )
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise ExportError(
                f"checkpoint {self.prefix}checkpoint.json was changed by another instance; "
                "this instance stops so it cannot undo that run's progress"
            ) from exc
        self._checkpoint_etag = result["etag"]

    def save_rejects(self, data: IO[bytes]) -> str:
        self._blob("rejected.csv").upload_blob(data, overwrite=True, content_settings=_CSV)
        return self.prefix + "rejected.csv"

    def save_report(self, report: dict[str, Any]) -> str:
        body = orjson.dumps(report, option=orjson.OPT_INDENT_2)
        self._blob("report.json").upload_blob(body, overwrite=True, content_settings=_JSON)
        return self.prefix + "report.json"

    def load_report(self) -> dict[str, Any] | None:
        try:
            return orjson.loads(self._blob("report.json").download_blob().readall())
        except ResourceNotFoundError:
            return None
