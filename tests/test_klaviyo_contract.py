"""The OpenAPI contract checker: what it accepts, what it refuses, and the sandbox's traffic."""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from devtools.klaviyo_sandbox import DEFAULT_API_KEY, DEFAULT_LIST_ID
from shared.klaviyo import KlaviyoClient
from tests.klaviyo_contract import to_json_schema

HEADERS = {
    "Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}",
    "revision": "2026-07-15",
    "accept": "application/vnd.api+json",
    "content-type": "application/vnd.api+json",
}
JOBS = "/api/profile-bulk-import-jobs"

VALID_BODY = {
    "data": {
        "type": "profile-bulk-import-job",
        "attributes": {
            "profiles": {
                "data": [
                    {
                        "type": "profile",
                        "attributes": {
                            "email": "ada@example.com",
                            "phone_number": "+31612345678",
                            "external_id": None,
                            "first_name": "Ada",
                            "location": {"city": "Utrecht", "latitude": 52.09, "zip": None},
                            "properties": {"tier": "gold", "ltv": 12.5},
                        },
                    },
                    {"type": "profile", "attributes": {"external_id": "c-2"}},
                ]
            }
        },
        "relationships": {"lists": {"data": [{"type": "list", "id": DEFAULT_LIST_ID}]}},
    }
}


def broken(path: list, value: object) -> dict:
    body = copy.deepcopy(VALID_BODY)
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


PROFILE0 = ["data", "attributes", "profiles", "data", 0]


def test_knows_the_operations_of_every_slice(klaviyo_contract):
    ids = {op.operation_id for op in klaviyo_contract.operations()}
    assert {
        "bulk_import_profiles",
        "get_bulk_import_profiles_job",
        "get_errors_for_bulk_import_profiles_job",
        "get_list",
        "get_profiles_for_list",
        "get_profile_ids_for_list",
        "add_profiles_to_list",
        "remove_profiles_from_list",
        "bulk_subscribe_profiles",
    } <= ids


def test_accepts_a_valid_bulk_import(klaviyo_contract):
    klaviyo_contract.validate("POST", f"https://a.klaviyo.com{JOBS}", HEADERS, VALID_BODY)


@pytest.mark.parametrize(
    ("method", "url", "headers", "body", "expected"),
    [
        ("POST", JOBS, HEADERS, broken(["data", "type"], "profile-import"),
         "/data/type: 'profile-import' is not one of"),
        ("POST", JOBS, HEADERS, broken([*PROFILE0, "attributes", "email"], 42),
         "/data/attributes/profiles/data/0/attributes/email: 42 is not of type"),
        ("POST", JOBS, HEADERS, broken([*PROFILE0, "attributes", "phone"], "+3161"),
         "'phone' was unexpected"),
        ("POST", JOBS, HEADERS, broken([*PROFILE0, "attributes", "properties"], "gold"),
         "/properties: 'gold' is not of type"),
        ("POST", JOBS, {k: v for k, v in HEADERS.items() if k != "revision"}, VALID_BODY,
         "missing required header 'revision'"),
        ("POST", JOBS, {**HEADERS, "content-type": "application/json"}, VALID_BODY,
         "content-type must be one of"),
        ("POST", JOBS, HEADERS, None, "a request body is required"),
        ("GET", f"{JOBS}/01J/import-errors?page[size]=500", HEADERS, None,
         "'page[size]' must be <= 100"),
        ("GET", f"{JOBS}/01J/import-errors?page_size=5", HEADERS, None,
         "unknown query parameter 'page_size'"),
        ("GET", f"/api/lists/{DEFAULT_LIST_ID}?fields[list]=name,size", HEADERS, None,
         "'size' is not one of"),
        ("GET", f"/api/lists/{DEFAULT_LIST_ID}", {"revision": "2026-07-15"}, None,
         "missing header 'Authorization'"),
        ("PATCH", f"/api/lists/{DEFAULT_LIST_ID}", HEADERS, None, "no such operation"),
    ],
    ids=["wrong-type", "email-number", "unknown-attribute", "properties-string",
         "no-revision", "plain-json", "no-body", "page-size-500", "unknown-param",
         "fields-enum", "no-auth", "unknown-operation"],
)  # fmt: skip
def test_refuses_what_klaviyo_refuses(klaviyo_contract, method, url, headers, body, expected):
    with pytest.raises(AssertionError, match=r"does not conform|no such operation") as caught:
        klaviyo_contract.validate(method, url, headers, body)
    assert expected in str(caught.value)


