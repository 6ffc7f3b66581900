"""A run killed mid-way resumes from its checkpoint on redelivery: no accepted job is
sent again, and every profile still reaches the list."""

from __future__ import annotations

import asyncio
import uuid

import orjson
from azure.core.exceptions import ResourceNotFoundError

from devtools.klaviyo_sandbox import RateLimit
from devtools.sample_export import write_sample_export
from shared.definitions import parse_definition
from shared.service import start_run
from shared.worker import execute_run
from tests.exports import definition_doc
from tests.killing import (
    kill,
    start_worker_child,
    take_message,
    wait_for,
    worker_env,
    worker_services,
)

LIST_ID = "Y6nRLr"


def test_killed_run_resumes_without_resending_accepted_jobs(
    storage_connection_string, klaviyo_sandbox, blob_service
):
    container = f"ci-{uuid.uuid4().hex[:12]}"
    segments = blob_service.create_container(container)
    summary = write_sample_export(
        segments, folder="CI/K", segment="Vips", rows=35_000, partitions=2
    )
    env = worker_env(storage_connection_string, klaviyo_sandbox.url)
    services = worker_services(env)
    services.definitions.put(parse_definition(definition_doc(container, folder="CI/K")))
    run_id, queued = start_run(services, "vip-customers")
    assert queued
    body = take_message(services)

    # Let two jobs in, then hold the third back with 429s so the child is caught mid-run.
    klaviyo_sandbox.configure(
        rate_limit_overrides={"bulk_import_create": RateLimit(burst=1, steady=2)}
    )
    child = start_worker_child(body, env)
    checkpoint = services.state.get_blob_client(f"runs/vip-customers/{run_id}/checkpoint.json")

    def accepted_jobs() -> int:
        assert child.poll() is None, "the child run ended before it could be killed"
        try:
            return len(orjson.loads(checkpoint.download_blob().readall())["jobs"])
        except ResourceNotFoundError:
            return 0

    try:
        wait_for(lambda: accepted_jobs() >= 2, timeout=60, what="two accepted jobs")
    finally:
        kill(child)
    assert services.runs.get("vip-customers", run_id)["status"] == "running"
    assert len(klaviyo_sandbox.state.list_emails(LIST_ID)) < summary.unique_valid_emails

    # The crashed instance's lease expires; the redelivered message resumes the run.
    klaviyo_sandbox.configure(rate_limit_overrides={})
    wait_for(lambda: not services.lock("vip-customers").is_held(), timeout=40, what="lease expiry")
    status = asyncio.run(execute_run(services, body, attempt=2))

    assert status == "succeeded"
    record = services.runs.get("vip-customers", run_id)
    summary_doc = record["summary"]
    assert summary_doc["accounted"] is True
    assert summary_doc["jobs"]["resumed_from_checkpoint"] == 2
    assert summary_doc["rows"]["sent"] == summary.unique_valid_emails
    assert len(klaviyo_sandbox.state.list_emails(LIST_ID)) == summary.unique_valid_emails
    accepted = klaviyo_sandbox.state.stats()["requests"]["bulk_import_create"]["202"]
    assert accepted == summary_doc["jobs"]["planned"]  # no accepted job was sent twice
