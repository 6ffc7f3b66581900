"""Klaviyo private API keys: from Key Vault in Azure, from one local setting only for local runs.

Each export's connection names a Key Vault secret; ``get_api_key(secret_name)`` returns
its value. The key is cached for ``KEY_VAULT_CACHE_SECONDS`` so a rotated key is picked
up after that long, and it never reaches a log line, a repr or an exception message.
SDK errors are turned into ``SecretError`` in one place (``KeyVaultApiKeys._secret_error``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, Self, runtime_checkable
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

from shared.errors import SecretError
from shared.settings import Settings

__all__ = [
    "ApiKeyProvider",
    "KeyVaultApiKeys",
    "LocalApiKey",
    "api_key_provider",
    "check_secret_name",
]

logger = logging.getLogger(__name__)

# Key Vault's own rule for object names.
_SECRET_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
_ROLE_HINT = "grant the app's identity 'Key Vault Secrets User' on the vault"
_REJECTED_HINT = "the vault rejected the app's token; check the identity's tenant"


@runtime_checkable
class ApiKeyProvider(Protocol):
    """Gives the Klaviyo API key stored under a secret name. Blocking: call it in a thread."""

    def get_api_key(self, secret_name: str) -> str: ...


def check_secret_name(name: str) -> str:
    """Return ``name`` if Key Vault accepts it as a secret name, else raise ``SecretError``."""
    if isinstance(name, str) and _SECRET_NAME.fullmatch(name):
        return name
    if isinstance(name, str) and name.startswith("pk_"):
        # Someone pasted the key where its secret's name belongs: don't echo it back.
        raise SecretError(
            "the Key Vault secret name looks like a Klaviyo private key itself: store the key "
            "in Key Vault and give the secret's name instead"
        )
    shown = repr(name[:40] + "…" if isinstance(name, str) and len(name) > 40 else name)
    raise SecretError(
        f"invalid Key Vault secret name {shown}: use 1-127 letters, digits and hyphens"
    )


class _Cached:
    """One cached secret value; slotted and masked so no dump or repr shows the key."""

    __slots__ = ("expires_at", "value")

    def __init__(self, value: str, expires_at: float) -> None:
        self.value = value
        self.expires_at = expires_at

    def __repr__(self) -> str:
        return f"_Cached(<masked>, expires_at={self.expires_at})"


class KeyVaultApiKeys:
    """Reads API keys from Key Vault secrets through ``SecretClient``, with a TTL cache.

    Without ``credential``, ``DefaultAzureCredential`` is used: the managed identity in
    Azure (a user-assigned one when ``AZURE_CLIENT_ID`` is set), a developer login locally.
    ``client_kwargs`` go to ``SecretClient`` (e.g. ``retry_total``, ``connection_verify``).
    Nothing connects until the first ``get_api_key``. Safe to share between threads.
    """

    def __init__(
        self,
        vault_url: str,
        *,
        credential: TokenCredential | None = None,
        cache_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        **client_kwargs: Any,
    ) -> None:
        parts = urlsplit(vault_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"vault_url must be an https URL, not {vault_url!r}")
        if cache_seconds < 0:
            raise ValueError("cache_seconds must be >= 0")
        if client_kwargs.get("logging_enable"):
            # The SDK's network trace logs response bodies, i.e. the secret values.
            raise ValueError("logging_enable would log secret values; it is not allowed here")
        self.vault_url = vault_url.rstrip("/")
        self.cache_seconds = cache_seconds
        self._host = parts.netloc
        self._credential = credential
        self._owns_credential = credential is None
        self._clock = clock
        self._client_kwargs = client_kwargs
        self._client: SecretClient | None = None
        self._lock = threading.Lock()  # guards _client, _credential and _name_locks
        self._name_locks: dict[str, threading.Lock] = {}
        self._cache: dict[str, _Cached] = {}

    def __repr__(self) -> str:
        return f"KeyVaultApiKeys({self.vault_url!r}, cache_seconds={self.cache_seconds})"

    def get_api_key(self, secret_name: str) -> str:
        """The current value of ``secret_name``; fetched at most once per ``cache_seconds``."""
        check_secret_name(secret_name)
        # One lock per name: concurrent runs of the same connection fetch once, while
        # other connections' secrets are not held up behind a slow fetch.
        with self._lock_for(secret_name):
            cached = self._cache.get(secret_name)
            if cached is not None and self._clock() < cached.expires_at:
                return cached.value
            value = self._fetch(secret_name)
            self._cache[secret_name] = _Cached(value, self._clock() + self.cache_seconds)
            return value

    def invalidate(self, secret_name: str | None = None) -> None:
        """Forget one cached key (or all), e.g. after Klaviyo rejected it as revoked."""
        if secret_name is None:
            self._cache.clear()
        else:
            self._cache.pop(secret_name, None)

    def close(self) -> None:
        """Close the SDK client, and the credential if this object created it."""
        with self._lock:
            client, self._client = self._client, None
            credential = self._credential if self._owns_credential else None
            if self._owns_credential:
                self._credential = None
        if client is not None:
            client.close()
        if credential is not None:
            credential.close()  # type: ignore[attr-defined]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lock_for(self, secret_name: str) -> threading.Lock:
        with self._lock:
            return self._name_locks.setdefault(secret_name, threading.Lock())

    def _get_client(self) -> SecretClient:
        with self._lock:
            if self._client is None:
                if self._credential is None:
                    self._credential = DefaultAzureCredential()
                self._client = SecretClient(self.vault_url, self._credential, **self._client_kwargs)
            return self._client

    def _fetch(self, secret_name: str) -> str:
        try:
            secret = self._get_client().get_secret(secret_name)
        except AzureError as exc:
            raise self._secret_error(secret_name, exc) from exc
        if not secret.value:
            raise SecretError(f"Key Vault secret {secret_name!r} in {self.vault_url} is empty")
        logger.info(
            "fetched Key Vault secret %s from %s (version %s)",
            secret_name,
            self._host,
            secret.properties.version,
        )
        return secret.value

    def _secret_error(self, secret_name: str, exc: AzureError) -> SecretError:
        """The one place where the SDK's errors become the reason a run fails."""
        what = f"Key Vault secret {secret_name!r}"
        status = getattr(exc, "status_code", None)
        if isinstance(exc, ResourceNotFoundError):
            return SecretError(f"{what} not found in {self.vault_url}")
        if isinstance(exc, HttpResponseError) and status in (401, 403):
            hint = _ROLE_HINT if status == 403 else _REJECTED_HINT
            return SecretError(f"access to {what} denied ({status}): {_reason(exc)} — {hint}")
        if isinstance(exc, ClientAuthenticationError):
            # Raised by the credential before any request reached the vault.
            return SecretError(
                f"no credential could get a token for {self.vault_url} to read {what} "
                f"(managed identity in Azure, `az login` locally): {exc.message}"
            )
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return SecretError(f"Key Vault {self.vault_url} is unreachable reading {what}: {exc}")
        if isinstance(exc, HttpResponseError):
            return SecretError(f"Key Vault answered {status} reading {what}: {_reason(exc)}")
        return SecretError(f"reading {what} from {self.vault_url} failed: {exc.message}")


