"""The Klaviyo sandbox over real HTTP: the behaviour the exporter's tests rely on."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from devtools.klaviyo_sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_LIST_ID,
    AccountSpec,
    KlaviyoSandbox,
    ListSpec,
    RateLimit,
    SandboxConfig,
)
from devtools.klaviyo_sandbox.identifiers import identifier_problems, value_problem
from devtools.klaviyo_sandbox.jsonapi import ApiError
from devtools.klaviyo_sandbox.limits import RateLimiter
from devtools.klaviyo_sandbox.state import SandboxState
from devtools.klaviyo_sandbox.validation import parse_bulk_import

JOBS = "/api/profile-bulk-import-jobs"
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}",
    "revision": "2026-07-15",
    "accept": "application/vnd.api+json",
    "content-type": "application/vnd.api+json",
}
PROFILES_POINTER = "/data/attributes/profiles/data"


# --- helpers ----------------------------------------------------------------------------


def client(sandbox: KlaviyoSandbox, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=sandbox.url, headers={**HEADERS, **headers}, timeout=10)


def profile(email: str | None = None, **attributes: Any) -> dict[str, Any]:
    if email is not None:
        attributes["email"] = email
    return {"type": "profile", "attributes": attributes}


def job_body(profiles: list[dict[str, Any]], lists: tuple[str, ...] = (DEFAULT_LIST_ID,)) -> dict:
    body: dict[str, Any] = {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {"profiles": {"data": profiles}},
        }
    }
    if lists:
        body["data"]["relationships"] = {
            "lists": {"data": [{"type": "list", "id": lid} for lid in lists]}
        }
    return body


def emails(n: int, prefix: str = "user") -> list[dict[str, Any]]:
    return [profile(f"{prefix}{i}@example.com", first_name=f"N{i}") for i in range(n)]


def wait_until(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout}s")


def start_of_fresh_window() -> None:
    """Wait until early in a new 1-second rate-limit window.

    Windows are aligned to the monotonic clock this process shares with the sandbox, so a
    burst sent now lands in one window.
    """
    second = int(time.monotonic())
    wait_until(lambda: int(time.monotonic()) > second and time.monotonic() % 1 < 0.4)


def wait_for_job(sandbox: KlaviyoSandbox, job_id: str) -> dict[str, Any]:
    # In-process inspection is not rate limited, unlike GET /api/profile-bulk-import-jobs.
    return wait_until(
        lambda: (job := sandbox.state.job(job_id))["status"] in ("complete", "cancelled") and job
    )


def only_error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/vnd.api+json")
    errors = response.json()["errors"]
    assert len(errors) == 1
    assert {"id", "status", "code", "title", "detail", "source"} <= errors[0].keys()
    assert errors[0]["status"] == response.status_code
    return errors[0]


def post_job(http: httpx.Client, profiles: list[dict[str, Any]], **kw: Any) -> httpx.Response:
    return http.post(JOBS, json=job_body(profiles, **kw))


def run_job(sandbox: KlaviyoSandbox, http: httpx.Client, profiles: list[dict]) -> dict[str, Any]:
    response = post_job(http, profiles)
    assert response.status_code == 202, response.text
    return wait_for_job(sandbox, response.json()["data"]["id"])


# --- authentication and request checks --------------------------------------------------


@pytest.mark.parametrize("authorization", ["Klaviyo-API-Key pk_wrong", "Bearer pk_test_sandbox"])
def test_wrong_key_is_401(klaviyo_sandbox, authorization):
    with client(klaviyo_sandbox, Authorization=authorization) as http:
        response = http.get(f"/api/lists/{DEFAULT_LIST_ID}")
    assert response.status_code == 401
    assert only_error(response)["code"] == "not_authenticated"


def test_missing_revision_is_400(klaviyo_sandbox):
    headers = {k: v for k, v in HEADERS.items() if k != "revision"}
    response = httpx.get(f"{klaviyo_sandbox.url}/api/lists/{DEFAULT_LIST_ID}", headers=headers)
    assert response.status_code == 400
    assert only_error(response)["source"] == {"parameter": "revision"}


def test_plain_json_content_type_is_415(klaviyo_sandbox):
    with client(klaviyo_sandbox, **{"content-type": "application/json"}) as http:
        response = post_job(http, emails(1))
    assert response.status_code == 415
    assert only_error(response)["code"] == "unsupported_media_type"


def test_body_over_5_mb_is_413_and_creates_nothing(klaviyo_sandbox):
    with client(klaviyo_sandbox) as http:
        response = http.post(JOBS, content=b" " * (5 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert only_error(response)["code"] == "payload_too_large"
    assert klaviyo_sandbox.state.stats()["jobs"]["queued"] == 0


def test_more_than_10000_profiles_is_400(klaviyo_sandbox):
    with client(klaviyo_sandbox) as http:
        response = post_job(http, [profile(f"u{i}@x.io") for i in range(10_001)])
    assert response.status_code == 400
    assert only_error(response)["source"] == {"pointer": PROFILES_POINTER}


@pytest.mark.parametrize(
    ("broken", "pointer"),
    [
        ({"type": "profile", "attributes": {"email": 12345}}, "/3/attributes/email"),
        ({"type": "person", "attributes": {"email": "a@b.io"}}, "/3/type"),
        ({"type": "profile", "attributes": ["a@b.io"]}, "/3/attributes"),
        ({"type": "profile", "attributes": {"email": "a@b.io", "properties": "x"}},
         "/3/attributes/properties"),
        ({"type": "profile", "attributes": {"email": "a@b.io", "location": {"zip": 1011}}},
         "/3/attributes/location/zip"),
        ({"type": "profile", "attributes": {"email": "a@b.io", "phone": "+31612345678"}},
         "/3/attributes/phone"),
        ({"type": "profile", "attributes": {"first_name": "No identifier"}}, "/3/attributes"),
        ({"type": "profile", "attributes": {"email": "a@b.io", "properties": {"x": "y" * 102_400}}},
         "/3"),
    ],
    ids=["email-number", "wrong-type", "attributes-array", "properties-string",
         "location-zip-number", "unknown-field", "no-identifier", "over-100kb"],
)  # fmt: skip
def test_malformed_profile_rejects_whole_job_naming_it(klaviyo_sandbox, broken, pointer):
    profiles = [*emails(3), broken, *emails(2, prefix="later"), broken]
    with client(klaviyo_sandbox) as http:
        response = post_job(http, profiles)
    assert response.status_code == 400
    error = only_error(response)
    assert error["source"]["pointer"] == PROFILES_POINTER + pointer  # the first offender only
    assert error["code"] == "invalid"
    stats = klaviyo_sandbox.state.stats()
    assert sum(stats["jobs"].values()) == 0
    assert stats["profiles"] == 0


def test_unknown_list_is_404_naming_it(klaviyo_sandbox):
    with client(klaviyo_sandbox) as http:
        job = post_job(http, emails(1), lists=(DEFAULT_LIST_ID, "NoSuch"))
        lst = http.get("/api/lists/NoSuch")
    assert job.status_code == lst.status_code == 404
    assert "NoSuch" in only_error(job)["detail"]
    assert only_error(job)["source"] == {"pointer": "/data/relationships/lists/data/1/id"}
    assert "NoSuch" in only_error(lst)["detail"]


# --- jobs -------------------------------------------------------------------------------


def test_job_lifecycle_counts_membership_and_upsert(klaviyo_sandbox):
    good = emails(3)
    bad = [profile("not-an-email"), profile(phone_number="0612345678")]
    with client(klaviyo_sandbox) as http:
        created = post_job(http, [*good, *bad])
        assert created.status_code == 202
        data = created.json()["data"]
        assert data["attributes"]["status"] == "queued"
        assert data["attributes"]["total_count"] == 5
        assert data["attributes"]["completed_at"] is None
        assert created.json()["links"]["self"].startswith(klaviyo_sandbox.url)

        summary = wait_for_job(klaviyo_sandbox, data["id"])
        assert (summary["completed_count"], summary["failed_count"]) == (3, 2)
        job = http.get(f"{JOBS}/{data['id']}").json()["data"]["attributes"]
        assert job["status"] == "complete"
        assert (job["completed_count"], job["failed_count"]) == (3, 2)
        assert job["completed_at"] and job["started_at"]

        # Upsert by e-mail keeps the profile id and updates its attributes.
        before = klaviyo_sandbox.state.profile("user0@example.com")
        run_job(klaviyo_sandbox, http, [profile("USER0@example.com", first_name="Renamed")])
        after = klaviyo_sandbox.state.profile("user0@example.com")
        lst = http.get(f"/api/lists/{DEFAULT_LIST_ID}?additional-fields[list]=profile_count")

    assert after["id"] == before["id"]
    assert after["attributes"]["first_name"] == "Renamed"
    assert klaviyo_sandbox.state.list_emails(DEFAULT_LIST_ID) == [
        "user0@example.com",
        "user1@example.com",
        "user2@example.com",
    ]
    assert lst.json()["data"]["attributes"]["profile_count"] == 3


def test_job_passes_through_queued_and_processing(sandbox_factory):
    sandbox = sandbox_factory(job_delay=0.2, job_seconds_per_1000_profiles=2.0)
    with client(sandbox) as http:
        job_id = post_job(http, emails(300)).json()["data"]["id"]
    seen = [sandbox.state.job(job_id)["status"]]
    wait_until(lambda: seen.append(sandbox.state.job(job_id)["status"]) or seen[-1] == "complete")
    assert seen[0] == "queued"
    assert "processing" in seen
    assert sandbox.state.job(job_id)["completed_count"] == 300


def test_cancel_jobs_switch(sandbox_factory):
    sandbox = sandbox_factory(cancel_jobs=True)
    with client(sandbox) as http:
        summary = run_job(sandbox, http, emails(2))
    assert summary["status"] == "cancelled"
    assert sandbox.state.list_emails(DEFAULT_LIST_ID) == []


def test_import_errors_paginate_with_original_payload(klaviyo_sandbox):
    bad = [profile(f"bad{i}", first_name=f"B{i}") for i in range(5)]
    with client(klaviyo_sandbox) as http:
        job = run_job(klaviyo_sandbox, http, [profile("ok@example.com"), *bad])
        pages, url = [], f"{JOBS}/{job['id']}/import-errors?page[size]=2"
        while url:
            body = http.get(url).json()
            pages.append(body["data"])
            url = body["links"]["next"]
            assert url is None or url.startswith(klaviyo_sandbox.url)
        too_big = http.get(f"{JOBS}/{job['id']}/import-errors?page[size]=101")

    assert [len(p) for p in pages] == [2, 2, 1]
    errors = [e for page in pages for e in page]
    assert [e["attributes"]["original_payload"] for e in errors] == [p["attributes"] for p in bad]
    assert errors[0]["type"] == "import-error"
    assert errors[0]["attributes"]["code"] == "invalid"
    assert errors[0]["attributes"]["source"]["pointer"] == f"{PROFILES_POINTER}/1/attributes/email"
    assert "email" in errors[0]["attributes"]["detail"]
    assert too_big.status_code == 400
    assert only_error(too_big)["source"] == {"parameter": "page[size]"}


def test_another_accounts_job_is_404(sandbox_factory):
    accounts = (
        AccountSpec(name="a", api_keys=("pk_a",), lists=(ListSpec(id="ListA"),)),
        AccountSpec(name="b", api_keys=("pk_b", "pk_b2"), lists=(ListSpec(id="ListB"),)),
    )
    sandbox = sandbox_factory(accounts=accounts)
    with client(sandbox, Authorization="Klaviyo-API-Key pk_a") as a:
        job_id = post_job(a, emails(1), lists=("ListA",)).json()["data"]["id"]
        assert a.get(f"{JOBS}/{job_id}").status_code == 200
    with client(sandbox, Authorization="Klaviyo-API-Key pk_b2") as b:
        assert b.get(f"{JOBS}/{job_id}").status_code == 404
        assert b.get("/api/lists/ListA").status_code == 404
        assert b.get("/api/lists/ListB").status_code == 200


def test_whole_job_checks_agree_with_one_by_one_checks():
    """The fast chunk-wide paths must find exactly what the per-profile checks find."""
    addresses = [
        "ok@example.com",
        "x@sub-domain.example.org",
        "émile@exämple.de",
        "a..b@c.io",
        ".a@b.io",
        "a.@b.io",
        "a@-b.io",
        "a@b-.io",
        "a@b.c",
        "a b@c.io",
        "",
        "a@b.io\nc@d.io",
        "x" * 65 + "@b.io",
        "y" * 250 + "@b.io",
        None,
    ]
    phones = ["+31612345678", "+0123456789", "0612345678", "+1 555 0100", "+123456", "", None]
    attrs = [{"email": e, "phone_number": p} for e in addresses for p in phones]
    attrs = [{k: v for k, v in a.items() if v is not None} or {"external_id": "x"} for a in attrs]
    # Values that blur the batch scan ("", newlines, "..", > 254) force the one-by-one
    # path for the whole chunk, so check a chunk with them and one without.
    blurring = {"", "a..b@c.io", "a@b.io\nc@d.io", "y" * 250 + "@b.io"}
    clean = [a for a in attrs if not blurring & {a.get("email"), a.get("phone_number")}]
    for chunk in (attrs, clean):
        expected = {i: problem for i, a in enumerate(chunk) if (problem := value_problem(a))}
        emails = [a.get("email") for a in chunk]
        phones = [a.get("phone_number") for a in chunk]
        assert identifier_problems(emails, phones) == expected
        assert len(expected) > len(chunk) // 2  # the chunk really exercises failures

    good = [
        profile(f"u{i}@x.io", properties={"n": i}, location={"latitude": 1.5}) for i in range(3)
    ]
    body = job_body([*good, profile(phone_number="+31612345678")])
    assert len(parse_bulk_import(body, 10).profiles) == 4  # the slow path accepts it too
    big = job_body([*good, profile("big@x.io", properties={"blob": "z" * 200_000})])
    with pytest.raises(ApiError, match="larger than"):
        parse_bulk_import(big, 300_000)


@pytest.mark.parametrize("store", [True, False])
def test_upsert_finds_by_email_else_phone_else_external_id(store):
    account = SandboxState(SandboxConfig(store_attributes=store)).accounts[0]

    def upsert(chunk: list[dict[str, Any]]) -> list[int]:
        columns = [
            [(a.get("email") or "").lower() or None for a in chunk],
            [a.get("phone_number") for a in chunk],
            [a.get("external_id") for a in chunk],
        ]
        return account.upsert_columns(*columns, chunk)

    first = upsert(
        [
            {"email": "A@x.io", "phone_number": "+31611111111"},
            {"email": "a@x.io", "first_name": "again in the same chunk"},
            {"email": "b@x.io", "external_id": "ext-b"},
            {"email": "c@x.io"},
        ]
    )
    second = upsert(
        [
            {"phone_number": "+31611111111", "first_name": "no e-mail"},
            {"external_id": "ext-b"},
            {"email": "C@X.IO"},
            {"email": "fresh@x.io", "phone_number": "+31611111111"},  # e-mail decides
        ]
    )
    assert first[0] == first[1] != first[2]
    assert second[:3] == [first[0], first[2], first[3]]
    assert second[3] not in first
    assert account.upsert({"phone_number": "+31611111111"}) == second[3]  # the latest holder
    assert account.profile_count == 4


def test_parse_workers_give_the_same_answers(sandbox_factory):
    sandbox = sandbox_factory(parse_workers=1)
    broken = [*emails(3), {"type": "profile", "attributes": {"email": 12345}}]
    with client(sandbox) as http:
        rejected = post_job(http, broken)
        job = run_job(sandbox, http, [*emails(3), profile("not-an-email")])
    assert rejected.status_code == 400
    assert only_error(rejected)["source"] == {"pointer": f"{PROFILES_POINTER}/3/attributes/email"}
    assert (job["completed_count"], job["failed_count"]) == (3, 1)
    assert len(sandbox.state.list_emails(DEFAULT_LIST_ID)) == 3


def test_list_profiles_without_stored_attributes(sandbox_factory):
    sandbox = sandbox_factory(store_attributes=False)
    with client(sandbox) as http:
        run_job(sandbox, http, [profile("a@x.io", phone_number="+31612345678", first_name="A")])
        data = http.get(f"/api/lists/{DEFAULT_LIST_ID}/profiles").json()["data"]
    assert data[0]["attributes"]["email"] == "a@x.io"
    assert data[0]["attributes"]["phone_number"] == "+31612345678"
    assert data[0]["attributes"]["first_name"] is None  # not kept in this mode


# --- rate limits ------------------------------------------------------------------------


def test_eleventh_post_in_a_second_is_429_and_retry_after_is_honest(klaviyo_sandbox):
    with client(klaviyo_sandbox) as http:
        post_job(http, emails(1))  # warm the connection before timing a window
        start_of_fresh_window()
        statuses = [post_job(http, emails(1)).status_code for _ in range(11)]
        throttled = post_job(http, emails(1))
        retry_after = int(throttled.headers["Retry-After"])
        time.sleep(retry_after)  # exactly what the server asked for, nothing more
        recovered = post_job(http, emails(1))

    assert statuses == [202] * 10 + [429]
    assert throttled.status_code == 429
    assert only_error(throttled)["code"] == "throttled"
    assert retry_after == 1
    assert recovered.status_code == 202
    assert klaviyo_sandbox.state.stats()["throttled"] == 2


def test_steady_limit_gives_retry_after_up_to_a_minute(sandbox_factory):
    limits = {"bulk_import_create": RateLimit(burst=100, steady=3)}
    sandbox = sandbox_factory(rate_limit_overrides=limits)
    with client(sandbox) as http:
        statuses = [post_job(http, emails(1)).status_code for _ in range(3)]
        throttled = post_job(http, emails(1))
    assert statuses == [202] * 3
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60


def test_limits_are_per_account_and_family(sandbox_factory):
    accounts = (
        AccountSpec(name="a", api_keys=("pk_a",), lists=(ListSpec(id="ListA"),)),
        AccountSpec(name="b", api_keys=("pk_b",), lists=(ListSpec(id="ListB"),)),
    )
    limits = {"bulk_import_create": RateLimit(burst=2, steady=100)}
    sandbox = sandbox_factory(accounts=accounts, rate_limit_overrides=limits)
    with (
        client(sandbox, Authorization="Klaviyo-API-Key pk_a") as a,
        client(sandbox, Authorization="Klaviyo-API-Key pk_b") as b,
    ):
        start_of_fresh_window()
        a_posts = [post_job(a, emails(1), lists=("ListA",)).status_code for _ in range(3)]
        assert a_posts == [202, 202, 429]
        assert a.get("/api/lists/ListA").status_code == 200  # another family
        assert post_job(b, emails(1), lists=("ListB",)).status_code == 202  # another account


def test_rate_limits_can_be_turned_off(sandbox_factory):
    sandbox = sandbox_factory(rate_limits=False)
    with client(sandbox) as http:
        assert {post_job(http, emails(1)).status_code for _ in range(25)} == {202}


def test_fixed_windows_never_punish_a_client_twice():
    now = [100.25]
    limiter = RateLimiter(clock=lambda: now[0])
    limit = RateLimit(burst=10, steady=150)
    admitted = 0
    for _ in range(300):  # a client that sends as fast as allowed and obeys Retry-After
        wait = limiter.acquire(("account", "family"), limit)
        if wait:
            now[0] += wait
            assert limiter.acquire(("account", "family"), limit) == 0  # never twice
            admitted += 1
        else:
            admitted += 1
        now[0] += 0.001
    assert admitted == 300
    # 150 fill the first steady window [60, 120) by ~115 s; the rest start at 120 s sharp.
    assert 120 < now[0] < 140


# --- faults -----------------------------------------------------------------------------


def test_error_rate_one_answers_5xx_and_has_no_effect(sandbox_factory):
    sandbox = sandbox_factory(error_rate=1.0)
    with client(sandbox) as http:
        responses = [post_job(http, emails(1)) for _ in range(6)]
    assert {r.status_code for r in responses} <= {500, 502, 503}
    assert all(only_error(r)["code"] == "error" for r in responses)
    stats = sandbox.state.stats()
    assert sum(stats["jobs"].values()) == 0
    assert sum(stats["requests"]["bulk_import_create"].values()) == 6


def test_faults_follow_the_seed(sandbox_factory):
    def statuses(seed: int) -> list[int]:
        sandbox = sandbox_factory(error_rate=0.5, seed=seed, rate_limits=False)
        with client(sandbox) as http:
            return [http.get(f"/api/lists/{DEFAULT_LIST_ID}").status_code for _ in range(20)]

    first = statuses(7)
    assert first == statuses(7)
    assert 200 in first and set(first) - {200}


def test_dropped_connection_raises_on_the_client_and_has_no_effect(sandbox_factory):
    sandbox = sandbox_factory(drop_rate=1.0)
    with client(sandbox) as http, pytest.raises(httpx.TransportError):
        post_job(http, emails(1))
    stats = sandbox.state.stats()
    assert stats["dropped"] == 1
    assert sum(stats["jobs"].values()) == 0


def test_throttle_storm_then_recovery_limited_to_a_family(klaviyo_sandbox):
    klaviyo_sandbox.configure(
        throttle_storm=3,
        throttle_storm_retry_after=7,
        fault_families=frozenset({"bulk_import_create"}),
    )
    with client(klaviyo_sandbox) as http:
        assert http.get(f"/api/lists/{DEFAULT_LIST_ID}").status_code == 200  # not in the storm
        storm = [post_job(http, emails(1)) for _ in range(4)]
    assert [r.status_code for r in storm] == [429, 429, 429, 202]
    assert storm[0].headers["Retry-After"] == "7"
    assert only_error(storm[0])["code"] == "throttled"


def test_slow_responses_are_delayed(sandbox_factory):
    sandbox = sandbox_factory(slow_rate=1.0, slow_seconds=0.3)
    with client(sandbox) as http:
        started = time.monotonic()
        assert http.get(f"/api/lists/{DEFAULT_LIST_ID}").status_code == 200
    assert time.monotonic() - started >= 0.3


# --- lists ------------------------------------------------------------------------------


def test_list_membership_add_remove_and_1000_id_limit(klaviyo_sandbox):
    path = f"/api/lists/{DEFAULT_LIST_ID}/relationships/profiles"
    with client(klaviyo_sandbox) as http:
        run_job(klaviyo_sandbox, http, emails(3))
        ids = [item["id"] for item in http.get(path).json()["data"]]
        removed = http.request("DELETE", path, json={"data": [{"type": "profile", "id": ids[0]}]})
        after_remove = klaviyo_sandbox.state.list_emails(DEFAULT_LIST_ID)
        added = http.post(path, json={"data": [{"type": "profile", "id": ids[0]}]})
        too_many = http.post(path, json={"data": [{"type": "profile", "id": ids[0]}] * 1001})
        unknown = http.post(path, json={"data": [{"type": "profile", "id": "01SBXP" + "9" * 20}]})

    assert len(ids) == 3
    assert removed.status_code == added.status_code == 204
    assert after_remove == ["user1@example.com", "user2@example.com"]
    assert len(klaviyo_sandbox.state.list_emails(DEFAULT_LIST_ID)) == 3
    assert too_many.status_code == 400
    assert only_error(too_many)["source"] == {"pointer": "/data"}
    assert unknown.status_code == 404


def test_list_profiles_filter_and_pagination(klaviyo_sandbox):
    path = f"/api/lists/{DEFAULT_LIST_ID}/profiles"
    with client(klaviyo_sandbox) as http:
        run_job(klaviyo_sandbox, http, emails(5))
        equals = http.get(path, params={"filter": 'equals(email,"User3@example.com")'}).json()
        any_of = http.get(
            path, params={"filter": 'any(email,["user1@example.com","nobody@example.com",'
                          '"user4@example.com"])'}
        ).json()  # fmt: skip
        seen, url = [], f"{path}?page[size]=2"
        while url:
            page = http.get(url).json()
            seen += [p["attributes"]["email"] for p in page["data"]]
            url = page["links"]["next"]
        bad_filter = http.get(path, params={"filter": "greater-than(email,1)"})

    assert [p["attributes"]["email"] for p in equals["data"]] == ["user3@example.com"]
    assert equals["data"][0]["attributes"]["joined_group_at"]
    assert sorted(p["attributes"]["email"] for p in any_of["data"]) == [
        "user1@example.com",
        "user4@example.com",
    ]
    assert seen == [f"user{i}@example.com" for i in range(5)]
    assert bad_filter.status_code == 400


def test_subscribe_records_consent_and_adds_to_list(klaviyo_sandbox):
    body = {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": "fan@example.com",
                                "subscriptions": {
                                    "email": {"marketing": {"consent": "SUBSCRIBED"}}
                                },
                            },
                        }
                    ]
                }
            },
            "relationships": {"list": {"data": {"type": "list", "id": DEFAULT_LIST_ID}}},
        }
    }
    with client(klaviyo_sandbox) as http:
        accepted = http.post("/api/profile-subscription-bulk-create-jobs", json=body)
        body["data"]["attributes"]["profiles"]["data"][0]["attributes"]["email"] = "nope"
        rejected = http.post("/api/profile-subscription-bulk-create-jobs", json=body)
    assert accepted.status_code == 202
    fan = klaviyo_sandbox.state.profile("fan@example.com")
    assert fan["consent"]["email"]["parameters"] == {"marketing": {"consent": "SUBSCRIBED"}}
    assert fan["lists"] == [DEFAULT_LIST_ID]
    assert rejected.status_code == 400


# --- control endpoints, CLI -------------------------------------------------------------


def test_control_endpoints(klaviyo_sandbox):
    base = f"{klaviyo_sandbox.url}/__sandbox"
    with client(klaviyo_sandbox) as http:
        run_job(klaviyo_sandbox, http, emails(2))
        http.get("/api/lists/NoSuch")
        members = httpx.get(f"{base}/lists/{DEFAULT_LIST_ID}/emails").json()
        stats = httpx.get(f"{base}/stats").json()
        recorded = httpx.get(f"{base}/requests").json()["requests"]
        changed = httpx.post(f"{base}/config", json={"error_rate": 1.0, "seed": 3})
        refused = httpx.post(f"{base}/config", json={"error_rate": 2})
        fixed = httpx.post(f"{base}/config", json={"port": 1})
        failing = http.get(f"/api/lists/{DEFAULT_LIST_ID}")
        httpx.post(f"{base}/reset", json={"restore_config": True})
        after_reset = httpx.get(f"{base}/stats").json()
        healthy = http.get(f"/api/lists/{DEFAULT_LIST_ID}")

    assert members["emails"] == ["user0@example.com", "user1@example.com"]
    assert members["count"] == 2
    assert stats["requests"]["bulk_import_create"] == {"202": 1}
    assert stats["requests"]["lists_read"] == {"404": 1}
    assert stats["jobs"]["complete"] == 1
    assert stats["lists"] == {DEFAULT_LIST_ID: 2}
    assert stats["max_concurrent_requests"] >= 1
    assert [r["method"] for r in recorded] == ["POST", "GET"]
    assert recorded[0]["headers"]["authorization"] == "Klaviyo-API-Key <redacted>"
    assert recorded[0]["body"]["data"]["type"] == "profile-bulk-import-job"
    assert changed.status_code == 200 and changed.json()["error_rate"] == 1.0
    assert refused.status_code == fixed.status_code == 400
    assert failing.status_code >= 500
    assert after_reset["jobs"]["complete"] == 0 and after_reset["lists"] == {DEFAULT_LIST_ID: 0}
    assert healthy.status_code == 200


def test_recording_is_capped_in_requests_and_body_bytes(sandbox_factory):
    sandbox = sandbox_factory(max_recorded_requests=3, max_recorded_bytes=1000, rate_limits=False)
    with client(sandbox) as http:
        for _ in range(4):
            http.get(f"/api/lists/{DEFAULT_LIST_ID}")
        for prefix in ("old", "new"):
            post_job(http, emails(6, prefix=prefix))  # ~600 bytes each
    recorded = sandbox.state.recorded_requests()
    assert [r["method"] for r in recorded] == ["GET", "POST", "POST"]
    assert recorded[1]["body_omitted"] and recorded[1]["body"] is None  # oldest body let go
    assert recorded[2]["body"]["data"]["attributes"]["profiles"]["data"][0]["attributes"][
        "email"
    ].startswith("new")


def test_public_surface():
    import devtools.klaviyo_sandbox as package

    assert set(package.__all__) == {
        "DEFAULT_API_KEY", "DEFAULT_LIST_ID", "DEFAULT_LIST_NAME", "FAMILIES",
        "KLAVIYO_RATE_LIMITS", "AccountSpec", "KlaviyoSandbox", "ListSpec", "RateLimit",
        "SandboxConfig", "SandboxInspector", "serve",
    }  # fmt: skip


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="error_rate"):
        SandboxConfig(error_rate=1.5)
    with pytest.raises(ValueError, match="unknown endpoint families"):
        SandboxConfig(fault_families=frozenset({"nope"}))


def test_cli_prints_its_url_and_serves(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.klaviyo_sandbox", "--port", "0",
         "--api-key", "pk_cli", "--list", "AbC123:Newsletter", "--no-rate-limits"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first[0] == "LISTENING"
        response = httpx.get(
            f"{first[1]}/api/lists/AbC123",
            headers={**HEADERS, "Authorization": "Klaviyo-API-Key pk_cli"},
        )
        assert response.json()["data"]["attributes"]["name"] == "Newsletter"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
