"""E-mail and phone checks, one at a time or a whole chunk of profiles at once.

A job of 10,000 profiles is checked profile by profile at Klaviyo; here, for speed, a
chunk's e-mails are joined into one string and scanned by a single multi-line regex, so
the per-profile cost is a string copy instead of a Python call. One-by-one checks remain
for messages and for the rare value that would blur the lines (empty, or with a newline).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "EMAIL_DETAIL",
    "EMAIL_RE",
    "PHONE_DETAIL",
    "PHONE_RE",
    "email_problem",
    "identifier_problems",
    "phone_problem",
    "value_problem",
]

# Pragmatic address check: at most 254 characters; a local part of at most 64 without
# spaces or specials, and without leading, trailing or doubled dots; a dotted domain of
# letter/digit labels (Unicode allowed, no hyphen at either end) and an alphabetic
# top-level domain. Padded or mixed-case input is the client's to normalise: " Ada@x.io"
# fails as it would at Klaviyo. Possessive quantifiers keep the engine from backtracking.
_EMAIL_SHAPE = (
    r"(?!\.)[^\s@\"(),:;<>\[\\\]]{1,64}+(?<!\.)@"
    r"(?:[^\W_][\w-]*+(?<!-)\.)++[^\W\d_]{2,63}"
)
# Length and doubled dots are checked with plain string operations in batch mode.
_EMAIL = rf"(?=[^\n]{{1,254}}$)(?![^\n]*\.\.){_EMAIL_SHAPE}"
_PHONE = r"\+[1-9][0-9]{6,14}"  # E.164
EMAIL_RE = re.compile(_EMAIL)
PHONE_RE = re.compile(_PHONE)
_EMAIL_LINES = re.compile(f"^{_EMAIL_SHAPE}$", re.MULTILINE)
_PHONE_LINES = re.compile(f"^{_PHONE}$", re.MULTILINE)

EMAIL_DETAIL = "Invalid email address: 'email' must be a valid e-mail address."
PHONE_DETAIL = "Invalid phone number: 'phone_number' must be in E.164 format, e.g. +15005550006."


def email_problem(email: str) -> str | None:
    return None if EMAIL_RE.fullmatch(email) else EMAIL_DETAIL


def phone_problem(phone: str) -> str | None:
    return None if PHONE_RE.fullmatch(phone) else PHONE_DETAIL


def value_problem(attributes: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first identifier whose value is unusable, as (field, detail), or None."""
    email = attributes.get("email")
    if email is not None and (problem := email_problem(email)):
        return "email", problem
    phone = attributes.get("phone_number")
    if phone is not None and (problem := phone_problem(phone)):
        return "phone_number", problem
    return None


def identifier_problems(
    emails: Sequence[str | None], phones: Sequence[str | None]
) -> dict[int, tuple[str, str]]:
    """Positions whose e-mail or phone is unusable -> (field, detail); None means absent.

    Equivalent to ``value_problem`` on each profile, e-mail first.
    """
    problems: dict[int, tuple[str, str]] = {}
    checks = (
        ("email", emails, _EMAIL_LINES, EMAIL_RE, EMAIL_DETAIL, _email_extras_ok),
        ("phone_number", phones, _PHONE_LINES, PHONE_RE, PHONE_DETAIL, None),
    )
    for field, column, lines, single, detail, extras_ok in checks:
        values = list(column)
        positions: Sequence[int] = range(len(values))
        if None in values:
            positions = [i for i, v in enumerate(values) if v is not None]
            values = [values[i] for i in positions]
        for j in _failing(values, lines, single, extras_ok):
            problems.setdefault(positions[j], (field, detail))
    return problems


def _email_extras_ok(values: list[str], joined: str) -> bool:
    return ".." not in joined and max(map(len, values)) <= 254


def _failing(
    values: list[str],
    lines: re.Pattern[str],
    single: re.Pattern[str],
    extras_ok: Callable[[list[str], str], bool] | None,
) -> list[int]:
    """Positions of ``values`` that do not match, found with one scan over all of them."""
    if not values:
        return []
    joined = "\n".join(values)
    if (
        "" in values
        or joined.count("\n") != len(values) - 1
        or (extras_ok is not None and not extras_ok(values, joined))
    ):
        return [i for i, v in enumerate(values) if not single.fullmatch(v)]
    # Valid lines vanish; what is left besides the separators are the failures.
    residue = lines.sub("", joined)
    if residue.count("\n") == len(residue):
        return []
    return [i for i, rest in enumerate(residue.split("\n")) if rest]
