"""Handlers for lists: read one, page through its members, add and remove members.

Which members a page holds (filter, sort, cursor) is decided in ``listquery``.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from .jsonapi import iso, json_response, not_found
from .listquery import PROFILE_FIELDS, MemberPage, MemberQuery, check_fields, member_page
from .membership import ListState, iso_micros
from .profiles import Account, parse_profile_id, profile_id
from .validation import parse_relationship_ids
from .webio import (
    ACCOUNT,
    RUNTIME,
    links_to,
    list_of,
    origin,
    page_size,
    read_json,
    sparse,
)

__all__ = [
    "add_list_profiles",
    "get_list",
    "get_list_profile_ids",
    "get_list_profiles",
    "list_resource",
    "needs_secondary",
    "profile_resource",
    "remove_list_profiles",
]

_STANDARD_FIELDS = (
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
)


def list_resource(lst: ListState, request: web.Request) -> dict[str, Any]:
    """A list as a JSON:API resource (``profile_count`` when asked for)."""
    attributes: dict[str, Any] = {
        "name": lst.name,
        "created": iso(lst.created),
        "updated": iso(lst.updated),
        "opt_in_process": "single_opt_in",
    }
    if "profile_count" in request.query.get("additional-fields[list]", "").split(","):
        attributes["profile_count"] = len(lst.members)
    url = f"{origin(request)}/api/lists/{lst.id}/"
    return {
        "type": "list",
        "id": lst.id,
        "attributes": sparse(attributes, request, "list"),
        "relationships": {
            "profiles": {
                "links": {"self": f"{url}relationships/profiles/", "related": f"{url}profiles/"}
            }
        },
        "links": {"self": url},
    }


async def get_list(request: web.Request) -> web.StreamResponse:
    """GET /api/lists/{id}"""
    lst = list_of(request, request[ACCOUNT])
    resource = list_resource(lst, request)
    document: dict[str, Any] = {"data": resource, "links": resource["links"]}
    if request.query.get("include"):
        document["included"] = []  # the sandbox has no tags or flows
    return json_response(document)


def profile_resource(
    number: int,
    attributes: dict[str, Any],
    request: web.Request,
    *,
    joined: int | None = None,
) -> dict[str, Any]:
    """A profile as a JSON:API resource; list members carry ``joined_group_at``."""
    pid = profile_id(number)
    out: dict[str, Any] = {k: attributes.get(k) for k in _STANDARD_FIELDS}
    out.update(
        created=None,
        updated=None,
        last_event_date=None,
        location=attributes.get("location"),
        properties=attributes.get("properties") or {},
    )
    if joined is not None:
        out["joined_group_at"] = iso_micros(joined)
    return {
        "type": "profile",
        "id": pid,
        "attributes": sparse(out, request, "profile"),
        "links": {"self": f"{origin(request)}/api/profiles/{pid}/"},
    }


def needs_secondary(fields: frozenset[str] | None) -> bool:
    """Whether a sparse fieldset asks for phone numbers or external ids (costly unstored)."""
    return fields is None or bool({"phone_number", "external_id"} & fields)


def _page(request: web.Request) -> tuple[Account, ListState, MemberPage]:
    account = request[ACCOUNT]
    lst = list_of(request, account)
    size = page_size(request)
    return account, lst, member_page(request, lst, MemberQuery.of(request, account), size)


async def get_list_profiles(request: web.Request) -> web.StreamResponse:
    """GET /api/lists/{id}/profiles (filter, sort, sparse fields, cursor pages)"""
    fields = check_fields(request, PROFILE_FIELDS)
    account, _, page = _page(request)
    numbers = [n for _, n in page.items]
    attributes = account.profile_attributes(numbers, secondary=needs_secondary(fields))
    data = [profile_resource(n, attributes[n], request, joined=j) for j, n in page.items]
    return json_response({"data": data, "links": links_to(request, page.next_cursor)})


async def get_list_profile_ids(request: web.Request) -> web.StreamResponse:
    """GET /api/lists/{id}/relationships/profiles (the same filter, sort and pages)"""
    _, _, page = _page(request)
    data = [{"type": "profile", "id": profile_id(n)} for _, n in page.items]
    return json_response({"data": data, "links": links_to(request, page.next_cursor)})


async def _membership_numbers(request: web.Request) -> tuple[ListState, list[int]]:
    runtime, account = request.app[RUNTIME], request[ACCOUNT]
    lst = list_of(request, account)
    body = await read_json(request)
    numbers = []
    for n, text in enumerate(parse_relationship_ids(body)):
        number = parse_profile_id(text)
        if number is None or not runtime.state.owns(account, number):
            raise not_found(f"A profile with id '{text}' does not exist.", pointer=f"/data/{n}/id")
        numbers.append(number)
    return lst, numbers


async def add_list_profiles(request: web.Request) -> web.StreamResponse:
    """POST /api/lists/{id}/relationships/profiles (at most 1,000 ids)"""
    lst, numbers = await _membership_numbers(request)
    lst.add(numbers, time.time())
    return web.Response(status=204)


async def remove_list_profiles(request: web.Request) -> web.StreamResponse:
    """DELETE /api/lists/{id}/relationships/profiles (at most 1,000 ids)

    A profile that is not (or no longer) a member is skipped: removing is idempotent, so
    a retried call answers 204 again. An id that names no profile of the account is a
    404 pointing at it, and nothing is removed.
    """
    lst, numbers = await _membership_numbers(request)
    lst.remove(numbers, time.time())
    return web.Response(status=204)
