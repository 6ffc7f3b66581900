"""Handlers for bulk import jobs (create, read, import errors, profile ids) and consent."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from .jsonapi import iso, json_response, not_found
from .listquery import PROFILE_FIELDS, check_fields
from .lists import list_resource, needs_secondary, profile_resource
from .profiles import profile_id
from .state import Job
from .validation import parse_subscribe
from .webio import (
    ACCOUNT,
    RUNTIME,
    decode_cursor,
    links,
    origin,
    page_size,
    read_body,
    read_json,
    sparse,
)

__all__ = [
    "create_bulk_import_job",
    "get_bulk_import_job",
    "get_import_errors",
    "get_job_profile_ids",
    "get_job_profiles",
    "job_resource",
    "subscribe_profiles",
]


def job_resource(job: Job, request: web.Request) -> dict[str, Any]:
    """A bulk import job as a JSON:API resource, with its relationship links."""
    url = f"{origin(request)}/api/profile-bulk-import-jobs/{job.id}/"
    attributes = {
        "status": job.status,
        "created_at": iso(job.created_at),
        "total_count": job.total,
        "completed_count": job.completed,
        "failed_count": job.failed,
        "completed_at": iso(job.completed_at),
        "expires_at": iso(job.expires_at),
        "started_at": iso(job.started_at),
    }
    return {
        "type": "profile-bulk-import-job",
        "id": job.id,
        "attributes": sparse(attributes, request, "profile-bulk-import-job"),
        "relationships": {
            "lists": {
                "data": [{"type": "list", "id": lid} for lid in job.list_ids],
                "links": {"self": f"{url}relationships/lists/", "related": f"{url}lists/"},
            },
            "profiles": {
                "links": {"self": f"{url}relationships/profiles/", "related": f"{url}profiles/"}
            },
            "import-errors": {"links": {"related": f"{url}import-errors/"}},
        },
        "links": {"self": url},
    }


async def create_bulk_import_job(request: web.Request) -> web.StreamResponse:
    """POST /api/profile-bulk-import-jobs: check it all, then queue the job (202)."""
    runtime, account = request.app[RUNTIME], request[ACCOUNT]
    prepared = await runtime.prepare(await read_body(request))
    for n, list_id in enumerate(prepared.list_ids):
        if list_id not in account.lists:
            raise not_found(
                f"A list with id '{list_id}' does not exist.",
                pointer=f"/data/relationships/lists/data/{n}/id",
            )
    job = runtime.state.create_job(account, prepared)
    resource = job_resource(job, request)
    return json_response({"data": resource, "links": resource["links"]}, status=202)


def _job_of(request: web.Request, key: str) -> Job:
    job_id = request.match_info[key]
    job = request.app[RUNTIME].state.find_job(request[ACCOUNT], job_id)
    if job is None:
        raise not_found(f"A profile bulk import job with id '{job_id}' does not exist.")
    return job


async def get_bulk_import_job(request: web.Request) -> web.StreamResponse:
    """GET /api/profile-bulk-import-jobs/{job_id} (``include=lists`` supported)"""
    job = _job_of(request, "job_id")
    resource = job_resource(job, request)
    document: dict[str, Any] = {"data": resource, "links": resource["links"]}
    if "lists" in request.query.get("include", "").split(","):
        lists = job.account.lists
        document["included"] = [list_resource(lists[lid], request) for lid in job.list_ids]
    return json_response(document)


async def get_import_errors(request: web.Request) -> web.StreamResponse:
    """GET /api/profile-bulk-import-jobs/{id}/import-errors"""
    job = _job_of(request, "id")
    size, offset = page_size(request), decode_cursor(request)
    page = job.errors[offset : offset + size]
    data = [
        {
            "type": "import-error",
            "id": error.id,
            "attributes": sparse(
                {
                    "code": "invalid",
                    "title": "Invalid input.",
                    "detail": error.detail,
                    "source": {
                        "pointer": f"/data/attributes/profiles/data/{error.index}"
                        f"/attributes/{error.field}"
                    },
                    "original_payload": error.payload,
                },
                request,
                "import-error",
            ),
        }
        for error in page
    ]
    more = offset + size < len(job.errors)
    return json_response({"data": data, "links": links(request, offset + size if more else None)})


async def get_job_profile_ids(request: web.Request) -> web.StreamResponse:
    """GET /api/profile-bulk-import-jobs/{id}/relationships/profiles"""
    job = _job_of(request, "id")
    size, offset = page_size(request), decode_cursor(request)
    numbers = job.profile_numbers[offset : offset + size]
    data = [{"type": "profile", "id": profile_id(n)} for n in numbers]
    more = offset + size < len(job.profile_numbers)
    return json_response({"data": data, "links": links(request, offset + size if more else None)})


async def get_job_profiles(request: web.Request) -> web.StreamResponse:
    """GET /api/profile-bulk-import-jobs/{id}/profiles: the profiles the job has imported"""
    fields = check_fields(request, PROFILE_FIELDS - {"joined_group_at"})
    job = _job_of(request, "id")
    size, offset = page_size(request), decode_cursor(request)
    numbers = job.profile_numbers[offset : offset + size]
    attributes = job.account.profile_attributes(numbers, secondary=needs_secondary(fields))
    data = [profile_resource(n, attributes[n], request) for n in numbers]
    more = offset + size < len(job.profile_numbers)
    return json_response({"data": data, "links": links(request, offset + size if more else None)})


async def subscribe_profiles(request: web.Request) -> web.StreamResponse:
    """POST /api/profile-subscription-bulk-create-jobs: consent is recorded at once."""
    account = request[ACCOUNT]
    parsed = parse_subscribe(await read_json(request))
    if parsed.list_id is not None and parsed.list_id not in account.lists:
        raise not_found(
            f"A list with id '{parsed.list_id}' does not exist.",
            pointer="/data/relationships/list/data/id",
        )
    account.subscribe(parsed, time.time())
    return web.Response(status=202)
