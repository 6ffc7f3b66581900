"""An async client for the part of Klaviyo's API this app uses (JSON:API, revision pinned).

Errors of the layer below (httpx) are translated in one place, ``_classify``; retries,
rate limiting and transport are separate pieces, each swappable for tests.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from shared.errors import KlaviyoFatalError, KlaviyoRetriableError
from shared.ratelimit import KLAVIYO_LIMITS, RateLimit, RateLimiter
from shared.retry import RetryPolicy
from shared.settings import DEFAULT_KLAVIYO_BASE_URL, DEFAULT_KLAVIYO_REVISION

__all__ = ["ImportJob", "KlaviyoClient", "error_summary", "mask_addresses"]

logger = logging.getLogger(__name__)

JSONAPI = "application/vnd.api+json"
_RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class ImportJob:
    """A Bulk Import Profiles job as Klaviyo reports it."""

    id: str
    status: str
    total_count: int
    completed_count: int
    failed_count: int

    @property
    def done(self) -> bool:
        return self.status in ("complete", "cancelled")

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> ImportJob:
        data = document["data"]
        attrs = data.get("attributes") or {}
        return cls(
            id=data["id"],
            status=attrs.get("status", "queued"),
            total_count=int(attrs.get("total_count") or 0),
            completed_count=int(attrs.get("completed_count") or 0),
            failed_count=int(attrs.get("failed_count") or 0),
        )


# Anything shaped like an address in Klaviyo's error text, so it can be masked before the
# text reaches a log line, a run record or an exception message.
_ADDRESS = re.compile(r"([^\s'\"<>(),;:@]{1,64})@([^\s'\"<>(),;:@]+)")


def mask_addresses(text: str) -> str:
    """``bad@example.c0m`` -> ``b***@example.c0m``."""
    return _ADDRESS.sub(lambda m: f"{m.group(1)[:1]}***@{m.group(2)}", text)


def error_summary(errors: list[dict]) -> str:
    """Klaviyo's JSON:API errors as one line: 'Not found: list Y6nRLr does not exist'.

    E-mail addresses in Klaviyo's text are masked: this line is logged and stored.
    """
    parts = []
    for err in errors[:3]:
        title = err.get("title") or err.get("code") or "error"
        detail = err.get("detail")
        parts.append(f"{title}: {detail}" if detail and detail != title else str(title))
    return mask_addresses("; ".join(parts)) or "no error detail"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _errors_of(response: httpx.Response) -> list[dict]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return errors if isinstance(errors, list) else []


def _classify(response: httpx.Response) -> None:
    """Raise the error a non-2xx response stands for; return quietly on success."""
    if response.is_success:
        return
    errors = _errors_of(response)
    request = response.request
    message = f"Klaviyo {request.method} {request.url.path} -> {response.status_code}: " + (
        error_summary(errors) if errors else response.reason_phrase
    )
    context = {
        "status": response.status_code,
        "errors": errors,
        "method": request.method,
        "url": str(request.url),
    }
    if response.status_code in _RETRIABLE_STATUS:
        raise KlaviyoRetriableError(message, retry_after=_retry_after(response), **context)
    raise KlaviyoFatalError(message, **context)


class KlaviyoClient:
    """Talks to Klaviyo: bulk import jobs, their errors, and lists.

    Create one per run, use it as an async context manager, and close it.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_KLAVIYO_BASE_URL,
        revision: str = DEFAULT_KLAVIYO_REVISION,
        retry: RetryPolicy | None = None,
        limits: Mapping[str, RateLimit] | None = None,
        timeout: float = 60.0,
        max_connections: int = 20,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._retry = retry or RetryPolicy()
        self._limiters = {
            family: RateLimiter(limit) for family, limit in (limits or KLAVIYO_LIMITS).items()
        }
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={
                "Authorization": f"Klaviyo-API-Key {api_key}",
                "revision": revision,
                "accept": JSONAPI,
            },
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )
        self.retries = 0  # attempts beyond the first, across all calls (for the run report)
        self.throttled = 0  # 429s received

    def __repr__(self) -> str:
        return f"KlaviyoClient(base_url={str(self._http.base_url)!r})"  # never the key

    async def __aenter__(self) -> KlaviyoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def rate_limit_wait(self) -> float:
        """Seconds spent waiting for the client-side rate limiter, summed over families."""
        return sum(limiter.waited for limiter in self._limiters.values())

    async def get_list(self, list_id: str) -> dict[str, Any]:
        """The list resource; raises KlaviyoFatalError (404) when it does not exist."""
        doc = await self._request("lists_read", "GET", f"/api/lists/{list_id}")
        return doc["data"]

    async def create_import_job(self, payload: bytes) -> ImportJob:
        """Submit a serialised Bulk Import Profiles body; Klaviyo answers 202 with the job."""
        doc = await self._request(
            "import_jobs_create", "POST", "/api/profile-bulk-import-jobs", content=payload
        )
        return ImportJob.from_document(doc)

    async def get_import_job(self, job_id: str) -> ImportJob:
        doc = await self._request(
            "import_jobs_get", "GET", f"/api/profile-bulk-import-jobs/{job_id}"
        )
        return ImportJob.from_document(doc)

    async def iter_import_errors(
        self, job_id: str, *, page_size: int = 100
    ) -> AsyncIterator[dict[str, Any]]:
        """Every import error of a job, following ``links.next`` page by page."""
        path: str | None = f"/api/profile-bulk-import-jobs/{job_id}/import-errors"
        params: dict[str, Any] | None = {"page[size]": page_size}
        while path:
            doc = await self._request("import_errors", "GET", path, params=params)
            for item in doc.get("data") or []:
                yield item
            path = (doc.get("links") or {}).get("next")
            params = None  # the next link carries its own query

    async def _request(
        self,
        family: str,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        headers = {"content-type": JSONAPI} if content is not None else None
        attempt = 0
        while True:
            attempt += 1
            await self._limiters[family].acquire()
            try:
                response = await self._send(method, path, content, params, headers)
                _classify(response)
            except KlaviyoRetriableError as exc:
                if exc.status == 429:
                    self.throttled += 1
                    self._limiters[family].block_for(exc.retry_after or 1.0)
                if not self._retry.should_retry(attempt):
                    raise
                delay = self._retry.delay(attempt, exc.retry_after)
                logger.warning(
                    "%s; retry %d/%d in %.1fs", exc, attempt, self._retry.max_attempts - 1, delay
                )
                self.retries += 1
                await asyncio.sleep(delay)  # backoff between attempts, bounded by the policy
                continue
            if response.status_code == 204 or not response.content:
                return {}
            return orjson.loads(response.content)

    async def _send(
        self,
        method: str,
        path: str,
        content: bytes | None,
        params: Mapping[str, Any] | None,
        headers: dict[str, str] | None,
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method, path, content=content, params=params, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise KlaviyoRetriableError(
                f"Klaviyo {method} {path} timed out ({type(exc).__name__})", method=method
            ) from exc
        except httpx.TransportError as exc:
            raise KlaviyoRetriableError(
                f"Klaviyo {method} {path} failed: {type(exc).__name__}: {exc}", method=method
            ) from exc
