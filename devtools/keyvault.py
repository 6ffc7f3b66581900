"""A local HTTPS Key Vault stand-in (secrets only) and a managed-identity token endpoint.

Both are real servers on 127.0.0.1, so the real ``azure-keyvault-secrets`` and
``azure-identity`` code runs against them unpatched: the vault speaks TLS (certificates
from a throwaway ``trustme`` CA), answers the first unauthenticated request with Key
Vault's bearer challenge, and then requires ``Authorization: Bearer <token>``.

Clients need ``verify_challenge_resource=False`` (the challenge names
``https://vault.azure.net``, not 127.0.0.1) and ``connection_verify=<ca_pem_path>``.
"""

from __future__ import annotations

import contextlib
import json
import secrets as _secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import trustme
from azure.core.credentials import AccessToken

__all__ = [
    "KeyVaultStandIn",
    "ManagedIdentityStandIn",
    "StaticTokenCredential",
]

VAULT_RESOURCE = "https://vault.azure.net"
_TOKEN_LIFETIME = 3600


class StaticTokenCredential:
    """A credential that always hands out the same bearer token (tests and the demo only)."""

    def __init__(self, token: str = "test-token") -> None:  # noqa: S107 - a test token
        self._token = token
        self.scopes: list[str] = []

    def __repr__(self) -> str:
        return "StaticTokenCredential(<token>)"

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """Return the static token; ``tenant_id``, ``claims`` and ``enable_cae`` are ignored."""
        self.scopes.extend(scopes)
        # The Key Vault policy asks again when fewer than 300 s are left, so give an hour.
        return AccessToken(self._token, int(time.time()) + _TOKEN_LIFETIME)


# --------------------------------------------------------------------------------------
# The HTTP plumbing shared by both stand-ins


