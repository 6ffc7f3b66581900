"""A list's members, when each joined, and the ordered views that pages are cut from.

``joined_group_at`` is, in Klaviyo's words, "the datetime when this profile most recently
joined the list": it is set when a profile joins (an import job with the list, POST
relationships, a subscription, or the control API), is left alone when a member is added
again, and a profile removed and added again gets a new one. Times are kept as integer
microseconds since the epoch, so a filter on the exact value a page printed matches it.

Pages are cut from a sorted view of the members (by profile, or by joined time then
profile), built on first use and kept until the list changes: a page costs a bisection
and a slice, not a pass over a million members.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = ["ListState", "OrderedView", "iso_micros", "micros"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(timestamp: float) -> int:
    """``time.time()`` seconds as integer microseconds."""
    return round(timestamp * 1_000_000)


def iso_micros(value: int) -> str:
    """Klaviyo's timestamp format (ISO 8601, microseconds, UTC offset), exactly."""
    return (_EPOCH + timedelta(microseconds=value)).isoformat(timespec="microseconds")


@dataclass(slots=True, frozen=True)
class OrderedView:
    """Members as two aligned columns, sorted by ``(numbers)`` or ``(joined, numbers)``."""

    numbers: list[int]
    joined: list[int]

    def __len__(self) -> int:
        return len(self.numbers)

    def position_after(self, joined: int, number: int) -> int:
        """Index of the first member whose (joined, number) is above the given one."""
        return bisect.bisect_right(range(len(self.numbers)), (joined, number), key=self._key)

    def position_before(self, joined: int, number: int) -> int:
        """Index of the first member whose (joined, number) is not below the given one."""
        return bisect.bisect_left(range(len(self.numbers)), (joined, number), key=self._key)

    def _key(self, i: int) -> tuple[int, int]:
        return self.joined[i], self.numbers[i]


@dataclass(slots=True, eq=False)
class ListState:
    id: str
    name: str
    created: float
    updated: float
    members: dict[int, int] = field(default_factory=dict)  # profile -> joined at (µs)
    version: int = 0  # bumped by every change; the ordered views follow it
    _views: dict[str, tuple[int, OrderedView]] = field(default_factory=dict, repr=False)

    def add(self, numbers: Iterable[int], now: float, *, joined_at: int | None = None) -> int:
        """Add members; one already in keeps its joined-at. Returns how many joined.

        ``joined_at`` (µs) backdates the join (the control API's "sign-up form" members).
        """
        at = micros(now) if joined_at is None else joined_at
        fresh = dict.fromkeys(numbers, at)
        for number in fresh.keys() & self.members.keys():  # set ops in C, loop only on repeats
            del fresh[number]
        self.members.update(fresh)
        if fresh:
            self.updated = now
            self.version += 1
        return len(fresh)

    def remove(self, numbers: Iterable[int], now: float) -> int:
        """Remove members; a profile that is not one is skipped. Returns how many left."""
        removed = sum(self.members.pop(n, None) is not None for n in numbers)
        if removed:
            self.updated = now
            self.version += 1
        return removed

    def ordered(self, by: str) -> OrderedView:
        """The members sorted by profile (``"id"``) or by joined time then profile."""
        cached = self._views.get(by)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        numbers = sorted(self.members)
        if by == "joined":
            numbers.sort(key=self.members.__getitem__)  # stable: ties stay in profile order
        elif by != "id":
            raise ValueError(f"unknown member order {by!r}")
        view = OrderedView(numbers, list(map(self.members.__getitem__, numbers)))
        self._views[by] = (self.version, view)
        return view
