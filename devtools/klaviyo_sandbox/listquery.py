"""Which list members a page holds: ``filter``, ``sort``, ``page[size]`` and cursors.

Orders are total, so cursors are stable: by profile when no ``sort`` is given, by
``(joined_group_at, profile)`` for ``sort=joined_group_at``, and the exact reverse for
``-joined_group_at``. A cursor holds the key of the last member served (not an offset),
so members that join or leave between two pages neither repeat nor push others out; a
cursor made for one order is refused (400) under another.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

from .filters import Condition, is_identity, parse_filter
from .jsonapi import ApiError
from .membership import ListState
from .profiles import Account
from .webio import cursor_text, encode_cursor, invalid_cursor

__all__ = ["PROFILE_FIELDS", "MemberPage", "MemberQuery", "check_fields", "member_page"]

_ORDERS = {None: "id", "joined_group_at": "joined", "-joined_group_at": "-joined"}

# ``fields[profile]`` names Klaviyo's reference lists for these endpoints (top level; a
# dotted name such as ``location.city`` selects inside one of them).
PROFILE_FIELDS = frozenset(
    {
        "created", "email", "external_id", "first_name", "id", "image", "joined_group_at",
        "last_event_date", "last_name", "locale", "location", "organization", "phone_number",
        "predictive_analytics", "properties", "subscriptions", "title", "updated",
    }
)  # fmt: skip


def check_fields(request: web.Request, allowed: frozenset[str]) -> frozenset[str] | None:
    """The ``fields[profile]`` names, after refusing (400) any the endpoint does not have."""
    raw = request.query.get("fields[profile]")
    if not raw:
        return None
    names = frozenset(n.strip() for n in raw.split(","))
    unknown = sorted(n for n in names if n.partition(".")[0] not in allowed)
    if unknown:
        raise ApiError(
            400,
            "invalid",
            f"'{unknown[0]}' is not a valid field for the resource 'profile'.",
            parameter="fields[profile]",
        )
    return names


@dataclass(frozen=True, slots=True)
class MemberQuery:
    """A request's filter and order, with the profiles the filter names resolved."""

    order: str  # "id", "joined" or "-joined"
    candidates: frozenset[int] | None  # None: every member
    lower: tuple[int, bool] | None  # (µs, inclusive)
    upper: tuple[int, bool] | None

    @classmethod
    def of(cls, request: web.Request, account: Account) -> MemberQuery:
        sort = request.query.get("sort")
        if sort not in _ORDERS:
            raise ApiError(
                400,
                "invalid",
                f"'{sort}' is not a valid sort; use joined_group_at or -joined_group_at.",
                parameter="sort",
            )
        raw = request.query.get("filter")
        conditions = parse_filter(raw) if raw is not None else []
        return cls(
            order=_ORDERS[sort],
            candidates=_candidates([c for c in conditions if is_identity(c)], account),
            lower=_bound(conditions, ("greater-or-equal", "greater-than"), max),
            upper=_bound(conditions, ("less-or-equal", "less-than"), min),
        )

    def admits(self, joined: int) -> bool:
        if self.lower is not None:
            at, inclusive = self.lower
            if joined < at or (joined == at and not inclusive):
                return False
        if self.upper is not None:
            at, inclusive = self.upper
            if joined > at or (joined == at and not inclusive):
                return False
        return True


def _candidates(conditions: list[Condition], account: Account) -> frozenset[int] | None:
    if not conditions:
        return None
    found: frozenset[int] | None = None
    for condition in conditions:
        values = condition.value if condition.op == "any" else (condition.value,)
        if condition.field == "email":
            numbers = (account.by_email.get(v.lower()) for v in values)
        elif condition.field == "phone_number":
            numbers = (account.by_phone.get(v) for v in values)
        else:
            numbers = iter(())  # push tokens and _kx: no profile here carries one
        these = frozenset(n for n in numbers if n is not None)
        found = these if found is None else found & these
    return found


def _bound(
    conditions: list[Condition], ops: tuple[str, str], tighter: Callable[[Iterable[int]], int]
) -> tuple[int, bool] | None:
    bounds = [(c.value, c.op.endswith("equal")) for c in conditions if c.op in ops]
    if not bounds:
        return None
    at = tighter(b[0] for b in bounds)
    # At the same instant, "greater-than" is stricter than "greater-or-equal".
    return at, all(inclusive for value, inclusive in bounds if value == at)


@dataclass(frozen=True, slots=True)
class MemberPage:
    items: list[tuple[int, int]]  # (joined µs, profile number), in the query's order
    next_cursor: str | None


def _parse_key(text: str | None, order: str) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.split(":")
    if parts[0] != order or not all(p.lstrip("-").isdigit() for p in parts[1:]):
        raise invalid_cursor()
    if order == "id" and len(parts) == 2:
        return 0, int(parts[1])
    if order != "id" and len(parts) == 3:
        return int(parts[1]), int(parts[2])
    raise invalid_cursor()


def _key_text(order: str, joined: int, number: int) -> str:
    return f"id:{number}" if order == "id" else f"{order}:{joined}:{number}"


def member_page(request: web.Request, lst: ListState, query: MemberQuery, size: int) -> MemberPage:
    """The page after the request's cursor: at most ``size`` members, and the next cursor."""
    after = _parse_key(cursor_text(request), query.order)
    if query.candidates is not None:
        items = _named_members(lst, query, after)
    elif query.order == "id":
        items = _by_profile(lst, query, after, size)
    else:
        items = _by_joined(lst, query, after, size)
    more = len(items) > size
    items = items[:size]
    cursor = encode_cursor(_key_text(query.order, *items[-1])) if more else None
    return MemberPage(items, cursor)


def _named_members(
    lst: ListState, query: MemberQuery, after: tuple[int, int] | None
) -> list[tuple[int, int]]:
    """Members among the (at most a hundred or so) profiles a filter names."""
    assert query.candidates is not None
    members = lst.members
    items = [(members[n], n) for n in query.candidates if n in members]
    items = [item for item in items if query.admits(item[0])]
    if query.order == "id":
        items.sort(key=lambda item: item[1])
        return [item for item in items if after is None or item[1] > after[1]]
    descending = query.order == "-joined"
    items.sort(reverse=descending)
    if after is None:
        return items
    return [item for item in items if (item < after if descending else item > after)]


def _by_profile(
    lst: ListState, query: MemberQuery, after: tuple[int, int] | None, size: int
) -> list[tuple[int, int]]:
    view = lst.ordered("id")
    start = bisect.bisect_right(view.numbers, after[1]) if after else 0
    out: list[tuple[int, int]] = []
    for i in range(start, len(view)):
        if query.admits(view.joined[i]):
            out.append((view.joined[i], view.numbers[i]))
            if len(out) > size:
                break
    return out


def _by_joined(
    lst: ListState, query: MemberQuery, after: tuple[int, int] | None, size: int
) -> list[tuple[int, int]]:
    view = lst.ordered("joined")
    low, high = 0, len(view)
    if query.lower is not None:
        at, inclusive = query.lower
        low = (bisect.bisect_left if inclusive else bisect.bisect_right)(view.joined, at)
    if query.upper is not None:
        at, inclusive = query.upper
        high = (bisect.bisect_right if inclusive else bisect.bisect_left)(view.joined, at)
    if query.order == "joined":
        if after is not None:
            low = max(low, view.position_after(*after))
        indexes = range(low, min(high, low + size + 1))
    else:
        if after is not None:
            high = min(high, view.position_before(*after))
        indexes = range(high - 1, max(low, high - size - 1) - 1, -1)
    return [(view.joined[i], view.numbers[i]) for i in indexes]
