"""The schedule decides "due" from a fingerprint of what a run would read and where it
would write, judges each export on its own, and a run that sees its snapshot change under
it does not end "succeeded". Runs go through the queue worker, against Azurite and the
Klaviyo sandbox; the tick is ``queue_due_runs``, the timer function's whole body."""

from __future__ import annotations

import asyncio
import logging
import uuid

import httpx
import orjson
import pytest

from shared.definitions import parse_definition
from shared.errors import SnapshotChangedError
from shared.keyvault import LocalApiKey
from shared.runner import run_definition
from shared.scheduler import queue_due_runs
from shared.service import Services
from shared.worker import execute_run
from tests.control_plane import FAST_RETRY, queued, save
from tests.exports import SEGMENT, definition_doc, write_small_export

LIST_ID = "Y6nRLr"


def tick_and_work(services: Services) -> list[str]:
    """One tick, then every queued run through the worker; the exports that ran."""
    queue_due_runs(services)
    ran = []
    for message in queued(services):
        asyncio.run(execute_run(services, orjson.dumps(message)))
        ran.append(message["export"])
    return ran


def add_partition(container, prefix: str, number: int, rows: list[tuple[str, ...]]) -> str:
    name = f"{prefix}{SEGMENT}_{number}.csv"
    body = "".join(",".join(row) + "\r\n" for row in rows).encode()
    container.upload_blob(name, body, overwrite=True)
    return name


ROW_A = ("1", "a@example.com", "A", "", "NL")
ROW_B = ("2", "b@example.com", "B", "", "NL")


# -- what makes an export due ------------------------------------------------------------


def test_a_partition_written_after_the_run_read_the_folder_is_exported(
    services, container, klaviyo_sandbox
):
    prefix = write_small_export(container, [ROW_A])
    save(services, "vip", definition_doc(container.container_name))
    assert tick_and_work(services) == ["vip"]
    assert tick_and_work(services) == []  # nothing changed: skipped

    add_partition(container, prefix, 2, [ROW_B])  # same HHMM folder, written later
    assert tick_and_work(services) == ["vip"]
    assert klaviyo_sandbox.state.list_emails(LIST_ID) == ["a@example.com", "b@example.com"]
    assert tick_and_work(services) == []


def test_a_zero_byte_partition_overwritten_later_is_exported(services, container, klaviyo_sandbox):
    prefix = write_small_export(container, [ROW_A])
    second = add_partition(container, prefix, 2, [])  # written empty first
    save(services, "vip", definition_doc(container.container_name))
    assert tick_and_work(services) == ["vip"]

    add_partition(container, prefix, 2, [ROW_B])
    assert container.get_blob_client(second).get_blob_properties().size > 0
    assert tick_and_work(services) == ["vip"]
    assert klaviyo_sandbox.state.list_emails(LIST_ID) == ["a@example.com", "b@example.com"]


def test_a_folder_moved_to_a_path_that_sorts_lower_is_exported(
    services, container, klaviyo_sandbox
):
    def moved_to(folder: str) -> dict:
        doc = definition_doc(container.container_name)  # the test mapping, another folder
        doc["source"]["folder"] = folder
        return doc

    write_small_export(container, [ROW_A], folder="CI/b-export", stamp="2026/11/02/0900")
    save(services, "vip", moved_to("CI/b-export"))
    assert tick_and_work(services) == ["vip"]
    assert services.runs.status("vip")["last_run"]["status"] == "succeeded"

    # An older snapshot in a folder that sorts lower: a name comparison calls it "seen".
    write_small_export(container, [ROW_B], folder="CI/a-export", stamp="2026/11/01/0900")
    save(services, "vip", moved_to("CI/a-export"))
    assert tick_and_work(services) == ["vip"]
    assert klaviyo_sandbox.state.list_emails(LIST_ID) == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: d["destination"].update(list_id="Xy12ab"), id="list_id"),
        pytest.param(lambda d: d["mapping"].update(first_name="CustomerId"), id="mapping"),
        pytest.param(lambda d: d["options"].update(phone_default_region="DE"), id="options"),
    ],
)
def test_a_new_list_or_mapping_makes_the_export_due(services, container, change):
    write_small_export(container, [ROW_A])
    doc = definition_doc(container.container_name)
    save(services, "vip", doc)
    assert tick_and_work(services) == ["vip"]

    change(doc)
    save(services, "vip", doc)
    outcome = queue_due_runs(services)
    assert outcome["vip"].startswith("queued") and "definition changed" in outcome["vip"]


