"""The sandbox's typed body check answers exactly as its exact check, or leaves it to it."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import orjson
import pytest

from devtools.klaviyo_sandbox import DEFAULT_LIST_ID, typedbody
from devtools.klaviyo_sandbox.jsonapi import ApiError
from devtools.klaviyo_sandbox.prepare import PreparedJob, prepare_bulk_import
from devtools.klaviyo_sandbox.typedbody import typed_job


def body(profiles: Any, *, lists: Any = ((DEFAULT_LIST_ID,)), kind: Any = None) -> dict:
    data: dict[str, Any] = {
        "type": kind or "profile-bulk-import-job",
        "attributes": {"profiles": {"data": profiles}},
    }
    if lists is not None:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": i} for i in lists]}}
    return {"data": data}


def good(n: int = 3, **attributes: Any) -> list[dict[str, Any]]:
    return [
        {"type": "profile", "attributes": {"email": f"u{i}@x.io", **attributes}} for i in range(n)
    ]


def outcome(raw: bytes, *, keep: bool) -> tuple[str, Any]:
    """("job", the job without its kept attributes) or ("error", the 400's fields)."""
    try:
        job = prepare_bulk_import(raw, keep_attributes=keep, pause_gc=False)
    except ApiError as exc:
        return "error", (exc.status, exc.code, exc.detail, exc.pointer)
    assert isinstance(job, PreparedJob)
    return "job", dataclasses.replace(job, attributes=None)


def check(document: Any) -> TypedOutcome:
    raw = document if isinstance(document, bytes) else orjson.dumps(document)
    exact = outcome(raw, keep=True)  # keeping attributes always takes the exact path
    assert outcome(raw, keep=False) == exact
    return TypedOutcome(exact[0], typed_job(raw) is not None)


@dataclasses.dataclass
class TypedOutcome:
    verdict: str
    typed: bool  # the typed path answered (else it left the body to the exact path)


ACCEPTED = {
    "plain": good(),
    "every-field": good(
        1,
        phone_number="+31612345678",
        external_id="e1",
        _kx="k",
        first_name="Ä",
        last_name="B",
        organization="O",
        title="T",
        locale="nl-NL",
        image="https://x.io/i.png",
        location={
            "address1": "a",
            "address2": None,
            "city": "c",
            "country": "NL",
            "region": "r",
            "zip": "1011",
            "timezone": "Europe/Amsterdam",
            "ip": "1.2.3.4",
            "latitude": 52.37,
            "longitude": "4.89",
        },
        properties={"n": 1, "f": 1.5, "b": True, "l": [1, {"x": None}], "s": "\u2028"},
    ),
    "nulls": good(2, phone_number=None, location=None, properties=None, first_name=None),
    "integer-latitude": good(1, location={"latitude": 52, "longitude": -4}),
    "empty-location": good(1, location={}),
    "id-and-meta": [{"type": "profile", "id": 5, "meta": {"m": [1]}, **good(1)[0]}],
    "phone-only": [{"type": "profile", "attributes": {"phone_number": "+31612345678"}}],
    "external-id-only": [{"type": "profile", "attributes": {"external_id": "x"}}],
    "bad-identifiers": [  # import errors, not a 400: the job is accepted
        {"type": "profile", "attributes": {"email": "not-an-email", "first_name": "A"}},
        {"type": "profile", "attributes": {"email": "a@x.io", "phone_number": "0612"}},
        *good(2),
    ],
    "no-lists": good(),
    "10000-profiles": good(10_000),
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_well_formed_bodies_take_the_typed_path(name):
    lists = None if name == "no-lists" else (DEFAULT_LIST_ID,)
    assert check(body(ACCEPTED[name], lists=lists)) == TypedOutcome("job", typed=True)


def test_problem_profiles_keep_their_attributes_as_sent():
    profiles = ACCEPTED["bad-identifiers"]
    job = prepare_bulk_import(orjson.dumps(body(profiles)), keep_attributes=False, pause_gc=False)
    assert job.problems == {
        0: ("email", job.problems[0][1], profiles[0]["attributes"]),
        1: ("phone_number", job.problems[1][1], profiles[1]["attributes"]),
    }


def profile_with(**attributes: Any) -> dict[str, Any]:
    return {"type": "profile", "attributes": {"email": "a@x.io", **attributes}}


REJECTED_PROFILES = {
    "email-number": {"type": "profile", "attributes": {"email": 12345}},
    "wrong-type": {"type": "person", "attributes": {"email": "a@x.io"}},
    "no-type": {"attributes": {"email": "a@x.io"}},
    "null-type": {"type": None, "attributes": {"email": "a@x.io"}},
    "attributes-array": {"type": "profile", "attributes": ["a@x.io"]},
    "no-attributes": {"type": "profile"},
    "profile-string": "a@x.io",
    "profile-null": None,
    "unknown-profile-key": {**profile_with(), "links": {}},
    "properties-string": profile_with(properties="x"),
    "properties-array": profile_with(properties=[1]),
    "properties-true": profile_with(properties=True),
    "properties-number": profile_with(properties=7),
    "location-zip-number": profile_with(location={"zip": 1011}),
    "location-unknown-key": profile_with(location={"street": "x"}),
    "location-latitude-bool": profile_with(location={"latitude": True}),
    "location-array": profile_with(location=["x"]),
    "unknown-field": profile_with(phone="+31612345678"),
    "first-name-number": profile_with(first_name=1),
    "no-identifier": {"type": "profile", "attributes": {"first_name": "x"}},
    "empty-identifiers": {"type": "profile", "attributes": {"email": "", "external_id": ""}},
    "over-100kb": profile_with(properties={"x": "y" * 102_400}),
}


@pytest.mark.parametrize("name", REJECTED_PROFILES)
def test_malformed_profiles_are_left_to_the_exact_path(name):
    profiles = [*good(3), REJECTED_PROFILES[name], *good(2)]
    assert check(body(profiles)) == TypedOutcome("error", typed=False)


REJECTED_BODIES = {
    "wrong-job-type": body(good(), kind="profile-bulk-import"),
    "no-profiles": body([]),
    "10001-profiles": body(good(10_001)),
    "profiles-not-a-list": body({"x": 1}),
    "list-id-number": {"data": {**body(good())["data"], "relationships": {"lists": {
        "data": [{"type": "list", "id": 5}]}}}},
    "list-wrong-type": {"data": {**body(good())["data"], "relationships": {"lists": {
        "data": [{"type": "segment", "id": "x"}]}}}},
    "lists-not-a-list": {"data": {**body(good())["data"], "relationships": {"lists": {
        "data": {"type": "list", "id": "x"}}}}},
    "data-array": {"data": [body(good())["data"]]},
    "body-array": [body(good())],
    "not-json": b'{"data": ',
    "trailing-comma": b'{"data": {"type": "profile-bulk-import-job",}}',
}  # fmt: skip


@pytest.mark.parametrize("name", REJECTED_BODIES)
def test_malformed_bodies_are_left_to_the_exact_path(name):
    assert check(REJECTED_BODIES[name]) == TypedOutcome("error", typed=False)


def test_large_profiles_are_sized_the_exact_way():
    # A body over 100 KB must be sized; profiles this large, the exact way (they pass).
    large = [profile_with(properties={"x": "y" * 60_000}) for _ in range(2)]
    assert check(body([*good(2), *large])) == TypedOutcome("job", typed=False)
    # Numbers grow when serialised: 78 KB as sent, over 100 KB as orjson writes them.
    numbers = b"{" + b",".join(b'"k%d":1E15' % i for i in range(6_000)) + b"}"
    document = body([profile_with(properties="HOLE"), large[0]])
    raw = orjson.dumps(document).replace(b'"HOLE"', numbers)
    assert check(raw) == TypedOutcome("error", typed=False)
    assert "larger than" in outcome(raw, keep=False)[1][2]


def test_duplicate_keys_count_their_last_value_as_orjson_does():
    first_wrong = b'{"type":"profile","attributes":{"email":5,"email":"a@x.io"}}'
    last_wrong = b'{"type":"profile","attributes":{"email":"a@x.io","email":5}}'
    both_text = b'{"type":"profile","attributes":{"email":"a@x.io","email":"b@x.io"}}'
    for profile, verdict in ((first_wrong, "job"), (last_wrong, "error"), (both_text, "job")):
        raw = orjson.dumps(body(["HOLE"])).replace(b'"HOLE"', profile)
        assert check(raw).verdict == verdict
    job = prepare_bulk_import(
        orjson.dumps(body(["HOLE"])).replace(b'"HOLE"', both_text),
        keep_attributes=False,
        pause_gc=False,
    )
    assert job.keys == ["b@x.io"]


def test_many_problem_profiles_are_decoded_once(monkeypatch):
    profiles = [{"type": "profile", "attributes": {"email": f"bad{i}"}} for i in range(2_000)]
    raw = orjson.dumps(body(profiles))
    decoder = _Counting(typedbody._RAW)
    monkeypatch.setattr(typedbody, "_RAW", decoder)
    prepared = prepare_bulk_import(raw, keep_attributes=False, pause_gc=False)
    assert [prepared.problems[i][2] for i in range(2_000)] == [p["attributes"] for p in profiles]
    assert decoder.calls == 1  # once, for the size bound (a body over 100 KB) and the attributes


class _Counting:
    def __init__(self, decoder: Any) -> None:
        self._decoder, self.calls = decoder, 0

    def decode(self, raw: bytes) -> Any:
        self.calls += 1
        return self._decoder.decode(raw)


def test_a_prepared_job_comes_back_from_a_worker_as_it_was():
    profiles = [*good(3, phone_number="+31612345678"), *ACCEPTED["bad-identifiers"]]
    profiles.append({"type": "profile", "attributes": {"phone_number": "+31612345679"}})
    for keep in (False, True):
        job = prepare_bulk_import(
            orjson.dumps(body(profiles)), keep_attributes=keep, pause_gc=False
        )
        again = pickle.loads(pickle.dumps(job))
        assert again == job
        assert None in again.keys and again.attributes == job.attributes
