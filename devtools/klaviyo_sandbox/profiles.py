"""Accounts: profiles and how they are found, lists and their members, consent.

A profile is an int inside the sandbox (its public id is derived from it). An account
finds profiles by lower-cased e-mail in a dict (and knows each profile's e-mail, for list
pages); phones and external ids are logged and only indexed once someone looks one up.
Lists and their members are in ``membership``.
Attributes are kept only when ``store_attributes`` is on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from .jsonapi import iso
from .membership import ListState
from .validation import SubscribeRequest

__all__ = ["Account", "SecondaryIndex", "parse_profile_id", "profile_id"]

_PROFILE_PREFIX = "01SBXP"


def profile_id(number: int) -> str:
    """The public id of profile ``number``: 26 characters, like a Klaviyo id."""
    return f"{_PROFILE_PREFIX}{number:020d}"


def parse_profile_id(text: str) -> int | None:
    if len(text) != 26 or not text.startswith(_PROFILE_PREFIX) or not text[6:].isdigit():
        return None
    return int(text[6:])


class SecondaryIndex:
    """Phone or external id -> profile number, built the first time it is read.

    Bulk imports find profiles by e-mail, so these are read only for a profile without
    one, or to filter a list by phone. Until then a write is a C-level list extend, not a
    dict insert; the log turns into the dict on the first read, or once it outgrows
    ``limit()`` (the same people imported again and again).
    """

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._values: list[Any] = []
        self._numbers: list[int] = []
        self._map: dict[str, int] | None = None

    def add_many(self, values: list[Any], numbers: list[int]) -> None:
        """Record ``values[i] -> numbers[i]``; empty values (None, "") are skipped."""
        if self._map is None:
            self._values += values
            self._numbers += numbers
            if len(self._values) > self._limit():
                self.mapping()
        elif None not in values and "" not in values:
            self._map.update(zip(values, numbers, strict=True))
        else:
            self._map.update((v, n) for v, n in zip(values, numbers, strict=True) if v)

    def mapping(self) -> dict[str, int]:
        if self._map is None:
            built = dict(zip(self._values, self._numbers, strict=True))  # later ones win
            built.pop(None, None)
            built.pop("", None)
            self._map, self._values, self._numbers = built, [], []
        return self._map

    def get(self, value: str | None) -> int | None:
        return self.mapping().get(value) if value else None


class Account:
    """Profiles, lists and consent of one Klaviyo account.

    A profile is found by e-mail when it has one (case-insensitively), else by phone,
    else by external id, and keeps its number across upserts.
    """

    def __init__(
        self,
        name: str,
        lists: Iterable[tuple[str, str]],
        *,
        ordinal: int,
        allocate: Callable[[int], int],
        store_attributes: bool,
    ) -> None:
        now = time.time()
        self.name = name
        self.ordinal = ordinal
        self.lists = {lid: ListState(lid, lname, now, now) for lid, lname in lists}
        self._allocate = allocate  # n -> first of n new consecutive profile numbers
        self.store_attributes = store_attributes
        self.by_email: dict[str, int] = {}
        self.email_of: dict[int, str] = {}  # the reverse of by_email
        self.by_phone = SecondaryIndex(self._log_limit)
        self.by_external_id = SecondaryIndex(self._log_limit)
        self.attributes: dict[int, dict[str, Any]] = {}
        self.consent: dict[int, dict[str, Any]] = {}
        self.profile_count = 0

    def _log_limit(self) -> int:
        return 2 * self.profile_count + 100_000

    def upsert(self, attributes: dict[str, Any]) -> int:
        """Create or update one profile; returns its number."""
        email = attributes.get("email")
        return self._upsert_one(
            email.lower() if email else None,
            attributes.get("phone_number"),
            attributes.get("external_id"),
            attributes,
        )

    def _upsert_one(
        self,
        key: str | None,
        phone: str | None,
        external_id: str | None,
        attributes: dict[str, Any] | None,
    ) -> int:
        if key:
            number = self.by_email.get(key)
        else:
            number = self.by_phone.get(phone)
            if number is None:
                number = self.by_external_id.get(external_id)
        if number is None:
            number = self._allocate(1)
            self.profile_count += 1
        if key:
            self.by_email[key] = number
            self.email_of[number] = key
        self.by_phone.add_many([phone], [number])
        self.by_external_id.add_many([external_id], [number])
        if attributes is not None and self.store_attributes:
            self.attributes[number] = _merge(self.attributes.get(number), attributes)
        return number

    def upsert_columns(
        self,
        keys: list[str | None],
        phones: list[str | None],
        external_ids: list[str | None],
        attributes: list[dict[str, Any]] | None,
    ) -> list[int]:
        """Upsert a chunk given as columns (``keys`` are lower-cased e-mails), in order.

        The benchmark sends a million new profiles: per-profile Python calls would make
        the sandbox, not the rate limit, the bottleneck. The usual chunk (everyone has an
        e-mail) stays in whole-chunk operations; any other goes profile by profile.
        """
        if None in keys or "" in keys:
            items = attributes or [None] * len(keys)
            return [
                self._upsert_one(*row)
                for row in zip(keys, phones, external_ids, items, strict=True)
            ]
        numbers = list(map(self.by_email.get, keys))
        if None in numbers:
            numbers = self._create(keys, numbers)
        self.by_phone.add_many(phones, numbers)
        self.by_external_id.add_many(external_ids, numbers)
        if attributes is not None and self.store_attributes:
            for number, item in zip(numbers, attributes, strict=True):
                self.attributes[number] = _merge(self.attributes.get(number), item)
        return numbers

    def _create(self, keys: list[str], numbers: list[int | None]) -> list[int]:
        """Numbers for every key, allocating them for the addresses not seen before."""
        if numbers.count(None) == len(numbers):
            unseen = keys
        else:
            unseen = [k for k, n in zip(keys, numbers, strict=True) if n is None]
        new = dict.fromkeys(unseen)  # also merges repeats of one address within the chunk
        first = self._allocate(len(new))
        fresh = list(range(first, first + len(new)))
        self.by_email.update(zip(new, fresh, strict=True))
        self.email_of.update(zip(fresh, new, strict=True))
        self.profile_count += len(new)
        if len(new) == len(keys):  # all new and distinct: the numbers are the new ones
            return fresh
        return list(map(self.by_email.get, keys))

    def profile_attributes(
        self, numbers: Iterable[int], *, secondary: bool = True
    ) -> dict[int, dict[str, Any]]:
        """Attributes of a few profiles; identifiers only when attributes are not kept.

        Without stored attributes, phone numbers and external ids are found by a scan of
        their indexes (O(profiles)); ``secondary=False`` skips it when a sparse fieldset
        does not ask for them, as the removal lookups of a million-member list do not.
        """
        if self.store_attributes:
            return {n: self.attributes.get(n, {}) for n in numbers}
        out: dict[int, dict[str, Any]] = {}
        for n in numbers:
            email = self.email_of.get(n)
            out[n] = {"email": email} if email is not None else {}
        if not secondary:
            return out
        for key, index in (
            ("phone_number", self.by_phone.mapping()),
            ("external_id", self.by_external_id.mapping()),
        ):
            for value, number in index.items():
                if number in out:
                    out[number][key] = value
        return out

    def emails_of(self, members: Iterable[int]) -> list[str]:
        return sorted(e for n in members if (e := self.email_of.get(n)) is not None)

    def subscribe(self, request: SubscribeRequest, now: float) -> None:
        for item in request.profiles:
            attributes = {"email": item.email, "phone_number": item.phone_number}
            number = self.upsert({k: v for k, v in attributes.items() if v})
            record = self.consent.setdefault(number, {})
            for channel, params in item.channels.items():
                if params is not None:
                    record[channel] = {
                        "parameters": params,
                        "consented_at": iso(now),
                        "custom_source": request.custom_source,
                    }
            if request.list_id is not None:
                self.lists[request.list_id].add((number,), now)


def _merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if old is None:
        return dict(new)
    merged = dict(old)
    for key, value in new.items():
        # Klaviyo merges custom properties and location key by key; other fields replace.
        if key in ("properties", "location") and isinstance(value, dict):
            merged[key] = {**(old.get(key) or {}), **value}
        else:
            merged[key] = value
    return merged
