"""shared.keyvault against the local HTTPS Key Vault stand-in, through the real, unpatched SDK."""

from __future__ import annotations

import asyncio
import logging

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.identity import CredentialUnavailableError, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from devtools.keyvault import StaticTokenCredential
from shared.errors import SecretError
from shared.keyvault import (
    ApiKeyProvider,
    KeyVaultApiKeys,
    LocalApiKey,
    api_key_provider,
    check_secret_name,
)
from shared.settings import Settings
from tests.fixtures_keyvault import SANDBOX_API_KEY, SANDBOX_SECRET_NAME

STORAGE_ENV = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "SEGMENTS_STORAGE": "UseDevelopmentStorage=true",
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NoIdentity:
    """A credential in an environment without any identity, failing as azure-identity does."""

    def get_token(self, *scopes, **kwargs):
        raise CredentialUnavailableError(message="no managed identity endpoint in this environment")


@pytest.fixture
def keys(key_vault, key_vault_client_kwargs):
    with KeyVaultApiKeys(key_vault.url, **key_vault_client_kwargs) as provider:
        yield provider


def secret_error(provider: KeyVaultApiKeys, name: str = SANDBOX_SECRET_NAME) -> SecretError:
    with pytest.raises(SecretError) as info:
        provider.get_api_key(name)
    return info.value


# -- fetching and caching ------------------------------------------------------------------


def test_fetches_the_key_with_a_vault_token(keys, key_vault_client_kwargs):
    assert keys.get_api_key(SANDBOX_SECRET_NAME) == SANDBOX_API_KEY
    assert key_vault_client_kwargs["credential"].scopes == ["https://vault.azure.net/.default"]


def test_providers_satisfy_the_protocol(keys):
    assert isinstance(keys, ApiKeyProvider)
    assert isinstance(LocalApiKey("pk_local"), ApiKeyProvider)


def test_nothing_connects_before_the_first_key_is_asked_for(key_vault, key_vault_client_kwargs):
    KeyVaultApiKeys(key_vault.url, **key_vault_client_kwargs)
    assert key_vault.request_count() == 0
    assert key_vault_client_kwargs["credential"].scopes == []


def test_a_cached_key_does_not_call_the_vault_again(keys, key_vault):
    keys.get_api_key(SANDBOX_SECRET_NAME)
    keys.get_api_key(SANDBOX_SECRET_NAME)
    keys.get_api_key(SANDBOX_SECRET_NAME)
    assert key_vault.request_count(SANDBOX_SECRET_NAME) == 1


def test_a_rotated_key_is_picked_up_after_the_ttl(key_vault, key_vault_client_kwargs):
    clock = FakeClock()
    keys = KeyVaultApiKeys(key_vault.url, cache_seconds=300, clock=clock, **key_vault_client_kwargs)
    assert keys.get_api_key(SANDBOX_SECRET_NAME) == SANDBOX_API_KEY
    key_vault.set_secret(SANDBOX_SECRET_NAME, "pk_rotated")

    clock.now += 299
    assert keys.get_api_key(SANDBOX_SECRET_NAME) == SANDBOX_API_KEY
    clock.now += 1
    assert keys.get_api_key(SANDBOX_SECRET_NAME) == "pk_rotated"
    assert key_vault.request_count(SANDBOX_SECRET_NAME) == 2


def test_invalidate_forces_a_fresh_fetch(keys, key_vault):
    keys.get_api_key(SANDBOX_SECRET_NAME)
    key_vault.set_secret(SANDBOX_SECRET_NAME, "pk_rotated")
    keys.invalidate(SANDBOX_SECRET_NAME)
    assert keys.get_api_key(SANDBOX_SECRET_NAME) == "pk_rotated"


async def test_concurrent_callers_share_one_fetch(keys, key_vault):
    # As the engine calls it: from several runs at once, each in a worker thread.
    values = await asyncio.gather(
        *(asyncio.to_thread(keys.get_api_key, SANDBOX_SECRET_NAME) for _ in range(8))
    )
    assert values == [SANDBOX_API_KEY] * 8
    assert key_vault.request_count(SANDBOX_SECRET_NAME) == 1


# -- failures: each one a SecretError that says why, with the SDK's error as the cause ---------


def test_a_missing_secret_is_named(keys, key_vault):
    error = secret_error(keys, "no-such-secret")
    assert str(error) == f"Key Vault secret 'no-such-secret' not found in {key_vault.url}"
    assert isinstance(error.__cause__, ResourceNotFoundError)


