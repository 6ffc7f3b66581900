"""Handlers for lists: read one, page through its members, add and remove members."""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from .jsonapi import ApiError, iso, json_response, not_found
from .profiles import Account, ListState, parse_profile_id, profile_id
from .validation import parse_relationship_ids
from .webio import (
    ACCOUNT,
    RUNTIME,
    decode_cursor,
    links,
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
    "remove_list_profiles",
]

_PROFILE_FIELDS = (
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


_FILTER_RE = re.compile(r"\s*(equals|any)\(\s*(email|phone_number)\s*,\s*(.*?)\s*\)\s*")
_QUOTED_RE = re.compile(r"""(["'])(.*?)\1""")


def _filter_numbers(request: web.Request, account: Account) -> list[int] | None:
    """Profiles named by ``filter=equals(email,"x")`` / ``any(email,["x","y"])``, or None."""
    raw = request.query.get("filter")
    if raw is None:
        return None
    match = _FILTER_RE.fullmatch(raw)
    values = [m[2] for m in _QUOTED_RE.finditer(match[3])] if match else []
    if match is None or not values or (match[1] == "equals" and len(values) != 1):
        raise ApiError(
            400,
            "invalid",
            'Unsupported filter; the sandbox knows equals(email,"..."), any(email,[...]) '
            "and the same for phone_number.",
            parameter="filter",
        )
    if match[2] == "email":
        found = (account.by_email.get(v.lower()) for v in values)
    else:
        found = (account.by_phone.get(v) for v in values)
    return [n for n in found if n is not None]


def _member_page(request: web.Request, lst: ListState, account: Account) -> tuple[list[int], bool]:
    """One page of members in profile order, after the cursor; and whether more follow."""
    size, after = page_size(request), decode_cursor(request)
    wanted = _filter_numbers(request, account)
    members = lst.members
    source: Iterable[int] = members if wanted is None else (n for n in wanted if n in members)
    page = heapq.nsmallest(size + 1, (n for n in source if n > after))
    return page[:size], len(page) > size


def _member_resource(
    number: int, attributes: dict[str, Any], joined: float, request: web.Request
) -> dict[str, Any]:
    pid = profile_id(number)
    out: dict[str, Any] = {k: attributes.get(k) for k in _PROFILE_FIELDS}
    out.update(
        created=None,
        updated=None,
        last_event_date=None,
        location=attributes.get("location"),
        properties=attributes.get("properties") or {},
        joined_group_at=iso(joined),
    )
    return {
        "type": "profile",
        "id": pid,
        "attributes": sparse(out, request, "profile"),
        "links": {"self": f"{origin(request)}/api/profiles/{pid}/"},
    }


async def get_list_profiles(request: web.Request) -> web.StreamResponse:
    """GET /api/lists/{id}/profiles (filter by e-mail or phone, cursor pages)"""
    account = request[ACCOUNT]
    lst = list_of(request, account)
    page, more = _member_page(request, lst, account)
    attributes = account.profile_attributes(page)
    data = [_member_resource(n, attributes[n], lst.members[n], request) for n in page]
    return json_response({"data": data, "links": links(request, page[-1] if more else None)})


async def get_list_profile_ids(request: web.Request) -> web.StreamResponse:
    """GET /api/lists/{id}/relationships/profiles"""
    account = request[ACCOUNT]
    lst = list_of(request, account)
    page, more = _member_page(request, lst, account)
    data = [{"type": "profile", "id": profile_id(n)} for n in page]
    return json_response({"data": data, "links": links(request, page[-1] if more else None)})


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
    """DELETE /api/lists/{id}/relationships/profiles (at most 1,000 ids)"""
    lst, numbers = await _membership_numbers(request)
    lst.remove(numbers, time.time())
    return web.Response(status=204)
