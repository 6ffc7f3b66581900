"""When a job first added someone: Klaviyo's created_at, or when the job was sent."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.batches import Batch
from shared.importjobs import SettledJob
from shared.klaviyo import ImportJob


def _job(created_at: datetime | None) -> ImportJob:
    return ImportJob("j1", "complete", 1, 1, 0, created_at=created_at)


def test_klaviyos_created_at_wins_over_the_local_clock():
    created = datetime(2026, 11, 1, 6, 0, 1, tzinfo=UTC)
    settled = SettledJob(Batch(0, "L1"), _job(created), submitted_ms=1)
    assert settled.created_at_ms == int(created.timestamp() * 1000)


def test_without_created_at_the_time_the_job_was_sent_stands_in():
    assert SettledJob(Batch(0, "L1"), _job(None), submitted_ms=1_700_000).created_at_ms == (
        1_700_000
    )
    # A job accepted by an earlier attempt and without created_at: unknown, so whoever it
    # added is never taken for this export's when they leave.
    assert SettledJob(Batch(0, "L1"), _job(None)).created_at_ms == 0
