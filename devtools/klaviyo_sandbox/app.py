"""The aiohttp application: Klaviyo's /api endpoints behind one middleware.

The middleware does, in order, what Klaviyo does before a handler runs: injected faults
(decided before anything has an effect), authentication (401), the revision header (400),
and the per-account, per-family rate limit (429). Handlers then check the media type
(415), body size (413) and structure (400) and answer in JSON:API.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .config import MAX_BODY_BYTES
from .control import add_control_routes
from .faults import Fault
from .jobs import (
    create_bulk_import_job,
    get_bulk_import_job,
    get_import_errors,
    get_job_profile_ids,
    get_job_profiles,
    subscribe_profiles,
)
from .jsonapi import ApiError
from .lists import (
    add_list_profiles,
    get_list,
    get_list_profile_ids,
    get_list_profiles,
    remove_list_profiles,
)
from .profiles import Account
from .runtime import Runtime
from .webio import ACCOUNT, RAW_BODY, RUNTIME

__all__ = ["RUNTIME", "create_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_DROPPED = web.RequestKey("dropped", bool)
_DRAIN_LIMIT = 64 * 1024 * 1024
# Above Klaviyo's 5 MB so that oversized bodies get Klaviyo's 413, not aiohttp's.
CLIENT_MAX_SIZE = 2 * MAX_BODY_BYTES
_REVISION_RE = re.compile(r"\d{4}-\d{2}-\d{2}(\.[A-Za-z0-9_-]+)?")


# --- middleware -------------------------------------------------------------------------


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)
    runtime = request.app[RUNTIME]
    family = _FAMILY.get(request.match_info.handler, "other")
    runtime.stats.enter()
    status: int | None = None
    try:
        response = await _serve(request, handler, runtime, family)
        if request.can_read_body:
            await _drain(request)  # an early answer (401, 413, 429...) left the body unread
        status = None if request.get(_DROPPED) else response.status
        return response
    finally:
        runtime.stats.leave(family, status, _operation(request))
        if runtime.config.record_requests:
            runtime.recorded.append(_record(request, status), request.get(RAW_BODY))


async def _serve(
    request: web.Request, handler: Handler, runtime: Runtime, family: str
) -> web.StreamResponse:
    try:
        fault = runtime.faults.draw(family) if family != "other" else None
        late = fault is not None and fault.kind == "slow" and runtime.config.slow_after_handling
        if fault is not None and not late:
            dropped = await _apply_fault(request, fault)
            if dropped is not None:
                return dropped
        account = _authenticate(request, runtime)
        _check_revision(request)
        if runtime.config.rate_limits and family != "other":
            wait = runtime.limiter.acquire(
                (account.ordinal, family), runtime.config.rate_limit(family)
            )
            if wait:
                raise _throttled(wait)
        request[ACCOUNT] = account
        response = await handler(request)
        if late:
            # The request took effect (a job was created); only the answer is late, as
            # when a response is lost in the network: the client never sees it.
            await asyncio.sleep(fault.delay)
        return response
    except ApiError as error:
        return error.to_response()
    except web.HTTPException as exc:
        # The router's 404/405 and aiohttp's own 413, rendered as JSON:API.
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(exc.status, "error")
        return ApiError(exc.status, code, exc.reason, pointer=None).to_response()


async def _apply_fault(request: web.Request, fault: Fault) -> web.StreamResponse | None:
    if fault.kind == "throttle":
        raise _throttled(fault.retry_after)
    if fault.kind == "error":
        raise ApiError(fault.status, "error", "An injected server error (sandbox fault).")
    if fault.kind == "slow":
        await asyncio.sleep(fault.delay)
        return None
    # "drop": take the whole request in, then close without answering. The request has
    # had no effect, which is what a client retrying after a dropped connection assumes.
    await _drain(request)
    if request.transport is not None:
        request.transport.close()
    request[_DROPPED] = True
    return web.Response(status=204)  # never sent: aiohttp sees the closed transport


async def _drain(request: web.Request) -> None:
    """Read and discard what is left of the body.

    Left alone, aiohttp "lingers" to read it after the response, and that wait outlives a
    client that hangs up meanwhile (up to 10 s, holding up shutdown). Past a sane size the
    connection is closed instead.
    """
    left = _DRAIN_LIMIT
    while left > 0 and (chunk := await request.content.readany()):
        left -= len(chunk)
    if left <= 0 and request.protocol is not None:
        request.protocol.force_close()


def _throttled(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "throttled",
        f"Request was throttled. Expected available in {retry_after} second"
        f"{'' if retry_after == 1 else 's'}.",
        headers={"Retry-After": str(retry_after)},
    )


def _authenticate(request: web.Request, runtime: Runtime) -> Account:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    account = None
    if scheme == "Klaviyo-API-Key":
        account = runtime.state.accounts_by_key.get(key.strip())
    if account is None:
        raise ApiError(401, "not_authenticated", "Missing or invalid private key.")
    return account


def _check_revision(request: web.Request) -> None:
    revision = request.headers.get("revision")
    if revision is None or not _REVISION_RE.fullmatch(revision):
        raise ApiError(
            400,
            "invalid",
            "A valid 'revision' header (YYYY-MM-DD) is required.",
            parameter="revision",
        )


def _operation(request: web.Request) -> str:
    """``METHOD /api/path/{template}`` of the route served, for the per-operation stats."""
    resource = request.match_info.route.resource
    if resource is None or request.match_info.http_exception is not None:
        return "other"
    return f"{request.method} {resource.canonical.rstrip('/')}"


def _record(request: web.Request, status: int | None) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in request.headers.items()}
    if "authorization" in headers:
        scheme = headers["authorization"].partition(" ")[0]
        headers["authorization"] = f"{scheme} <redacted>"
    return {
        "method": request.method,
        "path": request.path,
        "url": request.path_qs,
        "query": dict(request.query),
        "headers": headers,
        "body_omitted": False,
        "status": status,
        "time": time.time(),
    }


# --- wiring -----------------------------------------------------------------------------

_ROUTES: tuple[tuple[str, str, Handler, str], ...] = (
    ("POST", "/api/profile-bulk-import-jobs", create_bulk_import_job, "bulk_import_create"),
    ("GET", "/api/profile-bulk-import-jobs/{job_id}", get_bulk_import_job, "bulk_import_get"),
    (
        "GET",
        "/api/profile-bulk-import-jobs/{id}/relationships/profiles",
        get_job_profile_ids,
        "bulk_import_profiles",
    ),
    (
        "GET",
        "/api/profile-bulk-import-jobs/{id}/profiles",
        get_job_profiles,
        "bulk_import_profiles",
    ),
    ("GET", "/api/profile-bulk-import-jobs/{id}/import-errors", get_import_errors, "import_errors"),
    ("GET", "/api/lists/{id}", get_list, "lists_read"),
    ("GET", "/api/lists/{id}/profiles", get_list_profiles, "lists_read"),
    ("GET", "/api/lists/{id}/relationships/profiles", get_list_profile_ids, "lists_read"),
    ("POST", "/api/lists/{id}/relationships/profiles", add_list_profiles, "list_relationships"),
    (
        "DELETE",
        "/api/lists/{id}/relationships/profiles",
        remove_list_profiles,
        "list_relationships",
    ),
    ("POST", "/api/profile-subscription-bulk-create-jobs", subscribe_profiles, "subscribe"),
)

_FAMILY: dict[Handler, str] = {handler: family for _, _, handler, family in _ROUTES}


def create_app(runtime: Runtime) -> web.Application:
    """The sandbox's aiohttp application around ``runtime``."""
    app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[api_middleware])
    app[RUNTIME] = runtime
    for method, path, handler, _ in _ROUTES:
        # Klaviyo answers with and without the trailing slash (its own links have one).
        app.router.add_route(method, path, handler)
        app.router.add_route(method, f"{path}/", handler)
    add_control_routes(app, RUNTIME)
    return app
