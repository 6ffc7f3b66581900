"""Exact error paths of the Klaviyo client, through httpx.MockTransport (no patching)."""

import logging
import random
from datetime import UTC, datetime, timedelta, timezone

import httpx
import orjson
import pytest

from shared.errors import KlaviyoFatalError, KlaviyoRetriableError
from shared.klaviyo import ImportJob, KlaviyoClient, error_summary
from shared.ratelimit import RateLimit
from shared.retry import RetryPolicy

FAST = RetryPolicy(max_attempts=4, backoff=0.001, max_backoff=0.002, rng=random.Random(3))
LOOSE = {
    f: RateLimit(burst=1000, steady=100000)
    for f in (
        "import_jobs_create",
        "import_jobs_get",
        "import_errors",
        "import_job_profiles",
        "list_relationships",
        "lists_read",
    )
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
        limits=kw.pop("limits", LOOSE),
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


def test_a_detail_that_repeats_the_title_is_said_once():
    throttled = {
        "title": "Request was throttled.",
        "detail": "Request was throttled. Expected available in 1 second.",
    }
    assert error_summary([throttled]) == "Request was throttled. Expected available in 1 second."
    assert error_summary([{"title": "Not found.", "detail": None}]) == "Not found."


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


# --- list members, removals, job profiles (mirror sync) --------------------------------

MEMBERS_URL = "https://a.klaviyo.com/api/lists/L1/profiles"


def _member(pid: str, email: str, joined: str | None) -> dict:
    attributes = {"email": email, "joined_group_at": joined}
    return {"type": "profile", "id": pid, "attributes": attributes}


def _page(data: list, next_url: str | None = None) -> httpx.Response:
    return httpx.Response(200, content=orjson.dumps({"data": data, "links": {"next": next_url}}))


async def test_lookup_by_email_sends_one_filtered_sparse_call_and_parses_members():
    seen = []

    def handler(request):
        seen.append(request)
        return _page(
            [
                _member("P1", "Ada@Example.com", "2026-03-01T10:00:00.250000+00:00"),
                _member("P2", "bob@example.com", "2026-03-01T10:00:01Z"),
                _member("P3", "cy@example.com", None),
            ]
        )

    emails = ["ada@example.com", "bob@example.com", 'o"q\\@example.com']
    async with _client(handler) as client:
        members = await client.get_list_members_by_email("L1", emails)
        assert await client.get_list_members_by_email("L1", []) == []
        with pytest.raises(ValueError, match="at most 100"):
            await client.get_list_members_by_email("L1", [f"u{i}@x.io" for i in range(101)])

    assert len(seen) == 1
    params = seen[0].url.params
    assert seen[0].url.path == "/api/lists/L1/profiles"
    assert params["filter"] == (
        'any(email,["ada@example.com","bob@example.com","o\\"q\\\\@example.com"])'
    )
    assert params["fields[profile]"] == "email,joined_group_at"
    assert params["page[size]"] == "100"
    assert [(m.profile_id, m.email) for m in members] == [
        ("P1", "ada@example.com"),
        ("P2", "bob@example.com"),
        ("P3", "cy@example.com"),
    ]
    assert members[0].joined_group_at_ms == 1772359200250
    assert members[1].joined_group_at == datetime(2026, 3, 1, 10, 0, 1, tzinfo=UTC)
    assert members[2].joined_group_at is None and members[2].joined_group_at_ms == 0


async def test_member_iteration_filters_by_joined_time_sorts_and_follows_pages():
    seen = []

    def handler(request):
        seen.append(request)
        if "page[cursor]" in request.url.params:
            return _page([_member("P2", "b@x.io", "2026-01-02T00:00:00Z")])
        return _page(
            [_member("P1", "a@x.io", "2026-01-01T00:00:00Z")], f"{MEMBERS_URL}?page%5Bcursor%5D=c2"
        )

    since = datetime(2026, 1, 1, tzinfo=UTC)
    before = datetime(2026, 2, 1, 12, 30, 0, 500000, tzinfo=timezone(timedelta(hours=2)))
    async with _client(handler) as client:
        got = [
            m.profile_id
            async for m in client.iter_list_members(
                "L1", joined_since=since, joined_before=before, sort="-joined_group_at"
            )
        ]
        alone = [m async for m in client.iter_list_members("L1", joined_since=since)]
        with pytest.raises(ValueError, match="timezone-aware"):
            [m async for m in client.iter_list_members("L1", joined_since=datetime(2026, 1, 1))]
        with pytest.raises(ValueError, match="sort"):
            [m async for m in client.iter_list_members("L1", sort="email")]

    assert got == ["P1", "P2"]
    first = seen[0].url.params
    assert first["filter"] == (
        "and(greater-or-equal(joined_group_at,2026-01-01T00:00:00Z),"
        "less-than(joined_group_at,2026-02-01T10:30:00.500000Z))"
    )
    assert first["sort"] == "-joined_group_at"
    assert seen[1].url.params["page[cursor]"] == "c2"
    assert seen[2].url.params["filter"] == "greater-or-equal(joined_group_at,2026-01-01T00:00:00Z)"
    assert len(alone) == 2


async def test_removal_deletes_up_to_1000_ids_in_one_jsonapi_body():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(204)

    async with _client(handler) as client:
        await client.remove_list_members("L1", ["P1", "P2"])
        for wrong in ([], [f"P{i}" for i in range(1001)]):
            with pytest.raises(ValueError, match="1 to 1000"):
                await client.remove_list_members("L1", wrong)
    assert len(seen) == 1
    assert seen[0].method == "DELETE"
    assert seen[0].url.path == "/api/lists/L1/relationships/profiles"
    assert seen[0].headers["content-type"] == "application/vnd.api+json"
    assert orjson.loads(seen[0].content) == {
        "data": [{"type": "profile", "id": "P1"}, {"type": "profile", "id": "P2"}]
    }


async def test_job_profiles_and_ids_are_paged():
    def handler(request):
        if request.url.path.endswith("/relationships/profiles"):
            return _page([{"type": "profile", "id": "P1"}, {"type": "profile", "id": "P2"}])
        assert request.url.params["fields[profile]"] == "email"
        return _page([{"type": "profile", "id": "P1", "attributes": {"email": "A@x.io"}}])

    async with _client(handler) as client:
        ids = [i async for i in client.iter_import_job_profile_ids("J1")]
        profiles = [p async for p in client.iter_import_job_profiles("J1")]
    assert ids == ["P1", "P2"]
    assert [(p.profile_id, p.email) for p in profiles] == [("P1", "a@x.io")]


def test_import_jobs_carry_klaviyo_timestamps():
    job = ImportJob.from_document(
        {
            "data": {
                "id": "J",
                "attributes": {
                    "status": "complete",
                    "total_count": 1,
                    "created_at": "2026-01-01T00:00:00.123456+00:00",
                    "started_at": "2026-01-01T00:00:01+00:00",
                    "completed_at": "2026-01-01T00:00:02Z",
                    "expires_at": "2026-01-08T00:00:00+00:00",
                },
            }
        }
    )
    assert job.created_at == datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert job.created_at_ms == 1767225600123
    assert job.completed_at_ms - job.created_at_ms == 1877
    assert job.expires_at - job.created_at > timedelta(days=6)
    bare = ImportJob.from_document({"data": {"id": "J", "attributes": {"created_at": "soon"}}})
    assert bare.created_at is None and bare.created_at_ms == 0 and bare.completed_at_ms == 0


async def test_lookups_never_put_an_address_in_errors_or_log_lines(caplog):
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(calls) == 2:
            return httpx.Response(503)
        return _error(400, "Invalid filter value ada@example.com", None)

    caplog.set_level(logging.DEBUG)
    # The app quiets httpx to WARNING at start (shared/logs.py); this test is about what
    # httpx's own INFO line would show if someone turned it back on.
    caplog.set_level(logging.INFO, logger="httpx")
    async with _client(handler) as client:
        with pytest.raises(KlaviyoFatalError) as info:
            await client.get_list_members_by_email("L1", ["ada@example.com"])
    assert len(calls) == 3
    text = " ".join([str(info.value), info.value.url or "", caplog.text])
    assert "ada@example.com" not in text and "ada%40example.com" not in text
    assert info.value.url == "https://a.klaviyo.com/api/lists/L1/profiles"
    assert "?<query redacted>" in caplog.text  # httpx's own request line, query removed


async def test_limit_overrides_leave_the_other_families_in_force():
    def handler(request):
        return httpx.Response(204)

    only_lists = {"lists_read": RateLimit(burst=1, steady=1)}
    async with _client(handler, limits=only_lists) as client:
        await client.remove_list_members("L1", ["P1"])  # list_relationships: Klaviyo's limit
        assert client._limiters["list_relationships"].limit == RateLimit(burst=10, steady=150)
        assert client._limiters["lists_read"].limit == only_lists["lists_read"]
