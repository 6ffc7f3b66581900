"""Logs and metrics: one structured record per finished run, nothing chatty, nothing
private, and no blocking storage call on the queue worker's event loop."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
import uuid
from typing import Any

import azure.functions as func
import pytest

import function_app
from shared import service
from shared.definitions import parse_definition
from shared.locks import ConnectionLock
from shared.logs import QUIET_LOGGERS
from shared.metrics import DIMENSIONS, RUN_END, run_end_dimensions
from shared.retry import RetryPolicy
from shared.service import Services, start_run
from tests.exports import ROOT, definition_doc, write_small_export
from tests.fixtures_app import indexed_functions, live_services

# Row values that must never reach a log line: valid and invalid addresses, phones, names.
ROWS = [
    ("c-1", "Ada.Lovelace@Example.com ", "Adelaide", "+31 6 12345678", "NL"),
    ("c-2", "grace.hopper@example.org", "Gracielle", "06-87654321", "NL"),
    ("c-3", "not-an-address", "Bartholomew", "", "NL"),
    ("c-4", "ada.lovelace@example.com", "Adelaide", "", "NL"),  # a duplicate
    ("c-5", "", "Nobody", "0612345679", "NL"),  # no e-mail at all
]
SECRETS = ("pk_test_sandbox",)


def _values() -> set[str]:
    out = set(SECRETS)
    for _, email, name, phone, _ in ROWS:
        for value in (email.strip(), email.strip().lower(), name, phone):
            if value:
                out.add(value)
        digits = "".join(ch for ch in phone if ch.isdigit())
        if digits:
            out.add(digits[-8:])  # however a phone were formatted, its last digits stay
    return out


@pytest.fixture
def worker_services(
    storage_connection_string, klaviyo_sandbox, key_vault, key_vault_client_kwargs, blob_service
):
    container = f"ci-{uuid.uuid4().hex[:12]}"
    segments = blob_service.create_container(container)
    services = live_services(
        storage_connection_string,
        klaviyo_sandbox.url,
        key_vault,
        key_vault_client_kwargs,
        client_kwargs={"retry": RetryPolicy(backoff=0.02, max_backoff=0.2, rng=random.Random(5))},
        wait_seconds=1,
        max_wait_delay=1,
    )
    write_small_export(segments, ROWS)
    services.definitions.put(parse_definition(definition_doc(container, name="vip")))
    service.configure(services)
    yield services
    service.configure(None)
    services.queue.clear_messages()


def _deliver(services: Services, run_id: str) -> None:
    """Hand the run's next message to run_worker as the host would, then delete it."""
    deadline = time.monotonic() + 30
    while (message := next(iter(services.queue.receive_messages(max_messages=1)), None)) is None:
        assert time.monotonic() < deadline, "no message became visible"
        time.sleep(0.1)  # a requeued message is invisible for a second: poll, bounded
    body = base64.b64decode(message.content)
    assert json.loads(body)["run_id"] == run_id
    worker = indexed_functions()["run_worker"].get_user_function()
    asyncio.run(worker(func.QueueMessage(id=message.id, body=body)))
    services.queue.delete_message(message)


def _run_end_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(f"{RUN_END} ")]


def test_a_finished_run_logs_one_record_with_every_dimension_and_no_row_value(
    worker_services, caplog
):
    services = worker_services
    caplog.set_level(logging.DEBUG)  # everything the app would send; the SDKs stay quiet
    for name in QUIET_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING, name
    run_id, _ = start_run(services, "vip")
    _deliver(services, run_id)

    (record,) = _run_end_records(caplog)
    message = json.loads(record.getMessage()[len(RUN_END) + 1 :])
    report = services.runs.get("vip", run_id)["summary"]
    for dims in (message, {k: getattr(record, k) for k in DIMENSIONS}):
        assert set(DIMENSIONS) <= set(dims)
        assert dims["export"] == "vip" and dims["run_id"] == run_id
        assert dims["trigger"] == "http" and dims["status"] == "succeeded"
        assert dims["rows_read"] == 5 == report["rows"]["read"]
        assert dims["rows_sent"] == 2 == report["rows"]["sent"]
        assert dims["rows_rejected"] == 2 and dims["rows_duplicates"] == 1
        assert dims["jobs"] == 1 and dims["klaviyo_429s"] == 0
        assert dims["seconds"] > 0 and dims["attempts"] == 1 and dims["waits"] == 0
        assert dims["error"] is None
    assert record.levelno == logging.INFO

    # No line of the whole run carries a row value or the key: not the run-end record, not
    # a progress line, not an SDK request log (those loggers are at WARNING).
    forbidden = _values()
    for line in caplog.records:
        text = line.getMessage() + json.dumps(
            {k: str(v) for k, v in vars(line).items() if k in DIMENSIONS}
        )
        leaked = [value for value in forbidden if value in text]
        assert not leaked, (line.name, leaked)
        assert not line.name.startswith(("httpx", "httpcore", "azure.")), line.name


