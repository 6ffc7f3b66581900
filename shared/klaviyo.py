"""An async client for the part of Klaviyo's API this app uses (JSON:API, revision pinned).

Errors of the layer below (httpx) are translated in one place, ``_classify``; retries,
rate limiting and transport are separate pieces, each swappable for tests.

Looking list members up by e-mail puts addresses in the query string. So no URL with a
query ever reaches an exception, and httpx's own request log line (INFO on the
``httpx`` logger, which the Functions host forwards) has its query replaced.
What the calls return (``ImportJob``, ``ListMember``, ``JobProfile``) is defined in
``shared.klaviyo_resources`` and re-exported here.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from shared.errors import KlaviyoFatalError, KlaviyoRetriableError
from shared.klaviyo_resources import ImportJob, JobProfile, ListMember, epoch_ms, parse_timestamp
from shared.ratelimit import KLAVIYO_LIMITS, RateLimit, RateLimiter
from shared.retry import RetryPolicy
from shared.settings import DEFAULT_KLAVIYO_BASE_URL, DEFAULT_KLAVIYO_REVISION

__all__ = [
    "MAX_LOOKUP_EMAILS",
    "MAX_REMOVAL_IDS",
    "ImportJob",
    "JobProfile",
    "KlaviyoClient",
    "ListMember",
    "epoch_ms",
    "error_summary",
    "mask_addresses",
    "parse_timestamp",
]

logger = logging.getLogger(__name__)

JSONAPI = "application/vnd.api+json"
_RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_LOOKUP_EMAILS = 100  # values in one any(email,[...]) filter
MAX_REMOVAL_IDS = 1_000  # profile ids in one DELETE /api/lists/{id}/relationships/profiles
_PAGE_SIZE = 100  # Klaviyo's maximum page[size] for the endpoints paged here
_MEMBER_FIELDS = "email,joined_group_at"


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
        if not detail:
            parts.append(str(title))
        elif str(detail).startswith(str(title)):  # 429: "Request was throttled. Expected ..."
            parts.append(str(detail))
        else:
            parts.append(f"{title}: {detail}")
    return mask_addresses("; ".join(parts)) or "no error detail"


def _quoted(value: str) -> str:
    """A string value in Klaviyo's filter syntax: double quotes, backslash escapes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _filter_time(moment: datetime) -> str:
    """A datetime as Klaviyo's filters take it: unquoted ISO 8601, in UTC."""
    if moment.tzinfo is None:
        raise ValueError("filter datetimes must be timezone-aware")
    text = moment.astimezone(UTC).isoformat(timespec="auto")
    return text.replace("+00:00", "Z")


def _and(conditions: list[str]) -> str:
    return f"and({','.join(conditions)})"


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


def _without_query(url: httpx.URL | str) -> str:
    """A URL or path with its query left out: list lookups carry e-mails in it."""
    parsed = httpx.URL(url) if isinstance(url, str) else url
    return str(parsed.copy_with(query=None, fragment=None))


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
        "url": _without_query(request.url),
    }
    if response.status_code in _RETRIABLE_STATUS:
        raise KlaviyoRetriableError(message, retry_after=_retry_after(response), **context)
    raise KlaviyoFatalError(message, **context)


