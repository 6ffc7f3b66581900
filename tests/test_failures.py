"""Errors of the layers below, as one line naming what to look at: real SDK errors from
Azurite, and the things that must never be shown (SAS tokens, keys, foreign text)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

from devtools.azurite import ACCOUNT, ACCOUNT_KEY
from shared.errors import InputError
from shared.failures import describe_failure
from shared.settings import Settings


@pytest.fixture
def settings(storage_connection_string) -> Settings:
    return Settings.from_env(
        {
            "AzureWebJobsStorage": storage_connection_string,
            "SEGMENTS_STORAGE": storage_connection_string,
            "STATE_CONTAINER": "the-state",
        }
    )


def test_a_sas_token_in_the_request_url_is_never_shown(container, settings):
    sas = generate_container_sas(
        ACCOUNT,
        container.container_name,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    client = ContainerClient.from_container_url(f"{container.url}?{sas}")
    with pytest.raises(HttpResponseError) as caught:
        client.download_blob("CI/model.json").readall()
    message = describe_failure(caught.value, settings)
    assert message.startswith(f"blob '{container.container_name}/CI/model.json' not found")
    assert "sig=" not in message and sas not in message


def test_the_state_container_is_told_apart_on_a_shared_account(blob_service, settings):
    with pytest.raises(HttpResponseError) as caught:
        list(blob_service.get_container_client("the-state").list_blobs())
    message = describe_failure(caught.value, settings)
    assert "AzureWebJobsStorage" in message and "STATE_CONTAINER" in message


def test_a_credential_that_cannot_be_used_names_both_settings(settings):
    message = describe_failure(ClientAuthenticationError("no token\nline two"), settings)
    assert "\n" not in message and "AzureWebJobsStorage and SEGMENTS_STORAGE" in message


def test_the_apps_own_errors_and_files_read_as_they_are():
    assert describe_failure(InputError("bad", file="a.csv", line=3)) == "a.csv:3: bad"
    missing = FileNotFoundError(2, "No such file or directory", "vip.json")
    assert describe_failure(missing) == "vip.json: No such file or directory"


def test_the_text_of_an_unexpected_error_is_not_shown():
    # Its text is not ours: it could hold anything, a row value included.
    message = describe_failure(ValueError("jane@example.com"))
    assert "jane@example.com" not in message and "ValueError" in message