def test_a_failed_run_logs_its_record_too(worker_services, caplog):
    services = worker_services
    definition = services.definitions.get("vip")[0].to_dict()
    definition["connection"]["api_key_secret"] = "no-such-secret"
    services.definitions.put(parse_definition(definition))
    caplog.set_level(logging.INFO)
    run_id, _ = start_run(services, "vip")
    _deliver(services, run_id)
    (record,) = _run_end_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.status == "failed" and record.run_id == run_id
    assert "no-such-secret" in record.error
    assert record.rows_read is None  # it read nothing: unknown, not zero
    assert set(DIMENSIONS) <= set(vars(record))


def test_mirror_sync_counts_join_the_record_when_the_report_has_them():
    report = {
        "rows": {"read": 10, "sent": 4, "rejected": 1, "duplicates": 0, "unchanged": 5},
        "jobs": {"submitted": 1},
        "klaviyo": {"throttled": 2},
        "members": {"removed": 3, "held": 0, "unchanged": 5},
        "timings": {"seconds": 1.5},
    }
    dims = run_end_dimensions(
        export="vip", run_id="r", trigger="schedule", status="succeeded", report=report
    )
    assert (dims["unchanged"], dims["removed"], dims["held"]) == (5, 3, 0)
    assert dims["klaviyo_429s"] == 2 and dims["seconds"] == 1.5
    plain = run_end_dimensions(
        export="vip", run_id="r", trigger="http", status="succeeded", report={"rows": {}}
    )
    assert not {"unchanged", "removed", "held"} & set(plain)


def test_run_history_is_not_sampled_away():
    host = json.loads((ROOT / "host.json").read_text())
    excluded = host["logging"]["applicationInsights"]["samplingSettings"]["excludedTypes"]
    assert "Trace" in excluded.split(";")


# -- the event loop ----------------------------------------------------------------------------


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class OffLoopSpy:
    """Wraps a storage-backed object and records, per call, whether it ran on an event
    loop's thread (where a blocking SDK call would stall every other coroutine)."""

    def __init__(self, target: Any, calls: list[tuple[str, bool]]) -> None:
        self._target = target
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls.append((name, _on_event_loop()))
            return attr(*args, **kwargs)

        return call


def test_the_queue_worker_keeps_storage_calls_off_the_event_loop(worker_services, monkeypatch):
    services = worker_services
    calls: list[tuple[str, bool]] = []
    services.runs = OffLoopSpy(services.runs, calls)
    services.definitions = OffLoopSpy(services.definitions, calls)
    services.queue = OffLoopSpy(services.queue, calls)
    real_get_services = function_app.get_services

    def spied_get_services() -> Services:  # builds clients and the queue on first use
        calls.append(("get_services", _on_event_loop()))
        return real_get_services()

    monkeypatch.setattr(function_app, "get_services", spied_get_services)
    run_id, _ = start_run(services, "vip")
    calls.clear()

    # First delivery: the connection is busy, so the run goes back to the queue.
    other = ConnectionLock(services.state, "klaviyo-api-key", duration=15)
    lease = other.acquire("20260101T000000Z-000000", "someone-else")
    try:
        _deliver(services, run_id)
    finally:
        lease.release()
    assert services.runs.get("vip", run_id)["status"] == "waiting"
    # Second delivery: it runs to the end.
    _deliver(services, run_id)
    assert services.runs.get("vip", run_id)["status"] == "succeeded"

    names = {name for name, _ in calls}
    assert {"get", "update", "finish", "send_message", "get_services"} <= names, names
    on_loop = [name for name, loop in calls if loop]
    assert not on_loop, f"blocking storage calls on the event loop: {on_loop}"