def _reason(exc: HttpResponseError) -> str:
    """Key Vault's own explanation (error.message) when it sent one."""
    error = getattr(exc, "error", None)
    message = getattr(error, "message", None)
    return str(message or exc.reason or exc.message)


class LocalApiKey:
    """One API key from the local setting ``KLAVIYO_API_KEY``: for local runs only."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value or not value.strip():
            raise SecretError("the local API key (KLAVIYO_API_KEY) is empty")
        self._value = value.strip()

    def __repr__(self) -> str:
        return "LocalApiKey(<masked>)"

    def get_api_key(self, secret_name: str) -> str:
        """The local key, whatever the secret name (still checked, so Azure will accept it)."""
        check_secret_name(secret_name)
        return self._value


def api_key_provider(
    settings: Settings, *, credential: TokenCredential | None = None, **client_kwargs: Any
) -> ApiKeyProvider:
    """Key Vault when ``KEY_VAULT_URL`` is set; else ``KLAVIYO_API_KEY``; else SecretError."""
    if settings.key_vault_url:
        if settings.local_api_key:
            logger.warning("KLAVIYO_API_KEY is set but ignored: KEY_VAULT_URL is set")
        return KeyVaultApiKeys(
            settings.key_vault_url,
            credential=credential,
            cache_seconds=settings.key_vault_cache_seconds,
            **client_kwargs,
        )
    if settings.local_api_key:
        logger.warning(
            "the Klaviyo API key comes from the local setting KLAVIYO_API_KEY because "
            "KEY_VAULT_URL is not set (local use only)"
        )
        return LocalApiKey(settings.local_api_key)
    raise SecretError(
        "no Klaviyo API key source: set KEY_VAULT_URL (each connection names its Key Vault "
        "secret), or, for local runs only, KLAVIYO_API_KEY"
    )