def test_labels_of_the_definition_do_not_make_it_due(services, container):
    write_small_export(container, [ROW_A])
    doc = definition_doc(container.container_name)
    save(services, "vip", doc)
    assert tick_and_work(services) == ["vip"]
    doc["connection"]["display_name"] = "Klaviyo (renamed)"
    save(services, "vip", doc)
    assert queue_due_runs(services) == {"vip": "unchanged"}


def test_last_success_records_the_fingerprint_of_what_the_run_read(services, container):
    write_small_export(container, [ROW_A])
    save(services, "vip", definition_doc(container.container_name))
    tick_and_work(services)
    last = services.runs.status("vip")["last_success"]
    assert last["fingerprint"].startswith("v1:")
    report = services.runs.get("vip", last["run_id"])
    assert report["status"] == "succeeded"


# -- one broken export never stops the tick ----------------------------------------------


def test_a_broken_export_is_recorded_and_the_others_are_queued(
    services, container, blob_service, caplog
):
    write_small_export(container, [ROW_A])
    missing = f"gone-{uuid.uuid4().hex[:8]}"
    save(services, "a-missing-container", definition_doc(missing))
    services.state.upload_blob("definitions/b-corrupt.json", b'{"name": "b-corrupt", ')
    save(services, "c-good", definition_doc(container.container_name))

    with caplog.at_level(logging.INFO, logger="shared.scheduler"):
        outcome = queue_due_runs(services)

    assert outcome["c-good"].startswith("queued")
    assert outcome["a-missing-container"].startswith("error: container")
    assert missing in outcome["a-missing-container"]
    assert "not valid JSON" in outcome["b-corrupt"]
    assert [m["export"] for m in queued(services)] == ["c-good"]
    status = services.runs.status("a-missing-container")["schedule_error"]
    assert missing in status["error"] and "SEGMENTS_STORAGE" in status["error"]
    assert "not valid JSON" in services.runs.status("b-corrupt")["schedule_error"]["error"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2
    assert all("\n" not in e and "RequestId" not in e for e in errors)  # one line, no dump

    # Once the container exists, the next tick clears the error and queues the export.
    write_small_export(blob_service.create_container(missing), [ROW_A])
    outcome = queue_due_runs(services)
    assert outcome["a-missing-container"].startswith("queued")
    assert services.runs.status("a-missing-container")["schedule_error"] is None


# -- a run that failed on its input ---------------------------------------------------------


def test_a_run_that_failed_on_its_input_is_not_queued_again_for_the_same_files(
    services, container, klaviyo_sandbox, caplog
):
    prefix = write_small_export(container, [ROW_A])
    add_partition(container, prefix, 2, [("3", "c@example.com", "C")])  # 3 fields, not 5
    save(services, "vip", definition_doc(container.container_name))
    assert tick_and_work(services) == ["vip"]
    last = services.runs.status("vip")["last_run"]
    assert last["status"] == "failed" and last["failed_on_fingerprint"].startswith("v1:")
    assert klaviyo_sandbox.state.list_emails(LIST_ID) == []  # structure fails before sending

    with caplog.at_level(logging.INFO, logger="shared.scheduler"):
        outcome = queue_due_runs(services)
    assert outcome["vip"] == f"failed on this snapshot (run {last['run_id']})"
    assert queued(services) == []
    assert any("start a run by hand" in r.getMessage() for r in caplog.records)

    add_partition(container, prefix, 2, [ROW_B])  # the partition is written again, whole
    assert tick_and_work(services) == ["vip"]
    assert services.runs.status("vip")["last_run"]["status"] == "succeeded"
    assert klaviyo_sandbox.state.list_emails(LIST_ID) == ["a@example.com", "b@example.com"]


def test_a_run_that_failed_for_another_reason_is_queued_again(services, container):
    write_small_export(container, [ROW_A])
    doc = definition_doc(container.container_name)
    doc["destination"] = {**doc["destination"], "list_id": "NoSuch"}  # Klaviyo says 404
    save(services, "vip", doc)
    assert tick_and_work(services) == ["vip"]
    last = services.runs.status("vip")["last_run"]
    assert last["status"] == "failed" and "failed_on_fingerprint" not in last
    # Not the input: the list may be created, a key fixed; the next tick tries again.
    assert tick_and_work(services) == ["vip"]


# -- the snapshot changes while a run reads it ---------------------------------------------


def _run_with(settings, definition, on_progress):
    return asyncio.run(
        run_definition(
            definition,
            settings,
            provider=LocalApiKey("pk_test_sandbox"),
            client_kwargs={"retry": FAST_RETRY},
            options=None,
            on_progress=on_progress,
        )
    )


def _once(action, when=lambda p: True):
    done = []

    def hook(progress: dict) -> None:
        if not done and when(progress):
            done.append(True)
            action()

    return hook


def _after_read(progress: dict) -> bool:
    # One job of one batch: once it is done, every row has been read and sent.
    return progress["jobs_done"] >= 1


@pytest.mark.parametrize("kind", ["added", "rewritten", "removed"])
def test_a_snapshot_that_changes_under_the_run_does_not_end_succeeded(
    settings, container, blob_service, kind
):
    prefix = write_small_export(container, [ROW_A])
    second = add_partition(container, prefix, 2, [ROW_B])
    definition = parse_definition(definition_doc(container.container_name))
    actions = {
        "added": (lambda: add_partition(container, prefix, 3, [ROW_B]), lambda p: True),
        "rewritten": (lambda: add_partition(container, prefix, 2, [ROW_A]), _after_read),
        "removed": (lambda: container.delete_blob(second), _after_read),
    }
    action, when = actions[kind]

    with pytest.raises(SnapshotChangedError) as caught:
        _run_with(settings, definition, _once(action, when))

    report = caught.value.report
    change = report["snapshot_changed"]
    expected = {"added": f"{SEGMENT}_3.csv", "rewritten": f"{SEGMENT}_2.csv"}
    assert change[kind] == [expected.get(kind, f"{SEGMENT}_2.csv")]
    assert report["snapshot"]["fingerprint"] is None
    assert report["rows"]["read"] == 2 and report["accounted"] is True  # what it listed
    assert kind in str(caught.value) and prefix in str(caught.value)
    saved = orjson.loads(
        blob_service.get_container_client(settings.state_container)
        .download_blob(report["report_blob"])
        .readall()
    )
    assert saved["snapshot_changed"] == change


class _OnFirstImport(httpx.AsyncBaseTransport):
    """The real HTTP transport, which does ``action`` once, as the first import job is
    sent: the run has listed its snapshot by then and read it (one small batch)."""

    def __init__(self, action) -> None:
        self._action = action
        self._inner: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._action and request.url.path.endswith("/profile-bulk-import-jobs"):
            action, self._action = self._action, None
            action()
        self._inner = self._inner or httpx.AsyncHTTPTransport()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
            self._inner = None  # a later run's client opens a new one


def test_a_changed_run_fails_in_the_worker_and_leaves_the_export_due(
    services, container, klaviyo_sandbox
):
    prefix = write_small_export(container, [ROW_A])
    save(services, "vip", definition_doc(container.container_name))
    services.client_kwargs["transport"] = _OnFirstImport(
        lambda: add_partition(container, prefix, 2, [ROW_B])
    )
    assert tick_and_work(services) == ["vip"]
    status = services.runs.status("vip")
    assert status["last_run"]["status"] == "failed"
    assert "snapshot changed while the run read it" in status["last_run"]["error"]
    assert f"1 added ({SEGMENT}_2.csv)" in status["last_run"]["error"]
    assert "last_success" not in status
    assert klaviyo_sandbox.state.list_emails(LIST_ID) == ["a@example.com"]  # what it listed
    record = services.runs.get("vip", status["last_run"]["run_id"])
    assert record["summary"]["rows"]["sent"] == 1  # the record says what was sent

    assert tick_and_work(services) == ["vip"]  # still due: the next run reads the whole folder
    assert klaviyo_sandbox.state.list_emails(LIST_ID) == ["a@example.com", "b@example.com"]
    assert services.runs.status("vip")["last_success"]["snapshot"] == prefix
    assert tick_and_work(services) == []
