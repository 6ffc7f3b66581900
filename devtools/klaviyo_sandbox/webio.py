"""Request and response plumbing shared by the /api handlers.

Reading a JSON:API body the way Klaviyo polices it (415, 413, 400), pagination with
opaque cursors and absolute ``links.next``, sparse fieldsets, and the keys under which the
middleware leaves the runtime and the caller's account for the handlers.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from aiohttp import web

from .config import MAX_BODY_BYTES
from .jsonapi import JSONAPI, ApiError, bad_request, not_found
from .profiles import Account, ListState
from .runtime import Runtime

__all__ = [
    "ACCOUNT",
    "RAW_BODY",
    "RUNTIME",
    "decode_cursor",
    "encode_cursor",
    "links",
    "list_of",
    "origin",
    "page_size",
    "read_body",
    "read_json",
    "sparse",
    "too_large",
]

RUNTIME = web.AppKey("runtime", Runtime)
ACCOUNT = web.RequestKey("account", Account)
RAW_BODY = web.RequestKey("raw_body", bytes)


async def read_body(request: web.Request) -> bytes:
    """The raw body, after Klaviyo's media type (415) and size (413) checks."""
    if request.content_type != JSONAPI:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Unsupported media type {request.content_type!r}; use '{JSONAPI}'.",
        )
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise too_large(length)
    raw = await request.read()
    request[RAW_BODY] = raw
    if len(raw) > MAX_BODY_BYTES:
        raise too_large(len(raw))
    return raw


async def read_json(request: web.Request) -> Any:
    """The body as JSON (small bodies: list membership, subscriptions)."""
    raw = await read_body(request)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The body is not valid JSON: {exc}", code="parse_error") from exc


def too_large(size: int) -> ApiError:
    """Klaviyo's answer to a body over 5 MB."""
    return ApiError(
        413,
        "payload_too_large",
        f"The request body is {size} bytes; the maximum is {MAX_BODY_BYTES} bytes (5 MB).",
    )


def origin(request: web.Request) -> str:
    """``scheme://host:port`` as the client addressed us, for absolute links."""
    return str(request.url.origin())


def page_size(request: web.Request) -> int:
    """``page[size]``: 20 when absent, 400 outside 1..100."""
    raw = request.query.get("page[size]")
    if raw is None:
        return 20
    size = int(raw) if raw.isdigit() else 0
    if not 1 <= size <= 100:
        raise ApiError(
            400,
            "invalid",
            f"page[size] must be an integer between 1 and 100, got {raw!r}.",
            parameter="page[size]",
        )
    return size


def encode_cursor(position: int) -> str:
    """An opaque ``page[cursor]`` for ``position`` (an offset or the last profile seen)."""
    return base64.urlsafe_b64encode(f"sbx:{position}".encode()).decode().rstrip("=")


def decode_cursor(request: web.Request) -> int:
    """The position in ``page[cursor]``, 0 when absent; 400 for one we did not make."""
    raw = request.query.get("page[cursor]")
    if raw is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        if text.startswith("sbx:") and text[4:].isdigit():
            return int(text[4:])
    except (binascii.Error, UnicodeDecodeError):
        pass
    raise ApiError(400, "invalid", "Invalid page[cursor].", parameter="page[cursor]")


def links(request: web.Request, next_position: int | None) -> dict[str, str | None]:
    """Collection links; ``next`` is absolute and keeps the request's other parameters."""
    next_url = None
    if next_position is not None:
        next_url = str(request.url.update_query({"page[cursor]": encode_cursor(next_position)}))
    return {"self": str(request.url), "next": next_url, "prev": None}


def sparse(attributes: dict[str, Any], request: web.Request, kind: str) -> dict[str, Any]:
    """Apply a ``fields[kind]=a,b`` sparse fieldset to a resource's attributes."""
    wanted = request.query.get(f"fields[{kind}]")
    if not wanted:
        return attributes
    names = set(wanted.split(","))
    return {k: v for k, v in attributes.items() if k in names}


def list_of(request: web.Request, account: Account) -> ListState:
    """The account's list named in the path; 404 naming it otherwise."""
    list_id = request.match_info["id"]
    lst = account.lists.get(list_id)
    if lst is None:
        raise not_found(f"A list with id '{list_id}' does not exist.", parameter="id")
    return lst
