"""One structured log record at the end of every run: the run history in Application Insights.

The record is logged twice over on purpose:

- as ``extra=`` attributes, which an OpenTelemetry log exporter (azure-monitor-opentelemetry)
  stores as ``customDimensions``;
- as JSON in the message itself (``run_end {...}``), because the Functions Python worker
  forwards only a record's message, level and logger name to the host, so with the
  built-in Application Insights integration ``extra`` never arrives. The README's KQL reads
  the message, which works with either.

Only counts, names and ids go into it: never a row value, a key or a person's name.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["DIMENSIONS", "RUN_END", "log_run_end", "run_end_dimensions"]

logger = logging.getLogger(__name__)

RUN_END = "run_end"
# Always present (null when unknown, e.g. a run that failed before it read anything).
DIMENSIONS = (
    "event",
    "export",
    "run_id",
    "trigger",
    "status",
    "dry_run",
    "rows_read",
    "rows_sent",
    "rows_rejected",
    "rows_duplicates",
    "jobs",
    "klaviyo_429s",
    "seconds",
    "attempts",
    "waits",
    "started_by_object_id",
    "error",
)
# Present when the report has them (mirror sync adds them).
OPTIONAL_DIMENSIONS = ("unchanged", "removed", "held")
_MAX_ERROR = 500


def run_end_dimensions(
    *,
    export: str,
    run_id: str,
    trigger: str,
    status: str,
    record: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The run-end record's fields, from the run record and (if the run got that far) its
    report."""
    record = record or {}
    report = report or {}
    rows = report.get("rows") or {}
    jobs = report.get("jobs") or {}
    members = report.get("members") or {}
    klaviyo = report.get("klaviyo") or {}
    started_by = record.get("started_by") or report.get("started_by") or {}
    dims: dict[str, Any] = {
        "event": RUN_END,
        "export": export,
        "run_id": run_id,
        "trigger": trigger,
        "status": status,
        "dry_run": bool(report.get("dry_run", record.get("dry_run", False))),
        "rows_read": rows.get("read"),
        "rows_sent": rows.get("sent"),
        "rows_rejected": rows.get("rejected"),
        "rows_duplicates": rows.get("duplicates"),
        # A dry run submits nothing: count the jobs it would have sent.
        "jobs": jobs.get("planned" if report.get("dry_run") else "submitted"),
        "klaviyo_429s": klaviyo.get("throttled"),
        "seconds": _seconds(report, record),
        "attempts": record.get("attempts"),
        "waits": record.get("waits", 0),
        "started_by_object_id": started_by.get("object_id"),
        "error": (error or record.get("error") or None),
    }
    if dims["error"]:
        dims["error"] = str(dims["error"])[:_MAX_ERROR]
    optional = {
        "unchanged": rows.get("unchanged", members.get("unchanged")),
        "removed": members.get("removed"),
        "held": members.get("held"),
    }
    dims.update({k: v for k, v in optional.items() if v is not None})
    return dims


def _seconds(report: dict[str, Any], record: dict[str, Any]) -> float | None:
    seconds = (report.get("timings") or {}).get("seconds")
    if seconds is not None:
        return seconds
    started = record.get("started_at")
    if not started:
        return None
    elapsed = datetime.now(UTC) - datetime.fromisoformat(started)
    return round(elapsed.total_seconds(), 3)


def log_run_end(**fields: Any) -> dict[str, Any]:
    """Log the run-end record (INFO when it succeeded, WARNING otherwise) and return it."""
    dims = run_end_dimensions(**fields)
    level = logging.INFO if dims["status"] == "succeeded" else logging.WARNING
    logger.log(level, "%s %s", RUN_END, orjson.dumps(dims).decode(), extra=dims)
    return dims
