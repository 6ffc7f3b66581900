"""Klaviyo's ``filter`` syntax, for the list-member endpoints.

As Klaviyo documents it (developers.klaviyo.com, "Filtering"): an operation is
``name(field,value)``; strings are quoted (double or single quotes), datetimes are not
(``2023-03-01T00:00:00Z``; quoted, Klaviyo calls the filter invalid), arrays are
``["a","b"]``; several conditions are combined with ``and(...)`` or, equally, by
separating them with commas at the top level. Which fields and operators an endpoint
takes is in its reference; for ``GET /api/lists/{id}/profiles`` and its relationships:

    email, phone_number, push_token: any, equals      _kx: equals
    joined_group_at: greater-or-equal, greater-than, less-or-equal, less-than

Anything else (another field or operator, ``or``/``not``, more than 100 values in
``any``, a malformed expression) is a 400 naming the ``filter`` parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .jsonapi import ApiError

__all__ = ["MAX_ANY_VALUES", "Condition", "invalid_filter", "is_identity", "parse_filter"]

MAX_ANY_VALUES = 100

_IDENTITY_FIELDS = frozenset({"email", "phone_number", "push_token"})
_COMPARISONS = frozenset({"greater-or-equal", "greater-than", "less-or-equal", "less-than"})
_ALLOWED: dict[str, frozenset[str]] = {
    "email": frozenset({"any", "equals"}),
    "phone_number": frozenset({"any", "equals"}),
    "push_token": frozenset({"any", "equals"}),
    "_kx": frozenset({"equals"}),
    "joined_group_at": _COMPARISONS,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Tokens: quoted strings (backslash escapes), punctuation, and bare words (operator and
# field names, datetimes, numbers). A '+' of a UTC offset that reached us unencoded has
# become a space in the query string; a bare word takes it back.
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<punct>[(),\[\]])
      | (?P<bare>[A-Za-z0-9_.:+\-]+(?:\ \d{2}:\d{2}\b)?)
    )""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class Condition:
    """One test: ``op(field, value)``; ``value`` is a tuple for ``any``, µs for times."""

    op: str
    field: str
    value: Any


@dataclass(frozen=True, slots=True)
class _Str:
    text: str


def invalid_filter(detail: str) -> ApiError:
    return ApiError(400, "invalid", f"Invalid filter: {detail}", parameter="filter")


def parse_filter(text: str) -> list[Condition]:
    """The conditions of a ``filter`` value, all of which must hold (400 if invalid)."""
    tokens = _tokenize(text)
    conditions: list[Condition] = []
    position = _parse_list(tokens, 0, conditions)
    if position != len(tokens):
        raise invalid_filter(f"unexpected {tokens[position][1]!r}")
    if not conditions:
        raise invalid_filter("no condition")
    return conditions


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise invalid_filter(f"cannot read it from character {position + 1}")
        kind = match.lastgroup or ""
        value: Any = match[kind]
        if kind == "string":
            value = _Str(_ESCAPE.sub(r"\1", value[1:-1]))
        elif kind == "bare":
            value = value.replace(" ", "+")
        tokens.append((kind, value))
        position = match.end()
    return tokens


def _expect(tokens: list[tuple[str, Any]], position: int, punct: str) -> int:
    if position >= len(tokens) or tokens[position] != ("punct", punct):
        found = tokens[position][1] if position < len(tokens) else "the end"
        raise invalid_filter(f"expected {punct!r}, found {found!r}")
    return position + 1


def _parse_list(tokens: list[tuple[str, Any]], position: int, out: list[Condition]) -> int:
    """Comma-separated operations (an implicit ``and``), up to ')' or the end."""
    while True:
        position = _parse_operation(tokens, position, out)
        if position < len(tokens) and tokens[position] == ("punct", ","):
            position += 1
            continue
        return position


def _parse_operation(tokens: list[tuple[str, Any]], position: int, out: list[Condition]) -> int:
    if position >= len(tokens) or tokens[position][0] != "bare":
        raise invalid_filter('expected an operation such as equals(email,"...")')
    name = tokens[position][1]
    position = _expect(tokens, position + 1, "(")
    if name == "and":
        position = _parse_list(tokens, position, out)
        return _expect(tokens, position, ")")
    if name in ("or", "not"):
        raise invalid_filter(f"'{name}' is not supported by this endpoint")
    if position >= len(tokens) or tokens[position][0] != "bare":
        raise invalid_filter(f"{name}() needs a field name first")
    field = tokens[position][1]
    position = _expect(tokens, position + 1, ",")
    value, position = _parse_value(tokens, position)
    position = _expect(tokens, position, ")")
    out.append(_condition(name, field, value))
    return position


def _parse_value(tokens: list[tuple[str, Any]], position: int) -> tuple[Any, int]:
    if position >= len(tokens):
        raise invalid_filter("a value is missing")
    kind, value = tokens[position]
    if kind in ("string", "bare"):
        return value, position + 1
    if value != "[":
        raise invalid_filter(f"unexpected {value!r} where a value belongs")
    items: list[Any] = []
    position += 1
    if position < len(tokens) and tokens[position] == ("punct", "]"):
        return items, position + 1
    while True:
        item, position = _parse_value(tokens, position)
        items.append(item)
        if position < len(tokens) and tokens[position] == ("punct", ","):
            position += 1
            continue
        return items, _expect(tokens, position, "]")


def _condition(op: str, field: str, value: Any) -> Condition:
    allowed = _ALLOWED.get(field)
    if allowed is None:
        raise invalid_filter(f"'{field}' cannot be filtered on; fields: {sorted(_ALLOWED)}")
    if op not in allowed:
        raise invalid_filter(f"'{field}' takes {sorted(allowed)}, not '{op}'")
    if op in _COMPARISONS:
        if not isinstance(value, str):
            raise invalid_filter(f"{op}({field},...) takes an unquoted datetime")
        return Condition(op, field, _datetime_micros(value))
    if op == "equals":
        if not isinstance(value, _Str):
            raise invalid_filter(f"equals({field},...) takes one quoted string")
        return Condition(op, field, value.text)
    if not isinstance(value, list) or not all(isinstance(v, _Str) for v in value):
        raise invalid_filter(f"any({field},...) takes an array of quoted strings")
    if not 1 <= len(value) <= MAX_ANY_VALUES:
        raise invalid_filter(
            f"any({field},...) takes 1 to {MAX_ANY_VALUES} values, got {len(value)}"
        )
    return Condition(op, field, tuple(v.text for v in value))


def _datetime_micros(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise invalid_filter(f"{text!r} is not an ISO 8601 datetime") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # Klaviyo reads a datetime without offset as UTC
    return (moment - _EPOCH) // timedelta(microseconds=1)


def is_identity(condition: Condition) -> bool:
    """Whether the condition names profiles (by e-mail, phone...) rather than a time range."""
    return condition.field in _IDENTITY_FIELDS or condition.field == "_kx"
