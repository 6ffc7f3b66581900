"""The HTTP API behind the function app's routes: validation, status codes, JSON bodies.

GET    /api/exports                          exports with their last run
PUT    /api/exports/{name}                   create or replace a definition (no run)
GET    /api/exports/{name}                   the definition
DELETE /api/exports/{name}                   remove it: no further runs
POST   /api/exports/{name}/runs[?dry_run=&full=&allow_mass_removal=]
                                             queue a run -> 202 + Location
GET    /api/exports/{name}/runs/{run_id}     the run's state and report
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func
import orjson
from azure.core.exceptions import AzureError

from shared import auth
from shared.definitions import MAX_DEFINITION_BYTES, decode_document, parse_definition
from shared.errors import DefinitionError, ExportError, InvalidNameError, NotFoundError
from shared.failures import describe_failure
from shared.names import check_export_name, check_run_id
from shared.runs import BlobRunStore
from shared.service import Services, get_services, start_run
from shared.state import ConcurrentUpdateError, StoredDefinitionError

__all__ = [
    "delete_export",
    "get_export",
    "get_run",
    "list_exports",
    "put_export",
    "start_export_run",
]

logger = logging.getLogger(__name__)

_JSON_TYPES = ("application/json",)  # and application/<anything>+json


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.extra = extra


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        orjson.dumps(body), status_code=status, mimetype="application/json", headers=headers
    )


def _error(exc: ApiError) -> func.HttpResponse:
    return _json(exc.status, {"error": {"code": exc.code, "message": str(exc), **exc.extra}})


def handled(handler: Callable[..., func.HttpResponse]) -> Callable[..., func.HttpResponse]:
    """Turn the app's errors into JSON error responses with the right status code."""

    def wrapper(req: func.HttpRequest, services: Services | None = None) -> func.HttpResponse:
        try:
            services = services or get_services()
            return handler(req, services)
        except ApiError as exc:
            return _error(exc)
        except auth.AuthError as exc:
            return _error(ApiError(exc.status, exc.code, str(exc), **exc.extra))
        except NotFoundError as exc:
            return _error(ApiError(404, "not_found", str(exc)))
        except InvalidNameError as exc:
            return _error(ApiError(400, f"invalid_{exc.field}", str(exc), field=exc.field))
        except StoredDefinitionError as exc:
            code = "invalid_stored_definition"
            return _error(ApiError(409, code, str(exc), field=exc.field))
        except DefinitionError as exc:
            return _error(ApiError(400, "invalid_definition", str(exc), field=exc.field))
        except ConcurrentUpdateError as exc:
            return _error(ApiError(412, "concurrent_update", str(exc)))
        except ExportError as exc:
            logger.exception("request failed")
            return _error(ApiError(500, "export_error", str(exc)))
        except AzureError as exc:
            # Storage trouble (unreachable, a missing container, a denied role): one line
            # naming the setting or container, never the SDK's text with its request dump.
            message = describe_failure(exc, services.settings if services else None)
            logger.error("request failed: %s", message)
            return _error(ApiError(503, "storage_error", message))

    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper


def _name(req: func.HttpRequest) -> str:
    return check_export_name(req.route_params.get("name", ""))


def _run_id(req: func.HttpRequest) -> str:
    return check_run_id(req.route_params.get("run_id", ""))


def _flag(req: func.HttpRequest, name: str) -> bool:
    value = (req.params.get(name) or "false").lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ApiError(
        400, "invalid_query", f"query parameter {name} must be true or false", field=name
    )


def _status_url(name: str, run_id: str) -> str:
    # Relative (RFC 9110 allows it in Location): a URL built from the request's Host
    # header would point wherever the caller says. "api" is host.json's routePrefix.
    return f"/api/exports/{name}/runs/{run_id}"


def _require_json(req: func.HttpRequest) -> None:
    value = req.headers.get("content-type") or ""
    media = value.split(";", 1)[0].strip().lower()
    structured = media.startswith("application/") and media.endswith("+json")
    if media not in _JSON_TYPES and not structured:
        raise ApiError(
            415,
            "unsupported_media_type",
            "the definition must be sent as JSON (content-type: application/json)",
            field="content-type",
        )


