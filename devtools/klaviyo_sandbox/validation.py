"""Structural checks on request bodies.

Two levels, as at Klaviyo:
- structure (wrong JSON:API ``type``, a field of the wrong JSON type, no identifier, a
  profile over 100 KB) rejects the whole request with 400 and a ``source.pointer`` to the
  first offending profile — checked here, before the job exists;
- values (an e-mail or phone number that does not parse) fail one profile, reported as
  an import error while the job runs (see ``identifiers`` and ``prepare``).

A bulk import carries up to 10,000 profiles, so the whole job is first checked with
C-level set and map operations (``_all_well_formed``); the exact, profile-by-profile
diagnosis only runs when that check fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import orjson

from .config import (
    MAX_LIST_RELATIONSHIP_IDS,
    MAX_PROFILE_BYTES,
    MAX_PROFILES_PER_JOB,
    MAX_SUBSCRIBE_PROFILES,
)
from .identifiers import email_problem, phone_problem
from .jsonapi import bad_request

__all__ = [
    "LOCATION_TYPES",
    "PROFILE_ATTRIBUTE_TYPES",
    "BulkImportRequest",
    "SubscribeProfile",
    "SubscribeRequest",
    "parse_bulk_import",
    "parse_relationship_ids",
    "parse_subscribe",
    "profile_problem",
]

_STR = (str,)
_NUM_OR_STR = (str, int, float)
PROFILE_ATTRIBUTE_TYPES: Mapping[str, tuple[type, ...]] = {
    "email": _STR,
    "phone_number": _STR,
    "external_id": _STR,
    "_kx": _STR,
    "first_name": _STR,
    "last_name": _STR,
    "organization": _STR,
    "title": _STR,
    "locale": _STR,
    "image": _STR,
    "location": (dict,),
    "properties": (dict,),
}
LOCATION_TYPES: Mapping[str, tuple[type, ...]] = {
    "address1": _STR,
    "address2": _STR,
    "city": _STR,
    "country": _STR,
    "region": _STR,
    "zip": _STR,
    "timezone": _STR,
    "ip": _STR,
    "latitude": _NUM_OR_STR,
    "longitude": _NUM_OR_STR,
}
_PROFILE_KEYS = frozenset({"type", "id", "attributes", "meta"})
_ATTRIBUTE_KEYS = frozenset(PROFILE_ATTRIBUTE_TYPES)
_LOCATION_KEYS = frozenset(LOCATION_TYPES)
_NONE = type(None)
_JSON_TYPE_NAMES = {str: "a string", dict: "an object", list: "an array", bool: "a boolean"}
PROFILES_POINTER = "/data/attributes/profiles/data"


@dataclass(frozen=True, slots=True)
class BulkImportRequest:
    profiles: list[dict[str, Any]]
    list_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SubscribeProfile:
    email: str | None
    phone_number: str | None
    channels: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    profiles: list[SubscribeProfile]
    list_id: str | None
    custom_source: str | None


def _type_name(types: tuple[type, ...]) -> str:
    if types is _NUM_OR_STR:
        return "a string or a number"
    return _JSON_TYPE_NAMES.get(types[0], types[0].__name__)


def _require(value: Any, types: tuple[type, ...], pointer: str, what: str) -> None:
    if type(value) not in types:
        raise bad_request(f"{what} must be {_type_name(types)}.", pointer=pointer)


def _require_type_tag(resource: Any, expected: str, pointer: str) -> None:
    _require(resource, (dict,), pointer, "A resource object")
    if resource.get("type") != expected:
        raise bad_request(
            f"The resource type must be '{expected}', got {resource.get('type')!r}.",
            pointer=f"{pointer}/type",
        )


def _typed_fields(
    values: Mapping[str, Any], types: Mapping[str, tuple[type, ...]], pointer: str
) -> tuple[str, str] | None:
    for key, value in values.items():
        expected = types.get(key)
        if expected is None:
            return f"{pointer}/{key}", f"'{key}' is not a valid field for this resource."
        if value is not None and type(value) not in expected:
            return f"{pointer}/{key}", f"'{key}' must be {_type_name(expected)} or null."
    return None


def profile_problem(profile: Any, check_size: bool) -> tuple[str, str] | None:
    """(pointer relative to the profile, detail) for a malformed profile, or None."""
    if type(profile) is not dict:
        return "", "A profile must be an object."
    if profile.get("type") != "profile":
        return "/type", f"The resource type must be 'profile', got {profile.get('type')!r}."
    if not profile.keys() <= _PROFILE_KEYS:
        extra = sorted(profile.keys() - _PROFILE_KEYS)[0]
        return f"/{extra}", f"'{extra}' is not a valid member of a profile resource."
    attributes = profile.get("attributes")
    if type(attributes) is not dict:
        return "/attributes", "'attributes' must be an object."
    problem = _typed_fields(attributes, PROFILE_ATTRIBUTE_TYPES, "/attributes")
    if problem:
        return problem
    location = attributes.get("location")
    if location and (problem := _typed_fields(location, LOCATION_TYPES, "/attributes/location")):
        return problem
    if not (
        attributes.get("email") or attributes.get("phone_number") or attributes.get("external_id")
    ):
        return "/attributes", (
            "A profile needs at least one identifier: email, phone_number or external_id."
        )
    if check_size and len(orjson.dumps(profile)) > MAX_PROFILE_BYTES:
        return "", f"A profile must not be larger than {MAX_PROFILE_BYTES} bytes."
    return None


def _list_ids(relationships: Any) -> tuple[str, ...]:
    if relationships is None:
        return ()
    _require(relationships, (dict,), "/data/relationships", "'relationships'")
    lists = relationships.get("lists")
    if lists is None:
        return ()
    _require(lists, (dict,), "/data/relationships/lists", "'lists'")
    data = lists.get("data")
    _require(data, (list,), "/data/relationships/lists/data", "'data'")
    ids = []
    for n, item in enumerate(data):
        pointer = f"/data/relationships/lists/data/{n}"
        _require_type_tag(item, "list", pointer)
        _require(item.get("id"), (str,), f"{pointer}/id", "A list id")
        ids.append(item["id"])
    return tuple(ids)


def _resource(body: Any, expected_type: str) -> dict[str, Any]:
    _require(body, (dict,), "/", "The request body")
    data = body.get("data")
    _require_type_tag(data, expected_type, "/data")
    _require(data.get("attributes"), (dict,), "/data/attributes", "'attributes'")
    return data


def _profiles_array(attributes: dict[str, Any], limit: int) -> list[Any]:
    profiles = attributes.get("profiles")
    _require(profiles, (dict,), "/data/attributes/profiles", "'profiles'")
    data = profiles.get("data")
    _require(data, (list,), PROFILES_POINTER, "'profiles.data'")
    if not data:
        raise bad_request("At least one profile is required.", pointer=PROFILES_POINTER)
    if len(data) > limit:
        raise bad_request(
            f"At most {limit} profiles may be sent per request, got {len(data)}.",
            pointer=PROFILES_POINTER,
        )
    return data


def _all_well_formed(profiles: list[Any], body_size: int) -> bool:
    """True when every profile is certainly well-formed; False means "look closer".

    Each test is one set operation or comprehension over the whole job rather than a
    function call per profile; about as cheap as Python gets for 10,000 profiles.
    """
    try:
        kinds = {p["type"] for p in profiles}
        attributes = [p["attributes"] for p in profiles]
    except (TypeError, KeyError):
        return False
    if (
        kinds != {"profile"}
        or {type(p) for p in profiles} != {dict}
        or not set().union(*profiles) <= _PROFILE_KEYS
        or {type(a) for a in attributes} != {dict}
        or not set().union(*attributes) <= _ATTRIBUTE_KEYS
    ):
        return False
    # Every value is a string, null or an object, and the objects are exactly the
    # locations and property bags: then no field holds the wrong JSON type.
    values = list(map(type, chain.from_iterable(map(dict.values, attributes))))
    locations = [a.get("location") for a in attributes]
    location_types = list(map(type, locations))
    property_types = [type(a.get("properties")) for a in attributes]
    if (
        not set(values) <= {str, _NONE, dict}
        or not set(location_types) <= {dict, _NONE}
        or not set(property_types) <= {dict, _NONE}
        or values.count(dict) != location_types.count(dict) + property_types.count(dict)
    ):
        return False
    filled = [loc for loc in locations if loc]
    if filled and not (
        set().union(*filled) <= _LOCATION_KEYS
        and set(map(type, chain.from_iterable(map(dict.values, filled)))) <= {str, _NONE}
    ):
        return False  # numeric coordinates are fine, but checked the slow way
    if not all(
        [a.get("email") or a.get("phone_number") or a.get("external_id") for a in attributes]
    ):
        return False
    return body_size <= MAX_PROFILE_BYTES or _sizes_ok(profiles, body_size)


def _sizes_ok(profiles: list[Any], body_size: int) -> bool:
    """Whether no profile exceeds 100 KB, serialising slices rather than each profile.

    A slice no larger than the limit cannot hold a profile larger than it, so only a
    rare slice over the limit is looked at profile by profile. Slices aim at half the
    limit, judging by the average profile in the body.
    """
    step = max(1, len(profiles) * (MAX_PROFILE_BYTES // 2) // body_size)
    for start in range(0, len(profiles), step):
        part = profiles[start : start + step]
        if (
            len(orjson.dumps(part)) > MAX_PROFILE_BYTES
            and max(map(len, map(orjson.dumps, part))) > MAX_PROFILE_BYTES
        ):
            return False
    return True


def parse_bulk_import(body: Any, body_size: int) -> BulkImportRequest:
    """Check a bulk import body; raise ApiError(400) naming the first problem."""
    data = _resource(body, "profile-bulk-import-job")
    profiles = _profiles_array(data["attributes"], MAX_PROFILES_PER_JOB)
    relationships = _list_ids(data.get("relationships"))
    # No profile can be larger than the whole body, so small bodies skip the size check.
    check_size = body_size > MAX_PROFILE_BYTES
    if _all_well_formed(profiles, body_size):
        return BulkImportRequest(profiles=profiles, list_ids=relationships)
    for n, profile in enumerate(profiles):
        problem = profile_problem(profile, check_size)
        if problem is not None:
            pointer, detail = problem
            raise bad_request(f"Profile {n}: {detail}", pointer=f"{PROFILES_POINTER}/{n}{pointer}")
    return BulkImportRequest(profiles=profiles, list_ids=relationships)


def parse_relationship_ids(body: Any) -> list[str]:
    """Profile ids of a list-membership body (at most 1,000)."""
    _require(body, (dict,), "/", "The request body")
    data = body.get("data")
    _require(data, (list,), "/data", "'data'")
    if not 1 <= len(data) <= MAX_LIST_RELATIONSHIP_IDS:
        raise bad_request(
            f"Between 1 and {MAX_LIST_RELATIONSHIP_IDS} profiles may be sent per request, "
            f"got {len(data)}.",
            pointer="/data",
        )
    ids = []
    for n, item in enumerate(data):
        _require_type_tag(item, "profile", f"/data/{n}")
        _require(item.get("id"), (str,), f"/data/{n}/id", "A profile id")
        ids.append(item["id"])
    return ids


def _subscribe_profile(item: Any, pointer: str) -> SubscribeProfile:
    _require_type_tag(item, "profile", pointer)
    attributes = item.get("attributes")
    _require(attributes, (dict,), f"{pointer}/attributes", "'attributes'")
    channels = attributes.get("subscriptions")
    _require(channels, (dict,), f"{pointer}/attributes/subscriptions", "'subscriptions'")
    email, phone = attributes.get("email"), attributes.get("phone_number")
    for name, value, check in (
        ("email", email, email_problem),
        ("phone_number", phone, phone_problem),
    ):
        if value is None:
            continue
        _require(value, _STR, f"{pointer}/attributes/{name}", f"'{name}'")
        if problem := check(value):
            raise bad_request(problem, pointer=f"{pointer}/attributes/{name}")
    if email is None and phone is None:
        raise bad_request(
            "Either email or phone_number is required.", pointer=f"{pointer}/attributes"
        )
    return SubscribeProfile(email=email, phone_number=phone, channels=channels)


def parse_subscribe(body: Any) -> SubscribeRequest:
    """Check a bulk subscribe body structurally; e-mails and phones are checked at once."""
    data = _resource(body, "profile-subscription-bulk-create-job")
    attributes = data["attributes"]
    items = _profiles_array(attributes, MAX_SUBSCRIBE_PROFILES)
    profiles = [_subscribe_profile(p, f"{PROFILES_POINTER}/{n}") for n, p in enumerate(items)]
    source = attributes.get("custom_source")
    if source is not None:
        _require(source, _STR, "/data/attributes/custom_source", "'custom_source'")
    return SubscribeRequest(
        profiles=profiles, list_id=_subscribe_list(data.get("relationships")), custom_source=source
    )


def _subscribe_list(relationships: Any) -> str | None:
    if relationships is None:
        return None
    _require(relationships, (dict,), "/data/relationships", "'relationships'")
    if relationships.get("list") is None:
        return None
    _require(relationships["list"], (dict,), "/data/relationships/list", "'list'")
    item = relationships["list"].get("data")
    _require_type_tag(item, "list", "/data/relationships/list/data")
    _require(item.get("id"), _STR, "/data/relationships/list/data/id", "A list id")
    return item["id"]
