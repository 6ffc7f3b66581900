"""Fixtures for tests of the control plane (schedule, API input, CLI), registered in
conftest.py: ``settings`` and ``services``, the app's own, on Azurite and the Klaviyo
sandbox with the local key instead of Key Vault (a module's own fixtures of those names
take precedence in that module)."""

from __future__ import annotations

import base64
import random
import uuid

import orjson
import pytest
from azure.storage.queue import QueueClient

from shared.definitions import parse_definition
from shared.keyvault import LocalApiKey
from shared.retry import RetryPolicy
from shared.service import RUN_QUEUE, Services
from shared.settings import Settings

__all__ = ["FAST_RETRY", "queued", "save", "services", "settings"]

FAST_RETRY = RetryPolicy(max_attempts=10, backoff=0.02, max_backoff=0.2, rng=random.Random(3))


@pytest.fixture
def settings(storage_connection_string, klaviyo_sandbox) -> Settings:
    return Settings.from_env(
        {
            "AzureWebJobsStorage": storage_connection_string,
            "SEGMENTS_STORAGE": storage_connection_string,
            "STATE_CONTAINER": f"state-{uuid.uuid4().hex[:12]}",
            "KLAVIYO_BASE_URL": klaviyo_sandbox.url,
        }
    )


@pytest.fixture
def services(settings) -> Services:
    built = Services.from_settings(
        settings,
        provider=LocalApiKey("pk_test_sandbox"),
        client_kwargs={"retry": FAST_RETRY},
        run_options={"poll_interval": 0.02},
    )
    built.queue.clear_messages()
    return built


def save(services: Services, name: str, doc: dict) -> None:
    services.definitions.put(parse_definition({**doc, "name": name}))


def queued(services: Services) -> list[dict]:
    """Take the run messages off the queue (base64, as the host reads them)."""
    raw = QueueClient.from_connection_string(
        services.settings.app_storage.connection_string, RUN_QUEUE
    )
    out = []
    for message in raw.receive_messages(max_messages=32):
        out.append(orjson.loads(base64.b64decode(message.content)))
        raw.delete_message(message)
    return out
