"""Shared fixtures: real local services, started once per session where possible."""

from __future__ import annotations

import uuid

import pytest
from azure.storage.blob import BlobServiceClient

from devtools.azurite import Azurite

pytest_plugins = ["tests.fixtures_sandbox", "tests.fixtures_keyvault", "tests.control_plane"]


@pytest.fixture(scope="session")
def azurite():
    with Azurite() as service:
        yield service


@pytest.fixture(scope="session")
def storage_connection_string(azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def blob_service(storage_connection_string) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(storage_connection_string)


@pytest.fixture
def container(blob_service):
    """A fresh, empty container for one test."""
    client = blob_service.get_container_client(f"t-{uuid.uuid4().hex[:20]}")
    client.create_container()
    yield client
