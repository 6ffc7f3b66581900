"""JSON:API documents: the error type handlers raise, and responses serialised with orjson."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

__all__ = [
    "JSONAPI",
    "ApiError",
    "bad_request",
    "error_document",
    "iso",
    "json_response",
    "not_found",
]

JSONAPI = "application/vnd.api+json"

_TITLES = {
    400: "Invalid input.",
    401: "Authentication credentials were not provided.",
    404: "Not found.",
    405: "Method not allowed.",
    413: "Request entity too large.",
    415: "Unsupported media type.",
    429: "Request was throttled.",
    500: "A server error occurred.",
    502: "Bad gateway.",
    503: "Service unavailable.",
}


class ApiError(Exception):
    """An error answer; raised anywhere in a handler, rendered once by the middleware."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        pointer: str | None = "/data/",
        parameter: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.pointer = pointer
        self.parameter = parameter
        self.title = title or _TITLES.get(status, "Error.")
        self.headers = headers or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Parse workers raise it in another process: rebuild it there with every field.
        fields = (self.status, self.code, self.detail, self.pointer, self.parameter)
        return (_rebuild, (*fields, self.title, self.headers))

    def to_response(self) -> web.Response:
        return json_response(error_document(self), status=self.status, headers=self.headers)


def _rebuild(
    status: int,
    code: str,
    detail: str,
    pointer: str | None,
    parameter: str | None,
    title: str,
    headers: dict[str, str],
) -> ApiError:
    return ApiError(
        status, code, detail, pointer=pointer, parameter=parameter, title=title, headers=headers
    )


def error_document(error: ApiError) -> dict[str, Any]:
    source: dict[str, str] = {}
    if error.parameter is not None:
        source["parameter"] = error.parameter
    elif error.pointer is not None:
        source["pointer"] = error.pointer
    return {
        "errors": [
            {
                "id": str(uuid.uuid4()),
                "status": error.status,
                "code": error.code,
                "title": error.title,
                "detail": error.detail,
                "source": source,
            }
        ]
    }


def bad_request(detail: str, *, pointer: str = "/data/", code: str = "invalid") -> ApiError:
    return ApiError(400, code, detail, pointer=pointer)


def not_found(detail: str, *, pointer: str | None = None, parameter: str | None = None) -> ApiError:
    return ApiError(404, "not_found", detail, pointer=pointer, parameter=parameter)


def iso(timestamp: float | None) -> str | None:
    """Klaviyo's timestamp format (ISO 8601, microseconds, UTC offset)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds")


def json_response(
    document: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(document), status=status, headers=headers, content_type=JSONAPI
    )
