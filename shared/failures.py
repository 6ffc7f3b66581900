"""One line a user can act on, for any error that reaches the CLI, the schedule or the API.

The app's own errors (:class:`~shared.errors.ExportError`) already read that way. Errors of
the layers below are translated here, and only here:

    azure.core HttpResponseError     -> the setting, container or blob, and what to check
        ResourceNotFoundError           (container or blob not found)
        ClientAuthenticationError       (wrong key, no identity, missing role)
    azure.core ServiceRequestError   -> the storage endpoint that cannot be reached
    OSError                          -> the file and the system's reason
    anything else                    -> its type only: its text is not ours to show

Nothing here quotes a connection string, an account key or a URL's query (a SAS token):
endpoints are shown as scheme, host and path, and storage answers by their error code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.errors import ExportError
from shared.redact import redact_url
from shared.settings import Settings, StorageConnection

__all__ = ["describe_failure"]

_HOST_PORT = re.compile(r"host='([^']+)', port=(\d+)")
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")
_NAME_CODES = {"InvalidResourceName", "InvalidUri", "OutOfRangeInput", "InvalidInput"}
_BOTH = "AzureWebJobsStorage and SEGMENTS_STORAGE"
_KEY_CODES = {"AuthenticationFailed", "AuthorizationFailure", "InvalidAuthenticationInfo"}


def describe_failure(exc: BaseException, settings: Settings | None = None) -> str:
    """``exc`` as one line naming the setting, container, blob or file to look at."""
    if isinstance(exc, ExportError):
        return str(exc)
    if isinstance(exc, HttpResponseError) and exc.response is not None:
        return _storage_answer(exc, _Endpoints.of(settings))
    if isinstance(exc, ClientAuthenticationError):
        # No answer from storage: the credential itself could not be used.
        return (
            f"could not authenticate to storage ({_first_line(exc)}); check the account key "
            f"in {_BOTH}, or sign in (az login) for an identity-based one"
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return _unreachable(exc, _Endpoints.of(settings))
    if isinstance(exc, AzureError):
        return f"Azure SDK error {type(exc).__name__}: {_first_line(exc)}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or _first_line(exc)}"
    return f"unexpected {type(exc).__name__} (rerun with --verbose to see where)"


# -- storage answers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Endpoint:
    setting: str
    url: str  # the blob service URL, no trailing "/"


@dataclass(frozen=True, slots=True)
class _Endpoints:
    endpoints: tuple[_Endpoint, ...]
    state_container: str | None

    @classmethod
    def of(cls, settings: Settings | None) -> _Endpoints:
        if settings is None:
            return cls((), None)
        found = [
            _Endpoint(conn.setting, url)
            for conn in (settings.app_storage, settings.segments_storage)
            if (url := _service_url(conn))
        ]
        return cls(tuple(found), settings.state_container)

    def locate(self, url: str) -> tuple[str | None, str, str]:
        """(setting, container, blob) of a request URL; the setting when it can be told."""
        plain = redact_url(url)  # the query is not needed, and may hold a SAS token
        matches = [e for e in self.endpoints if plain.startswith(e.url + "/")]
        base = matches[0].url if matches else _account_root(plain)
        container, _, blob = unquote(plain[len(base) :]).lstrip("/").partition("/")
        setting = None
        if len({e.setting for e in matches}) == 1:
            setting = matches[0].setting
        elif matches:  # both settings use one account (Azurite): the container tells them apart
            state = container == self.state_container
            setting = "AzureWebJobsStorage" if state else "SEGMENTS_STORAGE"
        return setting, container, blob

    def by_host(self, host: str, port: int) -> list[_Endpoint]:
        """The endpoints at ``host:port`` (the SDK names both when it cannot connect)."""
        found = []
        for endpoint in self.endpoints:
            parts = urlsplit(endpoint.url)
            default = 443 if parts.scheme == "https" else 80
            if parts.hostname == host and (parts.port or default) == port:
                found.append(endpoint)
        return found


def _service_url(connection: StorageConnection) -> str | None:
    if connection.blob_service_uri:
        return redact_url(connection.blob_service_uri).rstrip("/")
    try:
        from shared.storage import blob_service

        return redact_url(blob_service(connection).url).rstrip("/")
    except (ValueError, ExportError):
        return None


def _account_root(url: str) -> str:
    parts = urlsplit(url)
    root = f"{parts.scheme}://{parts.netloc}"
    if ".blob." in (parts.hostname or ""):
        return root  # <account>.blob.core.windows.net: the account is in the host name
    # Path-style (Azurite, an IP address): the account is the first path segment.
    return f"{root}/{parts.path.lstrip('/').split('/', 1)[0]}"


def _storage_answer(exc: HttpResponseError, endpoints: _Endpoints) -> str:
    setting, container, blob = endpoints.locate(exc.response.request.url)
    code = str(getattr(exc.error_code, "value", exc.error_code) or "")
    status = exc.status_code
    where = f"{container}/{blob}" if blob else container
    of_setting = f" of {setting}" if setting else ""
    if code == "ContainerNotFound":
        hint = _container_hint(setting)
        return f"container {container!r} not found in the storage account{of_setting}{hint}"
    if code == "BlobNotFound" or (status == 404 and blob):
        return f"blob {where!r} not found in the storage account{of_setting}"
    if code in _NAME_CODES:
        return f"{where!r} is not a valid container or blob name ({code}, storage{of_setting})"
    if code in _KEY_CODES or isinstance(exc, ClientAuthenticationError):
        return (
            f"the storage account{of_setting} refused the credentials ({status} {code}): check "
            f"the account key in {setting or _BOTH}"
        )
    if status == 403:
        return (
            f"the storage account{of_setting} denied access to {where!r} ({code or status}): "
            "the identity needs a Storage Blob Data role on that container"
        )
    return f"storage answered {status} {code or ''} for {where!r}{of_setting}".replace("  ", " ")


def _container_hint(setting: str | None) -> str:
    if setting == "SEGMENTS_STORAGE":
        return " (check source.container in the definition)"
    if setting == "AzureWebJobsStorage":
        return " (check STATE_CONTAINER)"
    return ""


def _unreachable(exc: AzureError, endpoints: _Endpoints) -> str:
    text = _first_line(exc)
    found = _HOST_PORT.search(text)
    reason = _ERRNO.sub("", text.rsplit(": ", 1)[-1]).strip() or type(exc).__name__
    if found is None:
        return f"cannot reach storage ({reason}); check {_BOTH}"
    host, port = found.groups()
    named = sorted({e.setting for e in endpoints.by_host(host, int(port))})
    setting = " and ".join(named) if named else _BOTH
    return f"cannot reach storage at {host}:{port} ({reason}); check {setting}"


def _first_line(exc: BaseException) -> str:
    return _one_line(str(getattr(exc, "message", None) or exc))


def _one_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 400 else line[:397] + "..."
