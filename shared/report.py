"""What a run did, row by row: the tally, the rejected-rows CSV and the JSON report.

The invariant ``rows.read == rows.sent + rows.unchanged + rows.rejected + rows.duplicates``
holds for every run, failed and held ones too; ``accounted`` in the report says whether
it did.
"""

from __future__ import annotations

import csv
import io
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["REJECT_COLUMNS", "RejectsWriter", "RunTally", "build_report"]

REJECT_COLUMNS = ("file", "line", "reason_code", "reason", "email")


@dataclass
class RunTally:
    """Counters a run keeps as it goes."""

    rows_read: int = 0
    unchanged: int = 0  # rows not sent: the person is in the sync state, unchanged
    duplicates: int = 0
    phones_dropped: int = 0
    profiles_packed: int = 0  # profiles placed into jobs (before Klaviyo answers)
    profiles_submitted: int = 0  # profiles in jobs Klaviyo accepted
    rejected: Counter[str] = field(default_factory=Counter)
    jobs_submitted: int = 0
    jobs_resumed: int = 0  # accepted in an earlier attempt of this run (checkpoint)
    jobs_completed: int = 0
    jobs_cancelled: int = 0
    jobs_with_failures: int = 0
    jobs_resent_after_400: int = 0
    jobs_planned: int = 0  # batches packed (what a dry run would submit)
    klaviyo_completed: int = 0
    klaviyo_failed: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    # Profiles counted in ``profiles_submitted`` that Klaviyo then failed or cancelled.
    rejected_after_submit: int = 0

    def reject(self, code: str, *, after_submit: bool = False, count: int = 1) -> None:
        self.rejected[code] += count
        if after_submit:
            self.rejected_after_submit += count

    def sent(self, *, dry_run: bool) -> int:
        """Profiles Klaviyo took in (in a dry run: profiles that would have been sent)."""
        if dry_run:
            return self.profiles_packed
        return self.profiles_submitted - self.rejected_after_submit

    def rows(self, *, dry_run: bool) -> dict[str, int]:
        return {
            "read": self.rows_read,
            "sent": self.sent(dry_run=dry_run),
            "unchanged": self.unchanged,
            "rejected": self.rejected_total,
            "duplicates": self.duplicates,
            "phones_dropped": self.phones_dropped,
        }

    def accounted(self, *, dry_run: bool) -> bool:
        rows = self.rows(dry_run=dry_run)
        parts = rows["sent"] + rows["unchanged"] + rows["rejected"] + rows["duplicates"]
        return rows["read"] == parts

    def jobs(self) -> dict[str, int]:
        return {
            "planned": self.jobs_planned,
            "submitted": self.jobs_submitted,
            "resumed_from_checkpoint": self.jobs_resumed,
            "completed": self.jobs_completed,
            "cancelled": self.jobs_cancelled,
            "with_failures": self.jobs_with_failures,
            "resent_after_400": self.jobs_resent_after_400,
        }

    def as_dict(self, *, dry_run: bool) -> dict[str, Any]:
        return {
            "rows": self.rows(dry_run=dry_run),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "jobs": self.jobs(),
            "accounted": self.accounted(dry_run=dry_run),
        }


def build_report(
    run: dict[str, Any],
    *,
    tally: RunTally,
    dry_run: bool,
    container: str,
    snapshot: Any,
    client: Any,
    sync: dict[str, Any],
    outcome: dict[str, Any],
    started_at: datetime,
    seconds: float,
) -> dict[str, Any]:
    """The run's JSON report. ``run``: run id, export, list id and who started it;
    ``snapshot``: what was read (or None when the run stopped before); ``client``: the
    Klaviyo client's counters (or None); ``sync``: members and sync sections;
    ``outcome``: status, error and warnings."""
    body = tally.as_dict(dry_run=dry_run)
    sent = body["rows"]["sent"]
    return {
        **run,
        "dry_run": dry_run,
        **outcome,
        "snapshot": {
            "container": container,
            "path": snapshot.prefix if snapshot else None,
            "taken_at": snapshot.taken_at.isoformat() if snapshot else None,
            "files": list(snapshot.files) if snapshot else [],
        },
        **body,
        **sync,
        "klaviyo": {
            "completed_count": tally.klaviyo_completed,
            "failed_count": tally.klaviyo_failed,
            "retries": client.retries if client else 0,
            "throttled": client.throttled if client else 0,
            "rate_limit_wait_seconds": round(client.rate_limit_wait, 3) if client else 0,
        },
        "timings": {
            "started_at": started_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "seconds": round(seconds, 3),
            "rows_per_second": round(tally.rows_read / max(seconds, 1e-9), 1),
            "profiles_per_second": round(sent / max(seconds, 1e-9), 1),
        },
    }


class RejectsWriter:
    """Rejected rows as CSV (file, line, reason_code, reason, email), spooled to disk.

    The e-mail is kept in this file only: it goes to the same storage that already holds
    the segment. Logs never carry it.
    """

    def __init__(self, *, spool_bytes: int = 4 * 1024 * 1024) -> None:
        self._raw: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=spool_bytes)  # noqa: SIM115
        self._text = io.TextIOWrapper(self._raw, encoding="utf-8", newline="")
        self._csv = csv.writer(self._text)
        self._csv.writerow(REJECT_COLUMNS)
        self._lock = threading.Lock()  # the reader thread and the uploader both write
        self.count = 0

    def write(self, file: str, line: int, code: str, reason: str, email: str) -> None:
        with self._lock:
            self._csv.writerow((file, line, code, reason, email))
            self.count += 1

    def open_for_upload(self) -> IO[bytes]:
        """Flush and rewind; the caller streams the bytes to a blob."""
        self._text.flush()
        self._raw.seek(0)
        return self._raw

    def close(self) -> None:
        self._text.close()