def test_nullable_is_translated_for_json_schema():
    assert to_json_schema({"type": "string", "enum": ["a"], "nullable": True}, strict=False) == {
        "type": ["string", "null"],
        "enum": ["a", None],
    }
    ref = to_json_schema({"$ref": "#/x", "nullable": True, "description": "d"}, strict=False)
    assert ref == {"description": "d", "anyOf": [{"$ref": "#/x"}, {"type": "null"}]}
    one_of = to_json_schema(
        {"nullable": True, "oneOf": [{"type": "string"}, {"type": "number"}]}, strict=False
    )
    assert one_of["anyOf"][1] == {"type": "null"}


def test_every_request_of_a_sandbox_session_conforms(klaviyo_sandbox, klaviyo_contract):
    """A scripted session of valid calls: what the sandbox records, and what it answers."""
    responses: list[tuple[str, str, httpx.Response]] = []

    def call(http: httpx.Client, method: str, url: str, **kw: object) -> httpx.Response:
        response = http.request(method, url, **kw)
        assert response.status_code < 300, response.text
        responses.append((method, url, response))
        return response

    with httpx.Client(base_url=klaviyo_sandbox.url, headers=HEADERS, timeout=10) as http:
        bad = {"type": "profile", "attributes": {"email": "not-an-email"}}
        body = broken(["data", "attributes", "profiles", "data", 1], bad)
        job_id = call(http, "POST", JOBS, json=body).json()["data"]["id"]
        deadline = time.monotonic() + 5
        while klaviyo_sandbox.state.job(job_id)["status"] != "complete":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        call(http, "GET", f"{JOBS}/{job_id}?include=lists&fields[profile-bulk-import-job]=status")
        call(http, "GET", f"{JOBS}/{job_id}/import-errors?page[size]=10")
        call(http, "GET", f"/api/lists/{DEFAULT_LIST_ID}?additional-fields[list]=profile_count")
        call(http, "GET", f"/api/lists/{DEFAULT_LIST_ID}/profiles",
             params={"filter": 'equals(email,"ada@example.com")', "page[size]": "5"})  # fmt: skip
        ids = call(http, "GET", f"/api/lists/{DEFAULT_LIST_ID}/relationships/profiles")
        members = {"data": [{"type": "profile", "id": ids.json()["data"][0]["id"]}]}
        path = f"/api/lists/{DEFAULT_LIST_ID}/relationships/profiles"
        call(http, "DELETE", path, json=members)
        call(http, "POST", path, json=members)
        subscription = {
            "data": {
                "type": "profile-subscription-bulk-create-job",
                "attributes": {
                    "custom_source": "contract test",
                    "profiles": {
                        "data": [
                            {
                                "type": "profile",
                                "attributes": {
                                    "email": "ada@example.com",
                                    "subscriptions": {
                                        "email": {"marketing": {"consent": "SUBSCRIBED"}}
                                    },
                                },
                            }
                        ]
                    },
                },
                "relationships": {"list": {"data": {"type": "list", "id": DEFAULT_LIST_ID}}},
            }
        }
        call(http, "POST", "/api/profile-subscription-bulk-create-jobs", json=subscription)

    recorded = klaviyo_sandbox.state.recorded_requests()
    assert len(recorded) == len(responses) == 9
    for request in recorded:
        assert not request["body_omitted"]
        klaviyo_contract.validate_recorded(request)
    for method, url, response in responses:
        body = response.json() if response.content else None
        klaviyo_contract.validate_response(method, url, response.status_code, body)


def test_sandbox_errors_fit_the_documented_error_shape(klaviyo_sandbox, klaviyo_contract):
    with httpx.Client(base_url=klaviyo_sandbox.url, headers=HEADERS) as http:
        response = http.post(JOBS, json=broken([*PROFILE0, "attributes", "email"], 42))
    assert response.status_code == 400
    klaviyo_contract.validate_response("POST", JOBS, 400, response.json())


