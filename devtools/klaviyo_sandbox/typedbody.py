"""A bulk import body checked while it is decoded: the common case, in C.

``parse_bulk_import`` checks a decoded body with Python: about 35 ms for a 10,000-profile
job on top of orjson's 25 ms. Here the same rules are msgspec types, so the decoder checks
them as it builds the values, and only three cheap passes are left in Python (each
profile's type tag, an identifier present, and the size bound). A 1M-profile benchmark
spent 11-13 s of CPU in the sandbox (its parse workers included) on this machine's two
cores, next to the exporter it measures; the typed path took that to 7.5-9 s.

The typed path answers only when it is sure: ``typed_job`` returns None for anything it
does not accept, and the exact path (orjson, then ``parse_bulk_import``) decides and names
the first problem. It never accepts a body that path would reject
(tests/test_sandbox_typed.py compares them), with one exception left on purpose: a number
beyond a double's range inside ``properties`` (``1e400``), which JSON allows and orjson
alone refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import msgspec
import orjson

from .config import MAX_PROFILE_BYTES, MAX_PROFILES_PER_JOB
from .jsonapi import ApiError
from .validation import _list_ids

__all__ = ["TypedJob", "typed_job"]

_S = Union[str, None]  # noqa: UP007 - msgspec reads these annotations at class creation
_NUMBER_OR_S = Union[str, int, float, None]  # noqa: UP007
# Serialised by orjson, a profile is at most ~4.5x its bytes as sent (only numbers grow:
# "1e15" becomes "1000000000000000.0"), so one this small is certainly within the limit.
_SURELY_SMALL = MAX_PROFILE_BYTES // 5


class _Location(msgspec.Struct, forbid_unknown_fields=True):
    address1: _S = None
    address2: _S = None
    city: _S = None
    country: _S = None
    region: _S = None
    zip: _S = None
    timezone: _S = None
    ip: _S = None
    latitude: _NUMBER_OR_S = None
    longitude: _NUMBER_OR_S = None


class _Attributes(msgspec.Struct, forbid_unknown_fields=True):
    email: _S = None
    phone_number: _S = None
    external_id: _S = None
    kx: _S = msgspec.field(default=None, name="_kx")
    first_name: _S = None
    last_name: _S = None
    organization: _S = None
    title: _S = None
    locale: _S = None
    image: _S = None
    location: Union[_Location, None] = None  # noqa: UP007
    # Any JSON value, checked to be an object or null below: building the dicts would
    # cost more than the check.
    properties: msgspec.Raw = msgspec.Raw(b"null")


class _Profile(msgspec.Struct, forbid_unknown_fields=True):
    type: _S
    attributes: _Attributes
    id: msgspec.Raw = msgspec.Raw(b"null")
    meta: msgspec.Raw = msgspec.Raw(b"null")


class _Profiles(msgspec.Struct):
    data: list[_Profile]


class _JobAttributes(msgspec.Struct):
    profiles: _Profiles


class _Data(msgspec.Struct):
    type: _S
    attributes: _JobAttributes
    relationships: msgspec.Raw = msgspec.Raw(b"null")


class _Body(msgspec.Struct):
    data: _Data


# The same body with each profile left as its raw bytes: their sizes, and the original
# attributes of the few profiles whose identifiers are unusable.
class _RawProfiles(msgspec.Struct):
    data: list[msgspec.Raw]


class _RawJobAttributes(msgspec.Struct):
    profiles: _RawProfiles


class _RawData(msgspec.Struct):
    attributes: _RawJobAttributes


class _RawBody(msgspec.Struct):
    data: _RawData


_TYPED = msgspec.json.Decoder(_Body)
_RAW = msgspec.json.Decoder(_RawBody)


@dataclass(slots=True)
class TypedJob:
    """The columns of a well-formed body, indexed like its profiles."""

    list_ids: tuple[str, ...]
    emails: list[str | None]
    phones: list[str | None]
    external_ids: list[str | None]
    _raw: bytes
    _profiles: list[msgspec.Raw] | None = None  # each profile's bytes, decoded once

    def attributes(self, index: int) -> dict[str, Any]:
        """The attributes of profile ``index`` as sent (for an import error)."""
        if self._profiles is None:
            self._profiles = _raw_profiles(self._raw)
        return orjson.loads(bytes(self._profiles[index]))["attributes"]


def typed_job(raw: bytes) -> TypedJob | None:
    """The body's columns when it is certainly well-formed; None: use the exact path."""
    try:
        data = _TYPED.decode(raw).data
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    profiles = data.attributes.profiles.data
    if data.type != "profile-bulk-import-job" or not 1 <= len(profiles) <= MAX_PROFILES_PER_JOB:
        return None
    attributes = [p.attributes for p in profiles]
    if (
        {p.type for p in profiles} != {"profile"}
        or not all([a.email or a.phone_number or a.external_id for a in attributes])
        or not _objects_or_null([a.properties for a in attributes])
    ):
        return None
    # Only a body over the limit can hold a profile over it; its profiles' bytes, decoded
    # for their sizes, also serve the import errors' attributes.
    raw_profiles = _raw_profiles(raw) if len(raw) > MAX_PROFILE_BYTES else None
    if raw_profiles is not None and max(map(len, raw_profiles)) > _SURELY_SMALL:
        return None
    try:
        list_ids = _list_ids(orjson.loads(bytes(data.relationships)))
    except (ApiError, orjson.JSONDecodeError):
        return None
    return TypedJob(
        list_ids=list_ids,
        emails=[a.email for a in attributes],
        phones=[a.phone_number for a in attributes],
        external_ids=[a.external_id for a in attributes],
        _raw=raw,
        _profiles=raw_profiles,
    )


def _objects_or_null(values: list[msgspec.Raw]) -> bool:
    # A raw value starts at its first byte: "{" for an object, "n" only for null.
    return {bytes(v)[:1] for v in values} <= {b"{", b"n"}


def _raw_profiles(raw: bytes) -> list[msgspec.Raw]:
    return _RAW.decode(raw).data.attributes.profiles.data
