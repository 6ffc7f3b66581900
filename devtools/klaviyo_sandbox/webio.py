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
from .membership import ListState
from .profiles import Account
from .runtime import Runtime

__all__ = [
    "ACCOUNT",
    "RAW_BODY",
    "RUNTIME",
    "cursor_text",
    "decode_cursor",
    "encode_cursor",
    "invalid_cursor",
    "links",
    "links_to",
    "list_of",
    "origin",
    "page_size",
    "read_body",
    "read_json",
    "sparse",
    "sparse_fields",
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


def encode_cursor(position: int | str) -> str:
    """An opaque ``page[cursor]`` for ``position`` (an offset, or a key of the last item)."""
    return base64.urlsafe_b64encode(f"sbx:{position}".encode()).decode().rstrip("=")


def cursor_text(request: web.Request) -> str | None:
    """What ``encode_cursor`` put in ``page[cursor]``, None when absent; 400 for a foreign one."""
    raw = request.query.get("page[cursor]")
    if raw is None:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        if text.startswith("sbx:"):
            return text[4:]
    except (binascii.Error, UnicodeDecodeError):
        pass
    raise invalid_cursor()


def invalid_cursor() -> ApiError:
    return ApiError(400, "invalid", "Invalid page[cursor].", parameter="page[cursor]")


def decode_cursor(request: web.Request) -> int:
    """The offset in ``page[cursor]``, 0 when absent; 400 for one we did not make."""
    text = cursor_text(request)
    if text is None:
        return 0
    if not text.isdigit():
        raise invalid_cursor()
    return int(text)


def links(request: web.Request, next_position: int | None) -> dict[str, str | None]:
    """Collection links; ``next`` is absolute and keeps the request's other parameters."""
    return links_to(request, None if next_position is None else encode_cursor(next_position))


def links_to(request: web.Request, next_cursor: str | None) -> dict[str, str | None]:
    """Collection links with a ready-made ``next`` cursor (or none)."""
    next_url = None
    if next_cursor is not None:
        next_url = str(request.url.update_query({"page[cursor]": next_cursor}))
    return {"self": str(request.url), "next": next_url, "prev": None}


def sparse_fields(request: web.Request, kind: str) -> frozenset[str] | None:
    """The names in ``fields[kind]=a,b``, or None when the request has no such fieldset."""
    wanted = request.query.get(f"fields[{kind}]")
    return frozenset(n.strip() for n in wanted.split(",")) if wanted else None


def sparse(attributes: dict[str, Any], request: web.Request, kind: str) -> dict[str, Any]:
    """Apply a ``fields[kind]=a,b`` sparse fieldset (``location.city`` too) to attributes."""
    names = sparse_fields(request, kind)
    if names is None:
        return attributes
    out = {}
    for key, value in attributes.items():
        if key in names:
            out[key] = value
            continue
        nested = {n.partition(".")[2] for n in names if n.startswith(f"{key}.")}
        if nested and isinstance(value, dict):
            out[key] = {k: v for k, v in value.items() if k in nested}
        elif nested:
            out[key] = value
    return out


def list_of(request: web.Request, account: Account) -> ListState:
    """The account's list named in the path; 404 naming it otherwise."""
    list_id = request.match_info["id"]
    lst = account.lists.get(list_id)
    if lst is None:
        raise not_found(f"A list with id '{list_id}' does not exist.", parameter="id")
    return lst
