"""Killed runs resume: between the import jobs and the removals, and with ten jobs in
flight. A worker runs in a child process, is killed with SIGKILL, and the redelivered
message resumes the run with the same run id."""

from __future__ import annotations

import asyncio
import time

import orjson
from azure.core.exceptions import ResourceNotFoundError

from devtools.sample_export import write_sample_export
from shared.definitions import parse_definition
from shared.service import start_run
from shared.worker import execute_run
from tests.killing import (
    kill,
    release_dead_leases,
    start_worker_child,
    take_message,
    wait_for,
    worker_env,
    worker_services,
)
from tests.sync_days import (
    FORM_IN_SEGMENT,
    FORM_ONLY,
    LIST_ID,
    N,
    email,
    people,
    sign_up_form,
    sync_definition,
    write_day,
)

CREATE = "POST /api/profile-bulk-import-jobs"
REMOVE = "DELETE /api/lists/{id}/relationships/profiles"


def _count(sandbox, operation: str, status_class: str) -> int:
    by_status = sandbox.state.stats()["operations"].get(operation, {})
    return sum(n for status, n in by_status.items() if str(status).startswith(status_class))


def _jobs_created(sandbox) -> int:
    return sum(sandbox.state.stats()["jobs"].values())


def _accepted_jobs(services, export: str, run_id: str) -> int:
    blob = services.state.get_blob_client(f"runs/{export}/{run_id}/checkpoint.json")
    try:
        return len(orjson.loads(blob.download_blob().readall())["jobs"])
    except ResourceNotFoundError:
        return 0


def test_a_kill_between_the_jobs_and_the_removals_resumes_the_removals(
    storage_connection_string, klaviyo_sandbox, blob_service, container
):
    env = worker_env(storage_connection_string, klaviyo_sandbox.url)
    services = worker_services(env)
    services.definitions.put(parse_definition(sync_definition(container.container_name)))
    sign_up_form(klaviyo_sandbox)
    write_day(container, people(range(N)), "2026/11/01/0600")
    run_id, _ = start_run(services, "churners")
    assert asyncio.run(execute_run(services, take_message(services))) == "succeeded"

    # Day 2: 100 leave (40 of them form members), 100 join. Removals fail with 5xx until
    # the child is killed in their retries: its job is accepted, nobody is removed yet.
    day2 = [i for i in range(N + 100) if i >= 100]
    write_day(container, people(day2), "2026/11/02/0600")
    run_id, _ = start_run(services, "churners")
    body = take_message(services)
    klaviyo_sandbox.configure(error_rate=1.0, fault_families=frozenset({"list_relationships"}))
    created_before = _count(klaviyo_sandbox, CREATE, "2")
    child = start_worker_child(body, env)
    try:
        wait_for(
            lambda: (
                _accepted_jobs(services, "churners", run_id) == 1
                and _count(klaviyo_sandbox, REMOVE, "5") >= 1
            ),
            timeout=60,
            what="the job accepted and a removal failing",
        )
        assert child.poll() is None, "the child ended before it could be killed"
    finally:
        kill(child)
    assert services.runs.get("churners", run_id)["status"] == "running"
    assert email(0 + 50) in {m["email"] for m in klaviyo_sandbox.state.list_members(LIST_ID)}

    klaviyo_sandbox.configure(error_rate=0.0)
    release_dead_leases(services, "churners")
    assert asyncio.run(execute_run(services, body, attempt=2)) == "succeeded"

    summary = services.runs.get("churners", run_id)["summary"]
    assert summary["accounted"] is True
    assert summary["jobs"]["resumed_from_checkpoint"] == 1
    assert _count(klaviyo_sandbox, CREATE, "2") == created_before + 1  # not sent again
    assert summary["members"]["removed"] == 60 and summary["members"]["kept_not_owned"] == 40
    on_list = {m["email"] for m in klaviyo_sandbox.state.list_members(LIST_ID)}
    assert on_list == {email(i) for i in day2} | set(FORM_IN_SEGMENT + FORM_ONLY)


def test_a_kill_with_ten_jobs_in_flight_resends_only_jobs_it_never_saw_accepted(
    storage_connection_string, klaviyo_sandbox, blob_service, container
):
    summary = write_sample_export(
        container, folder="CI/K", segment="Vips", rows=150_000, partitions=3
    )
    env = worker_env(storage_connection_string, klaviyo_sandbox.url)
    services = worker_services(env)
    doc = sync_definition(container.container_name)
    doc.update(
        name="vip-customers",
        source={"container": container.container_name, "folder": "CI/K", "segment": "Vips"},
        mapping={"email": "Email", "first_name": "FirstName", "last_name": "LastName"},
    )
    services.definitions.put(parse_definition(doc))
    run_id, _ = start_run(services, "vip-customers")
    body = take_message(services)
    # Every 202 comes 1.5 s after its job was created, as over a slow network: ten jobs
    # are in flight at once, each already accepted when the child dies.
    klaviyo_sandbox.configure(
        slow_rate=1.0,
        slow_seconds=1.5,
        slow_after_handling=True,
        fault_families=frozenset({"bulk_import_create"}),
    )
    child = start_worker_child(body, env)
    try:
        wait_for(
            lambda: (
                _accepted_jobs(services, "vip-customers", run_id) >= 2
                and _count(klaviyo_sandbox, CREATE, "2") >= 10
            ),
            timeout=90,
            what="ten jobs accepted and two of them checkpointed",
        )
        assert child.poll() is None, "the child ended before it could be killed"
    finally:
        kill(child)
    checkpointed = _accepted_jobs(services, "vip-customers", run_id)
    created_at_kill = _jobs_created(klaviyo_sandbox)  # accepted by "Klaviyo"
    answered_at_kill = _count(klaviyo_sandbox, CREATE, "2")  # ... and their 202 sent

    klaviyo_sandbox.configure(slow_rate=0.0, slow_after_handling=False)
    release_dead_leases(services, "vip-customers")
    started = time.monotonic()
    assert asyncio.run(execute_run(services, body, attempt=2)) == "succeeded"

    record = services.runs.get("vip-customers", run_id)["summary"]
    assert record["accounted"] is True
    assert record["rows"]["sent"] == summary.unique_valid_emails
    assert len(klaviyo_sandbox.state.list_emails(LIST_ID)) == summary.unique_valid_emails
    planned = record["jobs"]["planned"]
    resent = _jobs_created(klaviyo_sandbox) - planned
    resumed = record["jobs"]["resumed_from_checkpoint"]
    # The jobs accepted but not in the checkpoint the resume read are sent again (an
    # upsert: the list stays right): those whose 202 never reached the dead process, and
    # any whose 202 arrived during its last checkpoint write. With ten in flight, at most
    # ten. (What the test itself read of the checkpoint and the sandbox at the kill is only
    # printed: a write the dead process had fully sent may still land after it.)
    assert resumed >= 2 and 0 <= resent <= 10
    print(
        f"\nkill with 10 in flight: {created_at_kill} jobs accepted at the kill, "
        f"{answered_at_kill} of them answered, {checkpointed} in the checkpoint; "
        f"resume took up {resumed} and sent {resent} again ({time.monotonic() - started:.1f}s)"
    )
