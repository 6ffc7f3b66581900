"""Who may do what in the HTTP API: Entra ID app roles from App Service authentication.

App Service authentication (``authsettingsV2`` in infra/) turns away callers without a valid
token for the API's app registration, and hands the app the caller's claims in the
``X-MS-CLIENT-PRINCIPAL`` header: base64 of ``{"auth_typ", "claims": [{"typ", "val"}],
"name_typ", "role_typ"}``. External callers cannot set that header; the platform strips it.

    Exports.Admin         PUT/DELETE definitions; list, read and run every export
    Exports.Contributor   list, read and run exports whose connection.access is "contributors"
    neither               403 naming the missing role; no or malformed header: 401

Locally there is no platform in front: ``API_AUTH_DISABLED=true`` turns the check off and
every caller acts as an administrator (the worker logs that at start).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import azure.functions as func
import orjson

from shared.definitions import ExportDefinition
from shared.settings import Settings

__all__ = [
    "ADMIN",
    "CONTRIBUTOR",
    "LOCAL",
    "PRINCIPAL_HEADER",
    "SCHEDULE",
    "AuthError",
    "Principal",
    "caller",
    "parse_principal",
    "require",
    "require_export",
]

ADMIN = "Exports.Admin"
CONTRIBUTOR = "Exports.Contributor"
PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
_MAX_HEADER = 64 * 1024  # the platform's own header limit is far below this

# Claim types after App Service's default claims mapping, and their raw token names.
_ROLE_CLAIMS = frozenset(
    {"roles", "role", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"}
)
_OBJECT_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
# A display name first: a person's "name", then their sign-in name.
_NAME_CLAIMS = (
    "name",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
    "preferred_username",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "upn",
)
_APP_ID_CLAIMS = ("azp", "appid")  # an application calling with its own token has no name
_MAX_VALUE = 256  # what is kept of a name or id in a run record


class AuthError(Exception):
    """The caller is not signed in (401) or lacks a role (403); ``extra`` goes in the body."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.extra = extra


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller as the platform vouches for it."""

    name: str | None
    object_id: str | None
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    def may_use(self, definition: ExportDefinition) -> bool:
        """Administrators use every connection; contributors only those open to them."""
        if self.is_admin:
            return True
        return CONTRIBUTOR in self.roles and definition.connection.access == "contributors"

    def as_record(self) -> dict[str, str | None]:
        """Who started a run, as the run record and the report keep it."""
        return {"name": self.name, "object_id": self.object_id}


# Every caller when API_AUTH_DISABLED=true (local runs), and who starts scheduled runs.
LOCAL = Principal(name="local (API_AUTH_DISABLED)", object_id=None, roles=frozenset({ADMIN}))
SCHEDULE: dict[str, str | None] = {"name": "schedule", "object_id": None}


def _unauthenticated(reason: str) -> AuthError:
    return AuthError(401, "unauthenticated", reason)


def parse_principal(header: str) -> Principal:
    """The principal in an ``X-MS-CLIENT-PRINCIPAL`` value; AuthError (401) if malformed."""
    text = header.strip()
    if len(text) > _MAX_HEADER:
        raise _unauthenticated(f"{PRINCIPAL_HEADER} is over {_MAX_HEADER // 1024} KB")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        doc = orjson.loads(raw)
    except (binascii.Error, ValueError):  # orjson.JSONDecodeError is a ValueError
        raise _unauthenticated(f"{PRINCIPAL_HEADER} is not base64-encoded JSON") from None
    claims = doc.get("claims") if isinstance(doc, dict) else None
    if not isinstance(claims, list) or not all(_is_claim(c) for c in claims):
        raise _unauthenticated(
            f"{PRINCIPAL_HEADER} must be an object with a list of claims {{typ, val}}"
        )
    role_types = set(_ROLE_CLAIMS)
    if isinstance(doc.get("role_typ"), str):
        role_types.add(doc["role_typ"])
    name_types = list(_NAME_CLAIMS)
    if isinstance(doc.get("name_typ"), str):
        name_types.insert(1, doc["name_typ"])
    values: dict[str, list[str]] = {}
    for claim in claims:
        values.setdefault(claim["typ"], []).append(claim["val"])
    roles = {role for typ in role_types for val in values.get(typ, ()) for role in _roles(val)}
    name = _first(values, name_types)
    if name is None and (app_id := _first(values, _APP_ID_CLAIMS)):
        name = f"application {app_id}"
    return Principal(name=name, object_id=_first(values, _OBJECT_ID_CLAIMS), roles=frozenset(roles))


def _is_claim(claim: Any) -> bool:
    return (
        isinstance(claim, dict)
        and isinstance(claim.get("typ"), str)
        and isinstance(claim.get("val"), str)
    )


def _roles(value: str) -> list[str]:
    # One role per claim is the rule; a JSON list in one claim is accepted too.
    if value.startswith("["):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return [value]
        return [v for v in parsed if isinstance(v, str)] if isinstance(parsed, list) else []
    return [value]


def _first(values: dict[str, list[str]], types: Any) -> str | None:
    for typ in types:
        for val in values.get(typ, ()):
            if val.strip():
                return val.strip()[:_MAX_VALUE]
    return None


def caller(req: func.HttpRequest, settings: Settings) -> Principal:
    """The signed-in caller; 401 without a (well-formed) principal header."""
    if settings.api_auth_disabled:
        return LOCAL
    header = req.headers.get(PRINCIPAL_HEADER)
    if not header:
        raise _unauthenticated(
            f"sign-in required: no {PRINCIPAL_HEADER} header (the API needs App Service "
            "authentication with Entra ID in front of it)"
        )
    return parse_principal(header)


def require(req: func.HttpRequest, settings: Settings, *, admin: bool = False) -> Principal:
    """The caller, if it holds a role that can do anything here (``admin``: Exports.Admin)."""
    principal = caller(req, settings)
    if admin and not principal.is_admin:
        raise AuthError(403, "forbidden", f"this needs the {ADMIN} app role", missing_role=ADMIN)
    if not principal.roles & {ADMIN, CONTRIBUTOR}:
        raise AuthError(
            403,
            "forbidden",
            f"this needs the {CONTRIBUTOR} or {ADMIN} app role",
            missing_role=CONTRIBUTOR,
        )
    return principal


def require_export(principal: Principal, definition: ExportDefinition) -> None:
    """403 unless ``principal`` may read and run ``definition``."""
    if not principal.may_use(definition):
        raise AuthError(
            403,
            "forbidden",
            f"export {definition.name!r} uses a connection for administrators only: "
            f"this needs the {ADMIN} app role",
            missing_role=ADMIN,
        )
