"""Helpers for tests that kill a run mid-way: a worker in a child process, and what a
dead instance leaves behind (its leases) taken away as their expiry would."""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from azure.storage.blob import BlobLeaseClient

from shared.keyvault import LocalApiKey
from shared.retry import RetryPolicy
from shared.service import Services
from shared.settings import Settings
from tests.exports import ROOT

T = TypeVar("T")


def wait_for(condition: Callable[[], T], *, timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)  # polling a condition, bounded by the deadline
    raise AssertionError(f"timed out waiting for {what}")


def worker_env(storage_connection_string: str, sandbox_url: str) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": storage_connection_string,
        "SEGMENTS_STORAGE": storage_connection_string,
        "STATE_CONTAINER": f"state-{uuid.uuid4().hex[:12]}",
        "KLAVIYO_BASE_URL": sandbox_url,
        "KLAVIYO_API_KEY": "pk_test_sandbox",
    }


def worker_services(env: dict[str, str], **overrides: Any) -> Services:
    """The services of the instance that resumes (fast retries and polling), with an
    empty run queue: every test's Azurite account shares the one queue."""
    services = Services.from_settings(
        Settings.from_env(env),
        provider=LocalApiKey("pk_test_sandbox"),
        lock_seconds=15,
        client_kwargs={"retry": RetryPolicy(backoff=0.02, max_backoff=0.2, rng=random.Random(1))},
        run_options={"poll_interval": 0.05},
        **overrides,
    )
    services.queue.clear_messages()
    return services


def take_message(services: Services) -> str:
    """The one queued run message, as the host hands it to the trigger."""
    (message,) = services.queue.receive_messages(max_messages=32)
    services.queue.delete_message(message)
    return base64.b64decode(message.content).decode()


def start_worker_child(body: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.worker_child", body], cwd=ROOT, env={**os.environ, **env}
    )


def kill(child: subprocess.Popen) -> None:
    child.kill()
    child.wait()


def release_dead_leases(services: Services, export: str) -> None:
    """What the 15 s expiry of a killed instance's leases does, without the wait."""
    definition = services.definitions.get(export)[0]
    for lock in (services.lock(export), services.connection_lock(definition)):
        blob = services.state.get_blob_client(lock.blob_name)
        if blob.get_blob_properties().lease.state == "leased":
            BlobLeaseClient(blob).break_lease(lease_break_period=0)
