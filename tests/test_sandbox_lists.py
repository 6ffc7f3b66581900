"""The sandbox's list members as Klaviyo documents them: joined_group_at, filters, sort,
sparse fieldsets, cursor pages, removal; the import-job profile endpoints; the control
hooks that pre-load "sign-up form" members."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from devtools.klaviyo_sandbox import DEFAULT_LIST_ID, RateLimit, SandboxConfig
from devtools.klaviyo_sandbox.filters import parse_filter
from devtools.klaviyo_sandbox.jsonapi import ApiError
from tests.test_sandbox import client, emails, only_error, post_job, run_job, wait_for_job

MEMBERS = f"/api/lists/{DEFAULT_LIST_ID}/profiles"
MEMBER_IDS = f"/api/lists/{DEFAULT_LIST_ID}/relationships/profiles"


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def joined_by_email(sandbox) -> dict[str, datetime]:
    return {
        m["email"]: when(m["joined_group_at"]) for m in sandbox.state.list_members(DEFAULT_LIST_ID)
    }


def all_pages(http: httpx.Client, path: str, **params: str) -> list[dict[str, Any]]:
    items, url, query = [], path, params
    while url:
        response = http.get(url, params=query)
        assert response.status_code == 200, response.text
        items += response.json()["data"]
        url, query = response.json()["links"]["next"], None
    return items


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- joined_group_at --------------------------------------------------------------------


def test_joined_group_at_is_set_on_join_kept_on_re_add_and_renewed_after_removal(
    klaviyo_sandbox,
):
    with client(klaviyo_sandbox) as http:
        job = post_job(http, emails(3)).json()["data"]
        wait_for_job(klaviyo_sandbox, job["id"])
        first = joined_by_email(klaviyo_sandbox)
        run_job(klaviyo_sandbox, http, emails(3))  # the same people again, through a job
        ids = [p["id"] for p in http.get(MEMBER_IDS).json()["data"]]
        one = {"data": [{"type": "profile", "id": ids[0]}]}
        assert http.post(MEMBER_IDS, json=one).status_code == 204  # again, while a member
        again = joined_by_email(klaviyo_sandbox)
        assert http.request("DELETE", MEMBER_IDS, json=one).status_code == 204
        time.sleep(0.002)  # a clock step, so the new join cannot share the old microsecond
        assert http.post(MEMBER_IDS, json=one).status_code == 204
        renewed = joined_by_email(klaviyo_sandbox)
        listed = http.get(MEMBERS, params={"fields[profile]": "email,joined_group_at"}).json()

    created = when(job["attributes"]["created_at"])
    assert all(t >= created for t in first.values())
    assert again == first
    rejoined = klaviyo_sandbox.state.list_members(DEFAULT_LIST_ID)
    rejoined_email = next(m["email"] for m in rejoined if m["id"] == ids[0])
    assert renewed[rejoined_email] > first[rejoined_email]
    assert {e: t for e, t in renewed.items() if e != rejoined_email} == {
        e: t for e, t in first.items() if e != rejoined_email
    }
    served = {p["attributes"]["email"]: p["attributes"]["joined_group_at"] for p in listed["data"]}
    assert {e: when(t) for e, t in served.items()} == renewed
    assert all(t.endswith("+00:00") and "." in t for t in served.values())  # Klaviyo's format


def test_sign_up_form_members_keep_their_past_join_when_an_export_adds_them(klaviyo_sandbox):
    past = datetime.now(UTC) - timedelta(days=30)
    added = klaviyo_sandbox.state.add_list_members(
        DEFAULT_LIST_ID, ["user0@example.com", "Form@Example.com"], joined_at=past
    )
    with client(klaviyo_sandbox) as http:
        run_job(klaviyo_sandbox, http, emails(2))
    joined = joined_by_email(klaviyo_sandbox)
    assert added == 2
    assert abs(joined["user0@example.com"] - past) < timedelta(milliseconds=1)
    assert abs(joined["form@example.com"] - past) < timedelta(milliseconds=1)
    assert joined["user1@example.com"] > past + timedelta(days=29)
    assert klaviyo_sandbox.state.remove_list_members(DEFAULT_LIST_ID, ["form@example.com"]) == 1
    assert sorted(joined_by_email(klaviyo_sandbox)) == ["user0@example.com", "user1@example.com"]


def test_control_api_preloads_lists_and_reads_their_members(klaviyo_sandbox):
    base = f"{klaviyo_sandbox.url}/__sandbox/lists/{DEFAULT_LIST_ID}/members"
    added = httpx.post(
        base, json={"emails": ["a@x.io", "b@x.io"], "joined_at": "2024-05-01T12:00:00Z"}
    )
    again = httpx.post(base, json={"emails": ["a@x.io"], "joined_at": 0})
    listed = httpx.get(base).json()
    removed = httpx.request("DELETE", base, json={"emails": ["b@x.io", "nobody@x.io"]})
    bad = httpx.post(base, json={"emails": "a@x.io"})
    unknown = httpx.get(f"{klaviyo_sandbox.url}/__sandbox/lists/NoSuch/members")

    assert added.json()["added"] == 2 and again.json()["added"] == 0
    assert listed["count"] == 2
    assert [m["email"] for m in listed["members"]] == ["a@x.io", "b@x.io"]
    assert listed["members"][0]["joined_group_at"] == "2024-05-01T12:00:00.000000+00:00"
    assert listed["members"][0]["joined_at"] == when("2024-05-01T12:00:00+00:00").timestamp()
    assert removed.json()["removed"] == 1
    assert bad.status_code == 400 and unknown.status_code == 404


# --- filters ----------------------------------------------------------------------------


def test_any_takes_up_to_100_addresses_and_equals_one(klaviyo_sandbox):
    klaviyo_sandbox.state.add_list_members(DEFAULT_LIST_ID, [f"u{i}@x.io" for i in range(120)])
    wanted = [f"u{i}@x.io" for i in range(0, 120, 2)] + [f"nobody{i}@x.io" for i in range(40)]
    values = ",".join(f'"{e}"' for e in wanted)
    with client(klaviyo_sandbox) as http:
        hundred = http.get(MEMBERS, params={"filter": f"any(email,[{values}])", "page[size]": 100})
        over = http.get(MEMBERS, params={"filter": f'any(email,[{values},"x@x.io"])'})
        equals = http.get(MEMBERS, params={"filter": "equals(email,'U7@X.io')"})
        ids = http.get(MEMBER_IDS, params={"filter": 'equals(email,"u7@x.io")'})

    found = [p["attributes"]["email"] for p in hundred.json()["data"]]
    assert sorted(found) == sorted(f"u{i}@x.io" for i in range(0, 120, 2))
    assert hundred.json()["links"]["next"] is None
    assert over.status_code == 400
    assert only_error(over)["source"] == {"parameter": "filter"}
    assert [p["attributes"]["email"] for p in equals.json()["data"]] == ["u7@x.io"]
    assert ids.json()["data"] == [{"type": "profile", "id": equals.json()["data"][0]["id"]}]


def test_joined_group_at_comparisons_combine_with_and_or_commas(klaviyo_sandbox):
    day = datetime(2025, 1, 10, tzinfo=UTC)
    for n in range(5):
        klaviyo_sandbox.state.add_list_members(
            DEFAULT_LIST_ID, [f"d{n}@x.io"], joined_at=day + timedelta(days=n)
        )

    def found(expression: str) -> list[str]:
        with client(klaviyo_sandbox) as http:
            items = all_pages(
                http, MEMBERS, filter=expression, sort="joined_group_at", **{"page[size]": "1"}
            )
            # Unsorted (by profile), the same members come, in the same order here.
            by_profile = all_pages(http, MEMBERS, filter=expression, **{"page[size]": "2"})
        assert [p["id"] for p in by_profile] == [p["id"] for p in items]
        return [p["attributes"]["email"] for p in items]

    d1, d3 = stamp(day + timedelta(days=1)), stamp(day + timedelta(days=3))
    later = ["d1@x.io", "d2@x.io", "d3@x.io", "d4@x.io"]
    assert found(f"greater-or-equal(joined_group_at,{d1})") == later
    assert found(f"greater-than(joined_group_at,{d1})") == ["d2@x.io", "d3@x.io", "d4@x.io"]
    assert found(f"less-than(joined_group_at,{d1})") == ["d0@x.io"]
    assert found(f"less-or-equal(joined_group_at,{d1})") == ["d0@x.io", "d1@x.io"]
    between = f"greater-than(joined_group_at,{d1}),less-or-equal(joined_group_at,{d3})"
    assert found(between) == ["d2@x.io", "d3@x.io"]
    assert found(f"and({between})") == ["d2@x.io", "d3@x.io"]
    offset = (day + timedelta(days=3)).astimezone(timezone_minus_7()).isoformat()
    assert found(f"less-than(joined_group_at,{offset})") == ["d0@x.io", "d1@x.io", "d2@x.io"]
    assert found(f'and(any(email,["d0@x.io","d4@x.io"]),greater-than(joined_group_at,{d1}))') == [
        "d4@x.io"
    ]


def timezone_minus_7() -> timezone:
    return timezone(timedelta(hours=-7))


@pytest.mark.parametrize(
    "expression",
    [
        'greater-than(joined_group_at,"2025-01-01T00:00:00Z")',  # datetimes are unquoted
        "equals(email,ada@x.io)",  # strings are quoted
        'or(equals(email,"a@x.io"),equals(email,"b@x.io"))',
        'not(equals(email,"a@x.io"))',
        'equals(first_name,"Ada")',
        "greater-than(email,1)",
        'contains(email,"x")',
        'equals(email,"a@x.io"',
        "greater-than(joined_group_at,yesterday)",
        "",
    ],
)
def test_filters_klaviyo_refuses_are_400(klaviyo_sandbox, expression):
    with client(klaviyo_sandbox) as http:
        response = http.get(MEMBERS, params={"filter": expression})
    assert response.status_code == 400
    assert only_error(response)["source"] == {"parameter": "filter"}


def test_filter_strings_may_hold_commas_quotes_and_escapes():
    [condition] = parse_filter(r'any(email,["o\'brien@x.io","a,b@x.io",' + "'c)d@x.io'])")
    assert condition.value == ("o'brien@x.io", "a,b@x.io", "c)d@x.io")
    # An unencoded '+' of a UTC offset arrives as a space; it is read back as '+'.
    [moment] = parse_filter("greater-than(joined_group_at,2025-01-01T01:00:00 01:00)")
    assert moment.value == int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
    with pytest.raises(ApiError):
        parse_filter('equals(email,"a@x.io") trailing')


# --- sort, cursors, sparse fieldsets ----------------------------------------------------


def test_sorted_pages_are_stable_while_members_leave_and_join(klaviyo_sandbox):
    base = datetime(2025, 3, 1, tzinfo=UTC)
    # Ties on purpose: pairs share a joined time, so the order needs its tie-break.
    for n in range(12):
        klaviyo_sandbox.state.add_list_members(
            DEFAULT_LIST_ID, [f"s{n:02d}@x.io"], joined_at=base + timedelta(hours=n // 2)
        )
    expected = [f"s{n:02d}@x.io" for n in range(12)]
    with client(klaviyo_sandbox) as http:
        for sort, order in (("joined_group_at", expected), ("-joined_group_at", expected[::-1])):
            first = http.get(MEMBERS, params={"sort": sort, "page[size]": 5}).json()
            seen = [p["attributes"]["email"] for p in first["data"]]
            # Someone already served leaves, and a newcomer joins, between two pages.
            klaviyo_sandbox.state.remove_list_members(DEFAULT_LIST_ID, [seen[0]])
            klaviyo_sandbox.state.add_list_members(DEFAULT_LIST_ID, ["late@x.io"])
            url = first["links"]["next"]
            while url:
                page = http.get(url).json()
                seen += [p["attributes"]["email"] for p in page["data"]]
                url = page["links"]["next"]
            late_at_end = sort == "joined_group_at"
            assert [e for e in seen if e != "late@x.io"] == order
            assert ("late@x.io" in seen) == late_at_end
            klaviyo_sandbox.state.remove_list_members(DEFAULT_LIST_ID, ["late@x.io"])
            klaviyo_sandbox.state.add_list_members(
                DEFAULT_LIST_ID, [seen[0]], joined_at=base + timedelta(hours=int(seen[0][1:3]) // 2)
            )
        other = http.get(MEMBERS, params={"sort": "joined_group_at", "page[size]": 2}).json()
        crossed = http.get(MEMBERS, params={"sort": "-joined_group_at",
                                             "page[cursor]": _cursor_of(other)})  # fmt: skip
        bad_sort = http.get(MEMBERS, params={"sort": "email"})
        big_page = http.get(MEMBERS, params={"page[size]": 101})
    assert crossed.status_code == 400
    assert only_error(crossed)["source"] == {"parameter": "page[cursor]"}
    assert bad_sort.status_code == 400 and big_page.status_code == 400


def _cursor_of(document: dict[str, Any]) -> str:
    return httpx.URL(document["links"]["next"]).params["page[cursor]"]


def test_default_order_is_by_profile_and_ids_page_the_same_way(klaviyo_sandbox):
    with client(klaviyo_sandbox) as http:
        run_job(klaviyo_sandbox, http, emails(7))
        members = all_pages(http, MEMBERS, **{"page[size]": "3"})
        ids = all_pages(http, MEMBER_IDS, **{"page[size]": "3", "sort": "-joined_group_at"})
    assert [p["id"] for p in members] == sorted(p["id"] for p in members)
    assert sorted(p["id"] for p in ids) == [p["id"] for p in members]


def test_sparse_fieldsets_select_attributes_and_refuse_unknown_ones(klaviyo_sandbox):
    with client(klaviyo_sandbox) as http:
        run_job(klaviyo_sandbox, http, emails(1))
        lean = http.get(MEMBERS, params={"fields[profile]": "email,joined_group_at"}).json()
        nested = http.get(MEMBERS, params={"fields[profile]": "location.city"}).json()
        unknown = http.get(MEMBERS, params={"fields[profile]": "email,shoe_size"})
    assert set(lean["data"][0]["attributes"]) == {"email", "joined_group_at"}
    assert lean["data"][0]["id"] and lean["data"][0]["type"] == "profile"
    assert nested["data"][0]["attributes"] == {"location": None}
    assert unknown.status_code == 400
    assert only_error(unknown)["source"] == {"parameter": "fields[profile]"}


def test_lookups_by_email_are_cheap_without_stored_attributes(sandbox_factory):
    sandbox = sandbox_factory(store_attributes=False)
    sandbox.state.add_list_members(DEFAULT_LIST_ID, [f"m{i}@x.io" for i in range(50_000)])
    wanted = ",".join(f'"m{i}@x.io"' for i in range(0, 50_000, 500))
    with client(sandbox) as http:
        page = http.get(
            MEMBERS,
            params={"filter": f"any(email,[{wanted}])", "fields[profile]": "email,joined_group_at",
                    "page[size]": 100},
        ).json()  # fmt: skip
    assert sorted(p["attributes"]["email"] for p in page["data"]) == sorted(
        f"m{i}@x.io" for i in range(0, 50_000, 500)
    )


# --- removal ----------------------------------------------------------------------------


def test_remove_skips_non_members_and_refuses_unknown_ids(klaviyo_sandbox):
    with client(klaviyo_sandbox) as http:
        run_job(klaviyo_sandbox, http, emails(3))
        ids = [p["id"] for p in http.get(MEMBER_IDS).json()["data"]]
        body = {"data": [{"type": "profile", "id": i} for i in ids[:2]]}
        first = http.request("DELETE", MEMBER_IDS, json=body)
        again = http.request("DELETE", MEMBER_IDS, json=body)  # no longer members: no-op
        unknown = http.request(
            "DELETE",
            MEMBER_IDS,
            json={"data": [{"type": "profile", "id": ids[2]},
                           {"type": "profile", "id": "01SBXP" + "9" * 20}]},
        )  # fmt: skip
        too_many = http.request("DELETE", MEMBER_IDS, json={"data": body["data"][:1] * 1001})
    assert first.status_code == again.status_code == 204
    assert unknown.status_code == 404
    assert only_error(unknown)["source"] == {"pointer": "/data/1/id"}
    assert klaviyo_sandbox.state.list_emails(DEFAULT_LIST_ID) == ["user2@example.com"]
    assert too_many.status_code == 400
    operations = klaviyo_sandbox.state.stats()["operations"]
    assert operations["DELETE /api/lists/{id}/relationships/profiles"] == {
        "204": 2,
        "404": 1,
        "400": 1,
    }


# --- import job profiles ----------------------------------------------------------------


def test_job_profiles_page_with_sparse_fields_until_the_job_expires(klaviyo_sandbox):
    with client(klaviyo_sandbox) as http:
        job = run_job(klaviyo_sandbox, http, emails(5))
        path = f"/api/profile-bulk-import-jobs/{job['id']}"
        profiles = all_pages(
            http, f"{path}/profiles", **{"page[size]": "2", "fields[profile]": "email"}
        )
        ids = all_pages(http, f"{path}/relationships/profiles", **{"page[size]": "2"})
        resource = http.get(path).json()["data"]["attributes"]
        no_joined = http.get(f"{path}/profiles", params={"fields[profile]": "joined_group_at"})
        klaviyo_sandbox.state.expire_job(job["id"])
        gone = [
            http.get(p).status_code
            for p in (path, f"{path}/profiles", f"{path}/relationships/profiles")
        ]

    assert [p["attributes"] for p in profiles] == [
        {"email": f"user{i}@example.com"} for i in range(5)
    ]
    assert [p["id"] for p in profiles] == [p["id"] for p in ids]
    created, started, completed = (
        when(resource[k]) for k in ("created_at", "started_at", "completed_at")
    )
    assert created <= started <= completed < when(resource["expires_at"])
    assert when(resource["expires_at"]) - created == timedelta(days=7)
    assert no_joined.status_code == 400
    assert gone == [404, 404, 404]
    stats = klaviyo_sandbox.state.stats()["requests"]
    assert sum(stats["bulk_import_profiles"].values()) == 3 + 3 + 1 + 2


def test_limits_of_the_new_endpoint_families():
    config = SandboxConfig()
    assert config.rate_limit("lists_read") == RateLimit(burst=75, steady=750)
    assert config.rate_limit("bulk_import_profiles") == RateLimit(burst=10, steady=150)
    assert config.rate_limit("list_relationships") == RateLimit(burst=10, steady=150)


def test_job_profile_reads_are_rate_limited_in_their_own_family(sandbox_factory):
    limits = {"bulk_import_profiles": RateLimit(burst=100, steady=2)}
    sandbox = sandbox_factory(rate_limit_overrides=limits)
    with client(sandbox) as http:
        job = run_job(sandbox, http, emails(1))
        path = f"/api/profile-bulk-import-jobs/{job['id']}"
        reads = [http.get(f"{path}/profiles").status_code for _ in range(3)]
        still = http.get(path).status_code  # polling the job is another family
    assert reads == [200, 200, 429]
    assert still == 200