class _Server(ThreadingHTTPServer):
    """A fast loopback HTTP(S) server whose handlers call back into their stand-in."""

    request_queue_size = 128  # the default 5 drops bursts of parallel connections
    daemon_threads = True
    # The SDK keeps connections alive; stop() closes them instead of waiting for them.
    block_on_close = False

    def __init__(
        self,
        respond: Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]],
        tls: ssl.SSLContext | None,
    ) -> None:
        self.respond = respond
        self.tls = tls
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            # The handshake happens in the worker thread (_Handler.setup), not in the
            # accept loop, so one slow client cannot stall every other connection.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._connections_lock:
            self._connections.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping connections (or failing the handshake) is normal here.
        pass

    def close_connections(self) -> None:
        """Cut kept-alive connections so a stopped server really is down for its clients."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for sock in connections:
            with contextlib.suppress(OSError):  # the client may have gone already
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    # Headers and body go out in separate writes: with Nagle on, each reply waits ~40 ms.
    disable_nagle_algorithm = True
    timeout = 30
    server: _Server

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def do_GET(self) -> None:
        status, headers, body = self.server.respond(self)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests read request counts, not an access log


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> tuple:
    body = json.dumps(payload).encode()
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> tuple:
    return _json(status, {"error": {"code": code, "message": message}}, headers)


class _Background:
    """Start/stop a _Server in a background thread; use as a context manager."""

    def __init__(self) -> None:
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _make_server(self) -> _Server:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._server.server_address[1]

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        self._server = self._make_server()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # the 0.5 s default makes stop() slow
            name=type(self).__name__,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------
# Key Vault


class KeyVaultStandIn(_Background):
    """A Key Vault that serves ``GET /secrets/<name>[/<version>]`` over HTTPS on 127.0.0.1.

    ``request_count(name)`` counts the authenticated requests that reached a secret
    (whatever their answer), which is what a cache test needs to watch;
    ``request_count()`` counts everything, challenges included.
    """

    def __init__(
        self,
        secrets: Mapping[str, str] | None = None,
        *,
        token: str = "test-token",  # noqa: S107 - a test token
        tenant: str = "00000000-0000-0000-0000-000000000000",
    ) -> None:
        super().__init__()
        self.token = token
        self.tenant = tenant
        self._lock = threading.Lock()
        self._versions: dict[str, list[tuple[str, str]]] = {}  # name -> [(version, value)]
        self._denied: set[str] = set()
        self._counts: Counter[str] = Counter()
        self._total = 0
        self._ca = trustme.CA()
        self._ca_dir: str | None = None
        for name, value in (secrets or {}).items():
            self.set_secret(name, value)

    def __repr__(self) -> str:
        where = self.url if self._server else "stopped"
        return f"KeyVaultStandIn({where}, {len(self._versions)} secrets)"

    # -- control -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_pem_path(self) -> str:
        """The CA certificate (PEM) to pass as ``connection_verify``."""
        if self._ca_dir is None:
            self._ca_dir = tempfile.mkdtemp(prefix="keyvault-ca-")
            # Kept after stop(): clients still point at it, e.g. to see the vault as down.
            weakref.finalize(self, shutil.rmtree, self._ca_dir, ignore_errors=True)
            self._ca.cert_pem.write_to_path(str(Path(self._ca_dir) / "ca.pem"))
        return str(Path(self._ca_dir) / "ca.pem")

    def set_secret(self, name: str, value: str) -> str:
        """Add a new version of ``name`` (it becomes the current one); returns the version."""
        version = uuid.uuid4().hex
        with self._lock:
            self._versions.setdefault(name, []).append((version, value))
        return version

    def deny(self, name: str) -> None:
        """Answer 403 for ``name`` from now on, as for an identity without get permission."""
        with self._lock:
            self._denied.add(name)

    def allow(self, name: str) -> None:
        with self._lock:
            self._denied.discard(name)

    def request_count(self, name: str | None = None) -> int:
        """Authenticated requests that reached secret ``name``; without a name, every request."""
        with self._lock:
            return self._total if name is None else self._counts[name]

    # -- serving -----------------------------------------------------------------------

    def _make_server(self) -> _Server:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert("127.0.0.1", "localhost").configure_cert(tls)
        return _Server(self._respond, tls)

    def _challenge(self) -> dict[str, str]:
        return {
            "WWW-Authenticate": (
                f'Bearer authorization="https://login.microsoftonline.com/{self.tenant}", '
                f'resource="{VAULT_RESOURCE}"'
            )
        }

    def _respond(self, request: BaseHTTPRequestHandler) -> tuple:
        with self._lock:
            self._total += 1
        parts = urlsplit(request.path)
        segments = parts.path.strip("/").split("/")
        if not (segments[0] == "secrets" and len(segments) in (2, 3)):
            return _error(404, "NotFound", f"no such path {parts.path}")
        if "api-version" not in parse_qs(parts.query):
            return _error(400, "BadParameter", "The api-version query parameter is missing")
        auth = request.headers.get("Authorization")
        if auth is None:
            # Key Vault's first answer: tells the SDK which tenant and resource to get a token for.
            return _error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer token.",
                self._challenge(),
            )
        if not _secrets.compare_digest(auth, f"Bearer {self.token}"):
            return _error(401, "Unauthorized", "AKV10032: Invalid issuer.", self._challenge())
        name = segments[1]
        version = segments[2] if len(segments) == 3 else None
        return self._secret(name, version)

    def _secret(self, name: str, version: str | None) -> tuple:
        with self._lock:
            self._counts[name] += 1
            denied = name in self._denied
            versions = self._versions.get(name, [])
        if denied:
            return _error(
                403,
                "Forbidden",
                f"The user, group or application 'appid=;oid=;iss=https://sts.windows.net/"
                f"{self.tenant}/' does not have secrets get permission on key vault "
                f"'127.0.0.1;location=local'.",
            )
        found = [v for v in versions if version in (None, v[0])]
        if not found:
            return _error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {name}{'/' + version if version else ''} "
                "was not found in this key vault.",
            )
        found_version, value = found[-1]
        now = int(time.time())
        return _json(
            200,
            {
                "value": value,
                "id": f"{self.url}/secrets/{name}/{found_version}",
                "attributes": {
                    "enabled": True,
                    "created": now,
                    "updated": now,
                    "recoveryLevel": "Recoverable+Purgeable",
                    "recoverableDays": 90,
                },
                "tags": {},
            },
        )


# --------------------------------------------------------------------------------------
# Managed identity (App Service / Azure Functions style)


class ManagedIdentityStandIn(_Background):
    """The App Service identity endpoint: set ``env`` and ``ManagedIdentityCredential`` uses it.

    ``requests`` records the query of each token request (``resource``, and ``client_id``
    when a user-assigned identity is asked for).
    """

    def __init__(self, token: str = "test-token", *, header: str | None = None) -> None:  # noqa: S107
        super().__init__()
        self.token = token
        self.header = header or uuid.uuid4().hex
        self.requests: list[dict[str, str]] = []

    def __repr__(self) -> str:
        return f"ManagedIdentityStandIn({self.endpoint if self._server else 'stopped'})"

    @property
    def endpoint(self) -> str:
        # Plain http on loopback, as the real endpoint inside an App Service sandbox is.
        return f"http://127.0.0.1:{self.port}/msi/token"

    @property
    def env(self) -> dict[str, str]:
        """The environment variables App Service sets for its identity endpoint."""
        return {"IDENTITY_ENDPOINT": self.endpoint, "IDENTITY_HEADER": self.header}

    def _make_server(self) -> _Server:
        return _Server(self._respond, None)

    def _respond(self, request: BaseHTTPRequestHandler) -> tuple:
        parts = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path != "/msi/token":
            return _error(404, "NotFound", f"no such path {parts.path}")
        header = request.headers.get("X-IDENTITY-HEADER", "")
        if not _secrets.compare_digest(header, self.header):
            return _json(
                401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"}
            )
        self.requests.append(query)
        return _json(
            200,
            {
                "access_token": self.token,
                "expires_on": str(int(time.time()) + _TOKEN_LIFETIME),
                "resource": query.get("resource", ""),
                "token_type": "Bearer",
                "client_id": query.get("client_id", "system-assigned"),
            },
        )
