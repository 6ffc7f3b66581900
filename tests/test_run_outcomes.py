"""How a run ends: a report for every run (failed and held ones too), an empty snapshot is
a warning (and, with people on the list, always held), cancelled jobs fail the run."""

from __future__ import annotations

import logging

import orjson
import pytest

from shared.errors import ExportError
from shared.export import report_of
from tests.sync_days import N, accounted, people, run, sync_definition, sync_settings, write_day


@pytest.fixture
def settings(storage_connection_string, klaviyo_sandbox):
    return sync_settings(storage_connection_string, klaviyo_sandbox.url)


def _stored_report(blob_service, settings, report) -> dict:
    container = blob_service.get_container_client(settings.state_container)
    return orjson.loads(container.download_blob(report["report_blob"]).readall())


def test_an_empty_snapshot_is_a_warning_and_with_people_on_the_list_is_held(
    container, settings, klaviyo_sandbox, caplog
):
    definition = sync_definition(container.container_name)
    write_day(container, [], "2026/11/01/0600")
    caplog.set_level(logging.WARNING)
    first = run(definition, settings)
    assert first["status"] == "succeeded" and first["rows"]["read"] == 0
    assert any("has no rows" in w for w in first["warnings"])
    assert any("has no rows" in r.getMessage() for r in caplog.records)

    write_day(container, people(range(100)), "2026/11/02/0600")
    assert run(definition, settings)["members"]["added"] == 100
    write_day(container, [], "2026/11/03/0600")
    empty = run(definition, settings)
    assert accounted(empty) and empty["status"] == "held"
    assert "the snapshot is empty" in empty["message"]
    assert empty["members"]["removed"] == 0 and empty["members"]["held"] == 100
    assert len(klaviyo_sandbox.state.list_members("Y6nRLr")) == 100


def test_a_run_whose_jobs_klaviyo_all_cancelled_fails(container, settings, klaviyo_sandbox):
    write_day(container, people(range(N)), "2026/11/01/0600")
    klaviyo_sandbox.configure(cancel_jobs=True)
    report = run(sync_definition(container.container_name), settings)
    assert report["status"] == "failed" and accounted(report)
    assert report["error"] == "Klaviyo cancelled every import job of the run (1)"
    assert report["rejected_by_reason"] == {"klaviyo_job_cancelled": N}


def test_a_run_that_stops_still_writes_what_it_read_and_sent(
    container, settings, klaviyo_sandbox, blob_service
):
    write_day(container, people(range(N)), "2026/11/01/0600")
    klaviyo_sandbox.configure(job_delay=30.0)  # Klaviyo never gets to the job in time
    with pytest.raises(ExportError, match="still queued after") as caught:
        run(sync_definition(container.container_name), settings, job_deadline=0.2)
    report = report_of(caught.value)
    assert report is not None and report["status"] == "failed"
    assert "still queued" in report["error"]
    assert report["rows"]["read"] == N and report["jobs"]["submitted"] == 1
    assert _stored_report(blob_service, settings, report)["error"] == report["error"]
    assert report["sync"]["state_saved"] is False  # nothing was confirmed