@handled
def list_exports(req: func.HttpRequest, services: Services) -> func.HttpResponse:
    """Every export with its list, state and last run (for contributors: theirs only);
    for administrators, definitions that cannot be used are listed beside them
    (``invalid``), each with the error that names the field."""
    principal = auth.require(req, services.settings)
    good, broken = services.definitions.scan()
    items = []
    for definition in good:
        if not principal.may_use(definition):
            continue
        status = services.runs.status(definition.name)
        items.append(
            {
                "name": definition.name,
                "enabled": definition.enabled,
                "list_id": definition.destination.list_id,
                "segment": definition.source.segment,
                "active_run_id": status.get("active_run_id"),
                "last_run": status.get("last_run"),
                "last_success": status.get("last_success"),
                "schedule_error": status.get("schedule_error"),
            }
        )
    # A broken definition's connection (and so who may see it) is unknown: admins only.
    invalid = [b.as_dict() for b in broken] if principal.is_admin else []
    return _json(200, {"exports": items, "invalid": invalid})


@handled
def get_export(req: func.HttpRequest, services: Services) -> func.HttpResponse:
    principal = auth.require(req, services.settings)
    definition, etag = services.definitions.get(_name(req))
    auth.require_export(principal, definition)
    return _json(200, definition.to_dict(), headers={"ETag": etag})


@handled
def put_export(req: func.HttpRequest, services: Services) -> func.HttpResponse:
    """Validate and save a definition. Saving never runs it."""
    auth.require(req, services.settings, admin=True)
    name = _name(req)
    _require_json(req)
    body = req.get_body()
    if len(body) > MAX_DEFINITION_BYTES:
        raise ApiError(413, "too_large", f"definition is over {MAX_DEFINITION_BYTES // 1024} KB")
    try:
        doc = decode_document(body, source="request body")  # the CLI's rule: BOM allowed
    except DefinitionError as exc:
        raise ApiError(400, "invalid_json", str(exc)) from None
    if not isinstance(doc, dict):
        raise ApiError(400, "invalid_definition", "body must be a JSON object", field="")
    doc.setdefault("name", name)
    if doc["name"] != name:
        raise ApiError(
            400,
            "invalid_definition",
            f"name {doc['name']!r} in the body does not match {name!r} in the URL",
            field="name",
        )
    definition = parse_definition(doc, source="request body")
    exists = name in services.definitions.names()
    etag = services.definitions.put(definition, etag=req.headers.get("If-Match"))
    return _json(201 if not exists else 200, definition.to_dict(), headers={"ETag": etag})


@handled
def delete_export(req: func.HttpRequest, services: Services) -> func.HttpResponse:
    """Remove the definition: no scheduled or on-demand run starts after this."""
    auth.require(req, services.settings, admin=True)
    services.definitions.delete(_name(req))
    return func.HttpResponse(status_code=204)


@handled
def start_export_run(req: func.HttpRequest, services: Services) -> func.HttpResponse:
    principal = auth.require(req, services.settings)
    name = _name(req)
    flags = {f: _flag(req, f) for f in ("dry_run", "full", "allow_mass_removal")}
    definition = services.definitions.get(name)[0]  # 404 for an unknown export
    auth.require_export(principal, definition)
    if not definition.connection.privacy_consent:
        # The run would refuse it anyway; say so now rather than 202 and a failed run.
        raise ApiError(
            422,
            "privacy_consent_required",
            f"export {name!r}: connection {definition.connection.name!r} has no privacy "
            "consent; set connection.privacy_consent to true (PUT the definition) first",
            field="connection.privacy_consent",
        )
    run_id, queued = start_run(
        services, name, **flags, trigger="http", started_by=principal.as_record()
    )
    url = _status_url(name, run_id)
    if not queued:
        raise ApiError(
            409,
            "run_in_progress",
            f"export {name!r} has run {run_id} in progress",
            run_id=run_id,
            status_url=url,
        )
    body = {
        "run_id": run_id,
        "export": name,
        "status": "queued",
        **flags,
        "status_url": url,
    }
    return _json(202, body, headers={"Location": url})


@handled
def get_run(req: func.HttpRequest, services: Services) -> func.HttpResponse:
    principal = auth.require(req, services.settings)
    name, run_id = _name(req), _run_id(req)
    if not principal.is_admin:  # contributors see runs of exports they may use
        auth.require_export(principal, services.definitions.get(name)[0])
    record = services.runs.get(name, run_id)
    if record is None:
        raise NotFoundError(f"run {run_id} of export {name!r} not found")
    report = BlobRunStore(services.state, name, run_id).load_report()
    return _json(200, {**record, "report": report})
