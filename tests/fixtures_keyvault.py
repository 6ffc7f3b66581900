"""Fixtures for the local Key Vault stand-in (and its managed-identity endpoint)."""

from __future__ import annotations

import pytest

from devtools.keyvault import KeyVaultStandIn, ManagedIdentityStandIn, StaticTokenCredential

SANDBOX_SECRET_NAME = "klaviyo-api-key"
SANDBOX_API_KEY = "pk_test_sandbox"

# Variables that would steer azure-identity away from the App Service identity endpoint.
_OTHER_IDENTITY_VARIABLES = (
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


@pytest.fixture
def key_vault():
    """A started vault holding ``klaviyo-api-key`` = ``pk_test_sandbox``; fresh per test."""
    with KeyVaultStandIn({SANDBOX_SECRET_NAME: SANDBOX_API_KEY}) as vault:
        yield vault


@pytest.fixture
def key_vault_client_kwargs(key_vault) -> dict:
    """What ``KeyVaultApiKeys`` / ``api_key_provider`` need to talk to ``key_vault``."""
    return {
        "credential": StaticTokenCredential(key_vault.token),
        "verify_challenge_resource": False,  # the challenge names vault.azure.net, not 127.0.0.1
        "connection_verify": key_vault.ca_pem_path,
        "retry_total": 0,  # a failing call would otherwise retry for ~5 s
    }


@pytest.fixture
def managed_identity(key_vault, monkeypatch):
    """An App Service style identity endpoint issuing ``key_vault``'s token, set in the env."""
    with ManagedIdentityStandIn(key_vault.token) as identity:
        for name in (*_OTHER_IDENTITY_VARIABLES, "AZURE_CLIENT_ID"):
            monkeypatch.delenv(name, raising=False)
        for name, value in identity.env.items():
            monkeypatch.setenv(name, value)
        yield identity
