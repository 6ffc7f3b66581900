"""Exact error paths of the Klaviyo client, through httpx.MockTransport (no patching)."""

import random

import httpx
import orjson
import pytest

from shared.errors import KlaviyoFatalError, KlaviyoRetriableError
from shared.klaviyo import KlaviyoClient, error_summary
from shared.ratelimit import RateLimit
from shared.retry import RetryPolicy

FAST = RetryPolicy(max_attempts=4, backoff=0.001, max_backoff=0.002, rng=random.Random(3))
LOOSE = {
    f: RateLimit(burst=1000, steady=100000)
    for f in ("import_jobs_create", "import_jobs_get", "import_errors", "lists_read")
}

JOB = {
    "data": {
        "type": "profile-bulk-import-job",
        "id": "job1",
        "attributes": {"status": "queued", "total_count": 2, "created_at": "2026-01-01T00:00:00Z"},
    }
}


def _client(handler, **kw) -> KlaviyoClient:
    return KlaviyoClient(
        "pk_secret_value",
        base_url="https://a.klaviyo.com",
        retry=kw.pop("retry", FAST),
        limits=LOOSE,
        transport=httpx.MockTransport(handler),
        **kw,
    )


def _error(status: int, detail: str, pointer: str | None = None) -> httpx.Response:
    err = {"id": "e", "status": status, "code": "x", "title": "Error", "detail": detail}
    if pointer:
        err["source"] = {"pointer": pointer}
    return httpx.Response(status, json={"errors": [err]})


async def test_sends_jsonapi_headers_and_body():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json=JOB)

    async with _client(handler, revision="2026-07-15") as client:
        job = await client.create_import_job(b'{"data":{}}')
    request = seen[0]
    assert request.url == "https://a.klaviyo.com/api/profile-bulk-import-jobs"
    assert request.headers["authorization"] == "Klaviyo-API-Key pk_secret_value"
    assert request.headers["revision"] == "2026-07-15"
    assert request.headers["content-type"] == "application/vnd.api+json"
    assert request.headers["accept"] == "application/vnd.api+json"
    assert job.id == "job1" and job.status == "queued" and not job.done


async def test_429_waits_for_retry_after_then_succeeds():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"errors": []})
        return httpx.Response(202, json=JOB)

    async with _client(handler) as client:
        job = await client.create_import_job(b"{}")
        assert client.throttled == 1 and client.retries == 1
    assert job.id == "job1" and len(calls) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retried(status):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(status) if len(calls) < 3 else httpx.Response(202, json=JOB)

    async with _client(handler) as client:
        assert (await client.create_import_job(b"{}")).id == "job1"
    assert len(calls) == 3


async def test_timeouts_and_dropped_connections_are_retried_then_give_up():
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) % 2:
            raise httpx.ReadTimeout("slow", request=request)
        raise httpx.RemoteProtocolError("dropped", request=request)

    async with _client(handler) as client:
        with pytest.raises(KlaviyoRetriableError, match=r"dropped|timed out"):
            await client.get_import_job("job1")
    assert len(calls) == FAST.max_attempts


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_stop_at_once_with_klaviyo_detail(status):
    calls = []

    def handler(request):
        calls.append(1)
        return _error(status, "List Y6nRLr does not exist.")

    async with _client(handler) as client:
        with pytest.raises(KlaviyoFatalError) as info:
            await client.get_list("Y6nRLr")
    assert len(calls) == 1
    assert info.value.status == status
    assert "List Y6nRLr does not exist." in str(info.value)
    assert "pk_secret_value" not in str(info.value)


async def test_import_errors_follow_next_links_across_pages():
    pages = {
        None: (
            ["a", "b"],
            "https://a.klaviyo.com/api/profile-bulk-import-jobs/j/import-errors?page%5Bcursor%5D=2",
        ),
        "2": (["c"], None),
    }

    def handler(request):
        cursor = request.url.params.get("page[cursor]")
        if cursor is None:
            assert request.url.params["page[size]"] == "100"
        ids, nxt = pages[cursor]
        data = [{"type": "import-error", "id": i, "attributes": {}} for i in ids]
        return httpx.Response(200, content=orjson.dumps({"data": data, "links": {"next": nxt}}))

    async with _client(handler) as client:
        got = [e["id"] async for e in client.iter_import_errors("j")]
    assert got == ["a", "b", "c"]


def test_repr_never_shows_the_key():
    client = _client(lambda r: httpx.Response(200))
    assert "pk_secret_value" not in repr(client)


def test_error_summaries_mask_addresses():
    errors = [{"title": "Invalid input.", "detail": "'ada.lovelace@example.com' is not allowed"}]
    summary = error_summary(errors)
    assert "ada.lovelace@example.com" not in summary
    assert "a***@example.com" in summary and summary.startswith("Invalid input.: ")


async def test_fatal_error_messages_never_carry_a_full_address():
    def handler(request):
        return _error(
            400, "Profile jane@example.com is invalid", "/data/attributes/profiles/data/0"
        )

    async with _client(handler) as client:
        with pytest.raises(KlaviyoFatalError) as info:
            await client.create_import_job(b"{}")
    assert "jane@example.com" not in str(info.value)
    assert info.value.errors[0]["source"]["pointer"] == "/data/attributes/profiles/data/0"
