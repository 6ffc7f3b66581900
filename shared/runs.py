"""Where one run keeps its checkpoint, report and rejected rows: blobs under
``runs/<export>/<run_id>/`` in the app's state container."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from shared.errors import ExportError
from shared.names import check_export_name, check_run_id

__all__ = ["ACTIVE", "FINISHED", "BlobRunStore", "RunRecords", "run_prefix", "utc_now"]

_JSON = ContentSettings(content_type="application/json")
_CSV = ContentSettings(content_type="text/csv; charset=utf-8")


def run_prefix(export: str, run_id: str) -> str:
    """Where a run's blobs live. Both parts are checked first: they come from URLs, queue
    messages and the command line, and must never walk out of ``runs/``."""
    return f"runs/{check_export_name(export, field='export')}/{check_run_id(run_id)}/"


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


# -- run records and per-export status -------------------------------------------------

# "waiting": back in the queue until its Klaviyo connection (or its export) is free.
ACTIVE = ("queued", "waiting", "running")
FINISHED = ("succeeded", "held", "failed")  # held: sent, but removals held back


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunRecords:
    """Run records (``runs/<export>/<run_id>/run.json``) and each export's status
    (``status/<export>.json``: the active run, the last run, the last exported snapshot).

    Every update is read-modify-write under an ETag condition, retried on conflict, so
    concurrent writers (HTTP front end, timer, workers) never lose each other's changes.
    """

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    # generic JSON documents with optimistic concurrency

    def _read(self, name: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            download = self._container.get_blob_client(name).download_blob()
        except ResourceNotFoundError:
            return None, None
        return orjson.loads(download.readall()), download.properties.etag

    def _write(self, name: str, doc: dict[str, Any], etag: str | None) -> None:
        blob = self._container.get_blob_client(name)
        body = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        if etag is None:
            blob.upload_blob(body, overwrite=False, content_settings=_JSON)
        else:
            blob.upload_blob(
                body,
                overwrite=True,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
                content_settings=_JSON,
            )

    def _update(
        self, name: str, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Apply ``change`` to the current document until the write wins the race."""
        for _ in range(20):
            doc, etag = self._read(name)
            new = change(copy.deepcopy(doc) if doc is not None else None)
            if new is None:
                return doc
            try:
                self._write(name, new, etag)
            except (ResourceExistsError, ResourceModifiedError):
                continue  # someone wrote in between: read again and reapply
            return new
        raise ExportError(f"{name}: too many concurrent updates")

    # run records

    @staticmethod
    def record_name(export: str, run_id: str) -> str:
        return run_prefix(export, run_id) + "run.json"

    @staticmethod
    def status_name(export: str) -> str:
        return f"status/{check_export_name(export, field='export')}.json"

    def get(self, export: str, run_id: str) -> dict[str, Any] | None:
        return self._read(self.record_name(export, run_id))[0]

    def update(self, export: str, run_id: str, **fields: Any) -> dict[str, Any]:
        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            doc = doc or {"run_id": run_id, "export": export}
            doc.update(fields)
            doc["updated_at"] = utc_now()
            return doc

        result = self._update(self.record_name(export, run_id), change)
        assert result is not None
        return result

    def status(self, export: str) -> dict[str, Any]:
        return self._read(self.status_name(export))[0] or {"export": export}

    def claim(
        self, export: str, run_id: str, *, is_active: Callable[[str], bool], **record: Any
    ) -> str:
        """Make ``run_id`` the export's active run, unless another active run holds it.

        Returns ``run_id`` when claimed, or the id of the run already in progress. The run
        record is written first, so a concurrent claimant that reads the status always
        finds the record of the run it names.
        """
        self.update(export, run_id, status="queued", queued_at=utc_now(), **record)
        winner: list[str] = []

        def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
            doc = doc or {"export": export}
            current = doc.get("active_run_id")
            if current and current != run_id and is_active(current):
                winner.append(current)
                return None
            doc["active_run_id"] = run_id
            doc["updated_at"] = utc_now()
            return doc

        self._update(self.status_name(export), change)
        if winner:
            # Never started: drop its record so it does not show up as a queued run.
            self._container.delete_blob(self.record_name(export, run_id))
            return winner[-1]
        return run_id

    def finish(
        self,
        export: str,
        run_id: str,
        *,
        status: str,
        error: str | None = None,
        report: dict[str, Any] | None = None,
        input_error: bool = False,
    ) -> dict[str, Any]:
        """Record the outcome, and release the export's active slot. A held run's
        ``message`` (why its removals were held back) comes from its report.
        ``input_error``: the run failed on what it read; the status keeps the fingerprint
        it was queued for, so the schedule does not queue the same input again."""
        summary = _summary(report) if report else None
        message = (report or {}).get("message")
        record = self.update(
            export,
            run_id,
            status=status,
            finished_at=utc_now(),
            error=error,
            message=message,
            summary=summary,
            report_blob=(report or {}).get("report_blob"),
        )

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            doc = doc or {"export": export}
            if doc.get("active_run_id") == run_id:
                doc["active_run_id"] = None
            doc["last_run"] = {
                "run_id": run_id,
                "status": status,
                "finished_at": record["finished_at"],
                "error": error,
                "message": message,
                "dry_run": record.get("dry_run", False),
            }
            if input_error and record.get("fingerprint"):
                doc["last_run"]["failed_on_fingerprint"] = record["fingerprint"]
            if _is_success(status, report):
                # The fingerprint of what the run read is what the schedule compares with.
                doc["last_success"] = {
                    "run_id": run_id,
                    "snapshot": report["snapshot"]["path"],
                    "fingerprint": report["snapshot"].get("fingerprint"),
                    "finished_at": record["finished_at"],
                }
            doc["updated_at"] = utc_now()
            return doc

        self._update(self.status_name(export), change)
        return record

    def note_schedule(self, export: str, *, error: str | None) -> None:
        """Record on the export's status the error a schedule tick met (or clear it).

        Written only when something changes, so a healthy export costs a tick no write.
        """

        def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
            doc = doc or {"export": export}
            if error is None:
                if not doc.get("schedule_error"):
                    return None
                doc["schedule_error"] = None
            else:
                doc["schedule_error"] = {"error": error, "at": utc_now()}
            doc["updated_at"] = utc_now()
            return doc

        self._update(self.status_name(export), change)


def _is_success(status: str, report: dict[str, Any] | None) -> bool:
    """A run that may stand for its snapshot: succeeded (or held: it sent everything and
    only its removals wait for a person to allow them; the same snapshot would be held
    again), sent for real, read a stable one."""
    return (
        status in ("succeeded", "held")
        and report is not None
        and not report.get("dry_run")
        and not report.get("snapshot_changed")
    )


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "snapshot": report["snapshot"]["path"],
        "rows": report["rows"],
        "rejected_by_reason": report["rejected_by_reason"],
        "jobs": report["jobs"],
        "members": report.get("members"),
        "accounted": report["accounted"],
        "seconds": report["timings"]["seconds"],
        "rejected_rows_blob": report.get("rejected_rows_blob"),
    }