def test_denied_access_says_which_role_to_grant(keys, key_vault):
    key_vault.deny(SANDBOX_SECRET_NAME)
    error = secret_error(keys)
    message = str(error)
    assert message.startswith(f"access to Key Vault secret '{SANDBOX_SECRET_NAME}' denied (403): ")
    assert "does not have secrets get permission" in message
    assert "Key Vault Secrets User" in message
    assert isinstance(error.__cause__, HttpResponseError)
    assert error.__cause__.status_code == 403


def test_a_token_the_vault_rejects_is_denied_401(key_vault, key_vault_client_kwargs):
    kwargs = {**key_vault_client_kwargs, "credential": StaticTokenCredential("wrong-token")}
    error = secret_error(KeyVaultApiKeys(key_vault.url, **kwargs))
    assert "denied (401)" in str(error)
    assert isinstance(error.__cause__, ClientAuthenticationError)


def test_no_identity_says_no_credential_could_get_a_token(key_vault, key_vault_client_kwargs):
    kwargs = {**key_vault_client_kwargs, "credential": NoIdentity()}
    error = secret_error(KeyVaultApiKeys(key_vault.url, **kwargs))
    assert "no credential could get a token" in str(error)
    assert "no managed identity endpoint" in str(error)
    assert isinstance(error.__cause__, ClientAuthenticationError)


def test_a_vault_that_went_down_is_unreachable(key_vault, key_vault_client_kwargs):
    keys = KeyVaultApiKeys(key_vault.url, cache_seconds=0, **key_vault_client_kwargs)
    assert keys.get_api_key(SANDBOX_SECRET_NAME) == SANDBOX_API_KEY
    url = key_vault.url
    key_vault.stop()
    error = secret_error(keys)
    assert str(error).startswith(f"Key Vault {url} is unreachable")
    assert isinstance(error.__cause__, ServiceRequestError)


def test_an_empty_secret_is_refused(keys, key_vault):
    key_vault.set_secret(SANDBOX_SECRET_NAME, "")
    assert "is empty" in str(secret_error(keys))


@pytest.mark.parametrize(
    "name", ["", "has_underscore", "has space", "dots.not.allowed", "x" * 128, "a/../b", "é"]
)
def test_bad_secret_names_are_refused_before_any_call(key_vault, key_vault_client_kwargs, name):
    keys = KeyVaultApiKeys(key_vault.url, **key_vault_client_kwargs)
    assert "invalid Key Vault secret name" in str(secret_error(keys, name))
    assert key_vault.request_count() == 0


def test_the_longest_valid_secret_name_is_accepted():
    assert check_secret_name("a-" + "9" * 125) == "a-" + "9" * 125


def test_a_key_pasted_as_the_secret_name_is_not_echoed():
    with pytest.raises(SecretError) as info:
        check_secret_name("pk_0123456789abcdef0123456789abcdef01")
    assert "0123456789abcdef" not in str(info.value)
    assert "looks like a Klaviyo private key" in str(info.value)


def test_client_options_that_would_log_bodies_are_refused(key_vault):
    with pytest.raises(ValueError, match="logging_enable"):
        KeyVaultApiKeys(key_vault.url, logging_enable=True)


# -- the key stays secret --------------------------------------------------------------------


def test_the_key_never_reaches_logs_reprs_or_errors(key_vault, key_vault_client_kwargs, caplog):
    caplog.set_level(logging.DEBUG)  # everything, the SDK's and urllib3's included
    clock = FakeClock()
    keys = KeyVaultApiKeys(key_vault.url, clock=clock, **key_vault_client_kwargs)
    seen: list[str] = [repr(keys), repr(LocalApiKey(SANDBOX_API_KEY))]

    keys.get_api_key(SANDBOX_SECRET_NAME)  # fetch
    keys.get_api_key(SANDBOX_SECRET_NAME)  # cache hit
    seen += [repr(keys), repr(keys._cache)]
    key_vault.deny(SANDBOX_SECRET_NAME)
    clock.now += 10_000
    for name in (SANDBOX_SECRET_NAME, "missing"):
        error = secret_error(keys, name)
        seen += [str(error), repr(error), str(error.__cause__), repr(error.__cause__)]

    seen += [record.getMessage() for record in caplog.records]
    seen.append(caplog.text)
    assert caplog.records, "expected the SDK and this module to log something"
    assert not [text for text in seen if SANDBOX_API_KEY in text]


def test_a_fetch_is_logged_once_with_name_and_vault_host(keys, key_vault, caplog):
    caplog.set_level(logging.DEBUG, logger="shared.keyvault")
    keys.get_api_key(SANDBOX_SECRET_NAME)
    keys.get_api_key(SANDBOX_SECRET_NAME)
    ours = [r for r in caplog.records if r.name == "shared.keyvault"]
    assert len(ours) == 1
    assert ours[0].levelno == logging.INFO
    assert SANDBOX_SECRET_NAME in ours[0].getMessage()
    assert f"127.0.0.1:{key_vault.port}" in ours[0].getMessage()