class _RedactQueries(logging.Filter):
    """Replaces the query of every URL in httpx's records: lookups put e-mails there."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_has_query(a) for a in record.args):
            record.args = tuple(
                f"{_without_query(a)}?<query redacted>" if _has_query(a) else a for a in record.args
            )
        return True


def _has_query(value: object) -> bool:
    return isinstance(value, httpx.URL) and bool(value.query)


# httpx logs every request's full URL at INFO on this logger; the Functions host sends
# INFO to Application Insights. The filter sits on the logger itself, so it applies
# whichever handler the record reaches (once, however often this module is imported).
_HTTPX_LOGGER = logging.getLogger("httpx")
if not any(isinstance(f, _RedactQueries) for f in _HTTPX_LOGGER.filters):
    _HTTPX_LOGGER.addFilter(_RedactQueries())


class KlaviyoClient:
    """Talks to Klaviyo: bulk import jobs (their errors and profiles), lists and members.

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
        # Overrides replace Klaviyo's limits family by family; the others stay in force.
        in_force = {**KLAVIYO_LIMITS, **(limits or {})}
        self._limiters = {family: RateLimiter(limit) for family, limit in in_force.items()}
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

    async def import_job_turn(self) -> float:
        """Wait for the next import job's turn under the rate limit, and count it as sent.

        For a caller that takes the job's body only once its turn has come (so bodies do
        not queue in the limiter): pass the turn to :meth:`create_import_job` right away,
        or give it back with :meth:`give_back_turn`.
        """
        return await self._limiters["import_jobs_create"].acquire()

    def give_back_turn(self, turn: float) -> None:
        """An :meth:`import_job_turn` that no request used."""
        self._limiters["import_jobs_create"].refund(turn)

    async def create_import_job(self, payload: bytes, *, turn: float | None = None) -> ImportJob:
        """Submit a serialised Bulk Import Profiles body; Klaviyo answers 202 with the job.
        ``turn``: one :meth:`import_job_turn` gave, used by the first attempt."""
        doc = await self._request(
            "import_jobs_create",
            "POST",
            "/api/profile-bulk-import-jobs",
            content=payload,
            turn=turn,
        )
        return ImportJob.from_document(doc)

    async def get_import_job(self, job_id: str) -> ImportJob:
        doc = await self._request(
            "import_jobs_get", "GET", f"/api/profile-bulk-import-jobs/{job_id}"
        )
        return ImportJob.from_document(doc)

    async def iter_import_errors(
        self, job_id: str, *, page_size: int = _PAGE_SIZE
    ) -> AsyncIterator[dict[str, Any]]:
        """Every import error of a job, following ``links.next`` page by page."""
        path = f"/api/profile-bulk-import-jobs/{job_id}/import-errors"
        async for item in self._paged("import_errors", path, {"page[size]": page_size}):
            yield item

    async def iter_import_job_profiles(
        self, job_id: str, *, page_size: int = _PAGE_SIZE
    ) -> AsyncIterator[JobProfile]:
        """The profiles a bulk import job created or updated: id and e-mail, page by page."""
        path = f"/api/profile-bulk-import-jobs/{job_id}/profiles"
        params = {"fields[profile]": "email", "page[size]": page_size}
        async for item in self._paged("import_job_profiles", path, params):
            email = (item.get("attributes") or {}).get("email")
            yield JobProfile(item["id"], email.lower() if isinstance(email, str) else None)

    async def iter_import_job_profile_ids(
        self, job_id: str, *, page_size: int = _PAGE_SIZE
    ) -> AsyncIterator[str]:
        """The ids of the profiles a bulk import job created or updated, page by page."""
        path = f"/api/profile-bulk-import-jobs/{job_id}/relationships/profiles"
        async for item in self._paged("import_job_profiles", path, {"page[size]": page_size}):
            yield item["id"]

    async def get_list_members_by_email(
        self, list_id: str, emails: Sequence[str]
    ) -> list[ListMember]:
        """Which of ``emails`` (at most 100) are on the list, with ``joined_group_at``.

        One ``filter=any(email,[...])`` call (more only if Klaviyo pages the answer); an
        address that is not a member is simply absent from the result. The addresses
        travel in the URL: keep a call's under ~6 KB (``shared.removals`` cuts batches
        of very long ones short), as servers refuse request lines over ~8 KB.
        """
        if not emails:
            return []
        if len(emails) > MAX_LOOKUP_EMAILS:
            raise ValueError(f"at most {MAX_LOOKUP_EMAILS} e-mails per lookup, got {len(emails)}")
        params = {
            "filter": f"any(email,[{','.join(map(_quoted, emails))}])",
            "fields[profile]": _MEMBER_FIELDS,
            "page[size]": _PAGE_SIZE,
        }
        return [m async for m in self._members(list_id, params)]

    async def iter_list_members(
        self,
        list_id: str,
        *,
        joined_since: datetime | None = None,
        joined_before: datetime | None = None,
        sort: str | None = None,
        page_size: int = _PAGE_SIZE,
    ) -> AsyncIterator[ListMember]:
        """Members of the list (id, e-mail, joined_group_at), page by page.

        ``joined_since`` keeps members who joined at or after it, ``joined_before`` those
        who joined before it; ``sort`` is ``"joined_group_at"`` or ``"-joined_group_at"``.
        A whole list costs one call per 100 members (10,000 for a million): filter.
        """
        if sort not in (None, "joined_group_at", "-joined_group_at"):
            raise ValueError(f"sort must be joined_group_at or -joined_group_at, got {sort!r}")
        conditions = []
        if joined_since is not None:
            conditions.append(f"greater-or-equal(joined_group_at,{_filter_time(joined_since)})")
        if joined_before is not None:
            conditions.append(f"less-than(joined_group_at,{_filter_time(joined_before)})")
        params: dict[str, Any] = {"fields[profile]": _MEMBER_FIELDS, "page[size]": page_size}
        if conditions:
            params["filter"] = conditions[0] if len(conditions) == 1 else _and(conditions)
        if sort is not None:
            params["sort"] = sort
        async for member in self._members(list_id, params):
            yield member

    async def remove_list_members(self, list_id: str, profile_ids: Sequence[str]) -> None:
        """Take up to 1,000 profiles off the list (their consent is left alone).

        Klaviyo skips a profile that is not a member, so a repeated call is harmless.
        """
        if not 1 <= len(profile_ids) <= MAX_REMOVAL_IDS:
            raise ValueError(
                f"1 to {MAX_REMOVAL_IDS} profile ids per removal, got {len(profile_ids)}"
            )
        body = orjson.dumps({"data": [{"type": "profile", "id": pid} for pid in profile_ids]})
        path = f"/api/lists/{list_id}/relationships/profiles"
        await self._request("list_relationships", "DELETE", path, content=body)

    async def _members(self, list_id: str, params: dict[str, Any]) -> AsyncIterator[ListMember]:
        async for item in self._paged("lists_read", f"/api/lists/{list_id}/profiles", params):
            yield ListMember.from_resource(item)

    async def _paged(
        self, family: str, path: str, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """The items of every page of a collection, following ``links.next``."""
        url: str | None = path
        query: dict[str, Any] | None = params
        while url:
            doc = await self._request(family, "GET", url, params=query)
            for item in doc.get("data") or []:
                yield item
            url = (doc.get("links") or {}).get("next")
            query = None  # the next link carries its own query

    async def _request(
        self,
        family: str,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        turn: float | None = None,
    ) -> dict[str, Any]:
        headers = {"content-type": JSONAPI} if content is not None else None
        attempt = 0
        while True:
            attempt += 1
            if turn is None or attempt > 1:
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
            where = httpx.URL(path).path
            raise KlaviyoRetriableError(
                f"Klaviyo {method} {where} timed out ({type(exc).__name__})", method=method
            ) from exc
        except httpx.TransportError as exc:
            where, detail = httpx.URL(path).path, mask_addresses(str(exc))
            raise KlaviyoRetriableError(
                f"Klaviyo {method} {where} failed: {type(exc).__name__}: {detail}", method=method
            ) from exc
