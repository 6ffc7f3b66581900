"""App settings, read once into a frozen object.

Every setting the code reads is named here, and only here; README.md,
local.settings.sample.json and infra/ list the same names (a test keeps them in step).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.errors import SettingsError
from shared.redact import has_credentials, redact_url

__all__ = [
    "DEFAULT_KLAVIYO_BASE_URL",
    "DEFAULT_KLAVIYO_REVISION",
    "SETTING_NAMES",
    "Settings",
    "StorageConnection",
    "check_klaviyo_base_url",
]

DEFAULT_KLAVIYO_BASE_URL = "https://a.klaviyo.com"
DEFAULT_KLAVIYO_REVISION = "2026-07-15"
DEFAULT_STATE_CONTAINER = "klaviyo-export"
DEFAULT_SECRET_CACHE_SECONDS = 300.0

# Identity-based connections follow the Functions convention: <PREFIX>__blobServiceUri etc.
_IDENTITY_SUFFIXES = ("blobServiceUri", "queueServiceUri", "accountName", "credential", "clientId")

SETTING_NAMES: tuple[str, ...] = (
    "AzureWebJobsStorage",
    *(f"AzureWebJobsStorage__{s}" for s in _IDENTITY_SUFFIXES),
    "SEGMENTS_STORAGE",
    *(f"SEGMENTS_STORAGE__{s}" for s in _IDENTITY_SUFFIXES),
    "STATE_CONTAINER",
    "EXPORT_SCHEDULE",
    "KEY_VAULT_URL",
    "KEY_VAULT_CACHE_SECONDS",
    "AZURE_CLIENT_ID",
    "KLAVIYO_BASE_URL",
    "KLAVIYO_REVISION",
    "KLAVIYO_API_KEY",
    "API_AUTH_DISABLED",
)


@dataclass(frozen=True, slots=True)
class StorageConnection:
    """How to reach one storage account: a connection string, or service URLs + identity."""

    setting: str
    connection_string: str | None = None
    blob_service_uri: str | None = None
    queue_service_uri: str | None = None
    client_id: str | None = None

    def __repr__(self) -> str:
        # Connection strings carry account keys: never let them reach a log line.
        kind = "connection string" if self.connection_string else self.blob_service_uri
        return f"StorageConnection({self.setting}: {kind})"

    @classmethod
    def from_env(cls, prefix: str, env: Mapping[str, str]) -> StorageConnection:
        value = env.get(prefix, "").strip()
        if value:
            if value.startswith("https://"):
                return cls(setting=prefix, blob_service_uri=value.rstrip("/"))
            return cls(setting=prefix, connection_string=value)
        account = env.get(f"{prefix}__accountName", "").strip()
        blob = env.get(f"{prefix}__blobServiceUri", "").strip()
        queue = env.get(f"{prefix}__queueServiceUri", "").strip()
        if account and not blob:
            blob = f"https://{account}.blob.core.windows.net"
        if account and not queue:
            queue = f"https://{account}.queue.core.windows.net"
        if not blob:
            raise SettingsError(
                prefix,
                f"not set: give a connection string, or {prefix}__blobServiceUri "
                f"(or {prefix}__accountName) for an identity-based connection",
            )
        client_id = env.get(f"{prefix}__clientId", "").strip() or None
        return cls(
            setting=prefix,
            blob_service_uri=blob.rstrip("/"),
            queue_service_uri=queue.rstrip("/") or None,
            client_id=client_id,
        )


def check_klaviyo_base_url(url: str) -> str:
    """Klaviyo's base URL must be https; plain http is allowed for a loopback sandbox only.

    Credentials (``user:password@``) or a query in it are refused: the key comes from Key
    Vault, and a URL is logged and shown. Errors show the URL redacted (see redact.py).
    """
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        parts, host = urlsplit(""), ""
    if has_credentials(url):
        raise SettingsError(
            "KLAVIYO_BASE_URL",
            f"{redact_url(url)} must not carry credentials, a query or a fragment "
            "(the Klaviyo key comes from Key Vault)",
        )
    loopback = host in {"localhost", "::1"} or host.startswith("127.")
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        return url.rstrip("/")
    raise SettingsError(
        "KLAVIYO_BASE_URL",
        f"{redact_url(url)} must be an https URL (http only for a loopback sandbox)",
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """The settings the app reads, validated."""

    app_storage: StorageConnection
    segments_storage: StorageConnection
    state_container: str = DEFAULT_STATE_CONTAINER
    key_vault_url: str | None = None
    key_vault_cache_seconds: float = DEFAULT_SECRET_CACHE_SECONDS
    klaviyo_base_url: str = DEFAULT_KLAVIYO_BASE_URL
    klaviyo_revision: str = DEFAULT_KLAVIYO_REVISION
    local_api_key: str | None = None
    # Local runs only: no App Service authentication in front, so no caller to check.
    api_auth_disabled: bool = False

    def __repr__(self) -> str:
        key = "set" if self.local_api_key else "unset"
        return (
            f"Settings(app_storage={self.app_storage!r}, "
            f"segments_storage={self.segments_storage!r}, "
            f"state_container={self.state_container!r}, "
            f"key_vault_url={self.key_vault_url!r}, klaviyo_base_url={self.klaviyo_base_url!r}, "
            f"klaviyo_revision={self.klaviyo_revision!r}, KLAVIYO_API_KEY {key}, "
            f"api_auth_disabled={self.api_auth_disabled})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        vault = env.get("KEY_VAULT_URL", "").strip() or None
        if vault and not vault.startswith("https://"):
            raise SettingsError("KEY_VAULT_URL", f"{redact_url(vault)} must be an https URL")
        try:
            cache = float(env.get("KEY_VAULT_CACHE_SECONDS", "") or DEFAULT_SECRET_CACHE_SECONDS)
        except ValueError:
            raise SettingsError("KEY_VAULT_CACHE_SECONDS", "must be a number of seconds") from None
        revision = env.get("KLAVIYO_REVISION", "").strip() or DEFAULT_KLAVIYO_REVISION
        return cls(
            app_storage=StorageConnection.from_env("AzureWebJobsStorage", env),
            segments_storage=StorageConnection.from_env("SEGMENTS_STORAGE", env),
            state_container=env.get("STATE_CONTAINER", "").strip() or DEFAULT_STATE_CONTAINER,
            key_vault_url=vault.rstrip("/") if vault else None,
            key_vault_cache_seconds=cache,
            klaviyo_base_url=check_klaviyo_base_url(
                env.get("KLAVIYO_BASE_URL", "").strip() or DEFAULT_KLAVIYO_BASE_URL
            ),
            klaviyo_revision=revision,
            local_api_key=env.get("KLAVIYO_API_KEY", "").strip() or None,
            api_auth_disabled=_flag("API_AUTH_DISABLED", env.get("API_AUTH_DISABLED", "")),
        )


def _flag(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text in ("", "false", "0", "no"):
        return False
    if text in ("true", "1", "yes"):
        return True
    raise SettingsError(name, "must be true or false")