# -- choosing the source from settings -------------------------------------------------------


def test_settings_with_a_vault_url_use_key_vault(key_vault, key_vault_client_kwargs, caplog):
    env = {**STORAGE_ENV, "KEY_VAULT_URL": key_vault.url, "KEY_VAULT_CACHE_SECONDS": "60"}
    keys = api_key_provider(Settings.from_env(env), **key_vault_client_kwargs)
    assert isinstance(keys, KeyVaultApiKeys)
    assert keys.cache_seconds == 60
    assert keys.get_api_key(SANDBOX_SECRET_NAME) == SANDBOX_API_KEY
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_local_key_is_ignored_when_a_vault_url_is_set(
    key_vault, key_vault_client_kwargs, caplog
):
    env = {**STORAGE_ENV, "KEY_VAULT_URL": key_vault.url, "KLAVIYO_API_KEY": "pk_local_only"}
    keys = api_key_provider(Settings.from_env(env), **key_vault_client_kwargs)
    assert keys.get_api_key(SANDBOX_SECRET_NAME) == SANDBOX_API_KEY
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["KLAVIYO_API_KEY is set but ignored: KEY_VAULT_URL is set"]


def test_the_local_fallback_works_only_without_a_vault_and_says_so(caplog):
    keys = api_key_provider(Settings.from_env({**STORAGE_ENV, "KLAVIYO_API_KEY": "pk_local_only"}))
    assert isinstance(keys, LocalApiKey)
    assert keys.get_api_key(SANDBOX_SECRET_NAME) == "pk_local_only"
    assert repr(keys) == "LocalApiKey(<masked>)"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "local use only" in warning.getMessage()
    assert "KLAVIYO_API_KEY" in warning.getMessage()
    assert "pk_local_only" not in caplog.text


def test_the_local_fallback_still_checks_secret_names():
    with pytest.raises(SecretError, match="invalid Key Vault secret name"):
        LocalApiKey("pk_local_only").get_api_key("not_valid")


def test_no_key_source_at_all_explains_both_options():
    with pytest.raises(SecretError) as info:
        api_key_provider(Settings.from_env(STORAGE_ENV))
    assert "KEY_VAULT_URL" in str(info.value)
    assert "KLAVIYO_API_KEY" in str(info.value)


# -- managed identity, as in Azure (App Service / Functions identity endpoint) ---------------


def test_default_credential_uses_the_user_assigned_managed_identity(
    key_vault, key_vault_client_kwargs, managed_identity, monkeypatch
):
    client_id = "11111111-2222-3333-4444-555555555555"
    monkeypatch.setenv("AZURE_CLIENT_ID", client_id)
    kwargs = {k: v for k, v in key_vault_client_kwargs.items() if k != "credential"}
    with KeyVaultApiKeys(key_vault.url, **kwargs) as keys:  # no credential: DefaultAzureCredential
        assert keys.get_api_key(SANDBOX_SECRET_NAME) == SANDBOX_API_KEY
    [token_request] = managed_identity.requests
    assert token_request["resource"] == "https://vault.azure.net"
    assert token_request["client_id"] == client_id


def test_system_assigned_managed_identity_works_too(
    key_vault, key_vault_client_kwargs, managed_identity
):
    kwargs = {**key_vault_client_kwargs, "credential": ManagedIdentityCredential()}
    assert KeyVaultApiKeys(key_vault.url, **kwargs).get_api_key(SANDBOX_SECRET_NAME) == (
        SANDBOX_API_KEY
    )
    [token_request] = managed_identity.requests
    assert "client_id" not in token_request


# -- the stand-in itself -----------------------------------------------------------------------


def test_the_stand_in_serves_old_versions_by_id(key_vault, key_vault_client_kwargs):
    kwargs = dict(key_vault_client_kwargs)
    client = SecretClient(key_vault.url, kwargs.pop("credential"), **kwargs)
    first = client.get_secret(SANDBOX_SECRET_NAME).properties.version
    key_vault.set_secret(SANDBOX_SECRET_NAME, "pk_rotated")
    assert client.get_secret(SANDBOX_SECRET_NAME).value == "pk_rotated"
    assert client.get_secret(SANDBOX_SECRET_NAME, first).value == SANDBOX_API_KEY
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(SANDBOX_SECRET_NAME, "0" * 32)
