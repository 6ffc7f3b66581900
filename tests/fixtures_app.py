"""Calling the function app as the host does, with App Service's principal header.

- ``indexed_functions()``: ``function_app.app`` indexed once per process (``get_functions()``
  may be called only once per app object), shared by every test module.
- ``principal_header(...)``: an ``X-MS-CLIENT-PRINCIPAL`` value as App Service builds it.
- ``call(name, method, url, ...)``: a real ``azure.functions.HttpRequest`` to one function.
- ``live_services(...)``: Services that can run exports against Azurite, the Klaviyo sandbox
  and the Key Vault stand-in, in a state container of their own.
"""

from __future__ import annotations

import base64
import functools
import json
import uuid
from typing import Any

import azure.functions as func

from shared.auth import ADMIN, CONTRIBUTOR, PRINCIPAL_HEADER
from shared.keyvault import KeyVaultApiKeys
from shared.service import Services
from shared.settings import Settings

__all__ = [
    "ADMIN_OID",
    "CONTRIBUTOR_OID",
    "admin_header",
    "call",
    "contributor_header",
    "indexed_functions",
    "live_services",
    "principal_header",
]

ADMIN_OID = "11111111-1111-4111-8111-111111111111"
CONTRIBUTOR_OID = "22222222-2222-4222-8222-222222222222"
ROLE_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
NAME_TYPE = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
OID_TYPE = "http://schemas.microsoft.com/identity/claims/objectidentifier"


@functools.cache
def indexed_functions() -> dict[str, Any]:
    from function_app import app

    return {fn.get_function_name(): fn for fn in app.get_functions()}


def principal_header(
    *roles: str,
    name: str | None = "Ada Lovelace",
    object_id: str | None = ADMIN_OID,
    role_claim: str = "roles",
    extra_claims: list[dict[str, str]] | None = None,
) -> str:
    """Base64 JSON in the shape App Service authentication injects for Entra ID."""
    claims = [
        {"typ": "aud", "val": "00000000-0000-4000-8000-0000000000aa"},
        {"typ": "iss", "val": "https://login.microsoftonline.com/tenant/v2.0"},
    ]
    if object_id:
        claims.append({"typ": OID_TYPE, "val": object_id})
    if name:
        claims.append({"typ": "name", "val": name})
    claims += [{"typ": role_claim, "val": role} for role in roles]
    claims += extra_claims or []
    doc = {"auth_typ": "aad", "claims": claims, "name_typ": NAME_TYPE, "role_typ": ROLE_TYPE}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def admin_header() -> str:
    return principal_header(ADMIN)


def contributor_header() -> str:
    return principal_header(CONTRIBUTOR, name="Casey Contributor", object_id=CONTRIBUTOR_OID)


def call(
    name: str,
    method: str,
    url: str,
    *,
    route: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    body: Any = b"",
    principal: str | None = None,
) -> tuple[func.HttpResponse, Any]:
    """Call function ``name`` with a real HttpRequest; returns (response, decoded JSON)."""
    headers = {"content-type": "application/json"}
    if principal is not None:
        headers[PRINCIPAL_HEADER] = principal
    request = func.HttpRequest(
        method,
        url,
        route_params=route or {},
        params=params or {},
        body=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers=headers,
    )
    response = indexed_functions()[name].get_user_function()(request)
    payload = json.loads(response.get_body()) if response.get_body() else None
    return response, payload


def live_services(
    storage_connection_string: str,
    klaviyo_url: str,
    key_vault: Any,
    key_vault_client_kwargs: dict[str, Any],
    **overrides: Any,
) -> Services:
    """Services for one test, with an empty run queue; ``overrides`` go to Services."""
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage": storage_connection_string,
            "SEGMENTS_STORAGE": storage_connection_string,
            "STATE_CONTAINER": f"state-{uuid.uuid4().hex[:12]}",
            "KEY_VAULT_URL": key_vault.url,
            "KLAVIYO_BASE_URL": klaviyo_url,
        }
    )
    services = Services.from_settings(
        settings,
        provider=KeyVaultApiKeys(settings.key_vault_url, **key_vault_client_kwargs),
        **{"run_options": {"poll_interval": 0.05}, **overrides},
    )
    services.queue.clear_messages()
    return services