class _RecordingTransport(httpx.AsyncBaseTransport):
    """The real transport, keeping each response's status and body for the contract."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.responses: list[tuple[str, str, int, bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        body = await response.aread()
        self.responses.append((request.method, str(request.url), response.status_code, body))
        return httpx.Response(
            response.status_code, headers=response.headers, content=body, request=request
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_every_sync_request_of_the_client_conforms(klaviyo_sandbox, klaviyo_contract):
    """The client's list-member, removal and job-profile calls, against the slices."""
    past = datetime.now(UTC) - timedelta(days=3)
    klaviyo_sandbox.state.add_list_members(DEFAULT_LIST_ID, ["form@example.com"], joined_at=past)
    transport = _RecordingTransport()
    async with KlaviyoClient(
        DEFAULT_API_KEY, base_url=klaviyo_sandbox.url, transport=transport
    ) as client:
        job = await client.create_import_job(orjson.dumps(VALID_BODY))
        deadline = time.monotonic() + 5
        while klaviyo_sandbox.state.job(job.id)["status"] != "complete":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        job = await client.get_import_job(job.id)
        profiles = [p async for p in client.iter_import_job_profiles(job.id, page_size=1)]
        ids = [i async for i in client.iter_import_job_profile_ids(job.id, page_size=1)]
        found = await client.get_list_members_by_email(
            DEFAULT_LIST_ID, ["ada@example.com", "form@example.com", "nobody@example.com"]
        )
        window = [
            m
            async for m in client.iter_list_members(
                DEFAULT_LIST_ID,
                joined_since=past - timedelta(seconds=1),
                joined_before=datetime.now(UTC) + timedelta(minutes=1),
                sort="-joined_group_at",
                page_size=1,
            )
        ]
        await client.remove_list_members(DEFAULT_LIST_ID, [p.profile_id for p in profiles])

    assert job.created_at is not None and job.completed_at_ms >= job.created_at_ms
    assert [p.email for p in profiles] == ["ada@example.com", None] and len(ids) == 2
    assert {m.email for m in found} == {"ada@example.com", "form@example.com"}
    # Newest first; the job's two profiles joined together, so the later profile leads.
    assert [m.email for m in window] == [None, "ada@example.com", "form@example.com"]
    assert klaviyo_sandbox.state.list_emails(DEFAULT_LIST_ID) == ["form@example.com"]

    recorded = klaviyo_sandbox.state.recorded_requests()
    operations = {klaviyo_contract.find(r["method"], r["url"]).operation_id for r in recorded}
    assert operations == {
        "bulk_import_profiles",
        "get_bulk_import_profiles_job",
        "get_profiles_for_bulk_import_profiles_job",
        "get_profile_ids_for_bulk_import_profiles_job",
        "get_profiles_for_list",
        "remove_profiles_from_list",
    }
    for request in recorded:
        klaviyo_contract.validate_recorded(request)
    assert len(transport.responses) == len(recorded)
    for method, url, status, body in transport.responses:
        klaviyo_contract.validate_response(
            method, url, status, orjson.loads(body) if body else None
        )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('filter=equals(first_name,"Ada")', "'first_name' cannot be filtered on"),
        ('filter=contains(email,"a")', "not 'contains'"),
        ('filter=greater-than(joined_group_at,"2026-01-01T00:00:00Z")', "without quotes"),
        ('filter=any(email,["a@x.io"]', "unbalanced"),
        ("sort=email", "'email' is not one of"),
        ("fields[profile]=email,shoe_size", "'shoe_size' is not one of"),
        ("page[size]=101", "must be <= 100"),
    ],
)
def test_refuses_list_member_queries_klaviyo_refuses(klaviyo_contract, query, expected):
    with pytest.raises(AssertionError, match="does not conform") as caught:
        klaviyo_contract.validate("GET", f"/api/lists/L/profiles?{query}", HEADERS)
    assert expected in str(caught.value)


def test_refuses_a_removal_body_without_ids(klaviyo_contract):
    path = f"/api/lists/{DEFAULT_LIST_ID}/relationships/profiles"
    with pytest.raises(AssertionError, match="'id' is a required property"):
        klaviyo_contract.validate("DELETE", path, HEADERS, {"data": [{"type": "profile"}]})
