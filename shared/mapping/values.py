"""Typed property values (number, boolean, date) and coordinates, parsed from text."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, Final

__all__ = [
    "CONTROLS",
    "CONVERTERS",
    "COORDINATE_RANGE",
    "clean_text",
    "shown",
    "to_date",
    "to_number",
]

# Control characters (Unicode Cc) other than tab and the line ends: NUL and the like are
# never text a person meant; they are removed from string values before they are sent
# (tab, CR and LF stay: multi-line addresses and notes use them). A value that is only
# such characters is empty, and so left out.
CONTROLS: Final = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
_CONTROLS: Final = re.compile(CONTROLS)


def clean_text(value: str) -> str:
    """A string value as sent: stripped, without control characters."""
    value = value.strip()
    if value.isprintable() or not _CONTROLS.search(value):  # the cheap test first
        return value
    return _CONTROLS.sub("", value).strip()


# --- typed values -----------------------------------------------------------------------

_SAFE_INT: Final = 2**53  # beyond this JSON readers lose precision
_BOOLEANS: Final = {
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
    "y": True,
    "n": False,
}
# Customer Insights (.NET invariant culture) writes e.g. "4/1/2023 12:00:00 AM".
_US_DATE: Final = re.compile(
    r"(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?(?: ?([AaPp][Mm]))?)?",
    re.ASCII,
)


# Shown for values of up to 15 digits: always exact as a float, so int() gives what the
# float route gives, without it.
_MAX_PLAIN_DIGITS: Final = 15


def to_number(value: str) -> int | float:
    """An int when integral (and exact in JSON), else a float; "1,5", NaN, inf refused."""
    # isdigit() is only trusted after isascii(): alone it would take "²" or "٣".
    if len(value) <= _MAX_PLAIN_DIGITS and value.isdigit() and value.isascii():
        return int(value)
    # float() alone would also take "1_000", Arabic-Indic digits and "nan".
    try:
        if not value.isascii() or "_" in value:
            raise ValueError
        number = float(value)
    except ValueError:
        hint = " (use '.' for decimals, no thousands separators)" if "," in value else ""
        raise ValueError(f"{shown(value)} is not a number{hint}") from None
    if not math.isfinite(number):
        raise ValueError(f"{shown(value)} is not a finite number")
    if number.is_integer() and -_SAFE_INT <= number <= _SAFE_INT:
        return int(number)
    return number


def _to_boolean(value: str) -> bool:
    # Exports write "true"/"false": one lookup; lower() only for other spellings.
    answer = _BOOLEANS.get(value)
    if answer is None:
        answer = _BOOLEANS.get(value.lower())
        if answer is None:
            raise ValueError(f"{shown(value)} is not true/false, yes/no, y/n or 1/0")
    return answer


# Text that is already what _parsed_date() would return: a real date as YYYY-MM-DD,
# optionally with a real time as THH:MM:SS and a Z (fromisoformat() + isoformat() give
# it back unchanged; tested against _parsed_date). Months are checked per length, so only
# February 29 (a leap-year question) is left to the parser, with fractions, offsets,
# spaces and every other form. [0-9], not \d, which takes other scripts' digits.
_CANONICAL_DATE: Final = re.compile(
    r"(?!0000)[0-9]{4}-"
    r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"  # days every month has
    r"|(?:0[13-9]|1[0-2])-(?:29|30)"  # all but February
    r"|(?:0[13578]|1[02])-31)"
    r"(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z?)?"
)
_is_canonical_date: Final = _CANONICAL_DATE.fullmatch


def to_date(value: str) -> str:
    """ISO 8601 text: ``YYYY-MM-DD`` for a date, ``YYYY-MM-DDTHH:MM:SS[+HH:MM|Z]`` otherwise."""
    # No cache: exported date-times hardly repeat, and canonical ones take the regex.
    if _is_canonical_date(value):
        return value
    return _parsed_date(value)


def _parsed_date(value: str) -> str:
    """_to_date() by the full parsers: ISO 8601 in any form fromisoformat takes, or US."""
    try:
        if len(value) <= 10:
            return date.fromisoformat(value).isoformat()
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = _us_date(value)
        if isinstance(moment, date) and not isinstance(moment, datetime):
            return moment.isoformat()
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _us_date(value: str) -> date | datetime:
    match = _US_DATE.fullmatch(value)
    if match is None:
        raise ValueError(f"{shown(value)} is not a date (use ISO 8601, e.g. 2023-04-01)")
    month, day, year, hour, minute, second, half = match.groups()
    try:
        day_ = date(int(year), int(month), int(day))
        if hour is None:
            return day_
        hours = int(hour)
        if half is not None:
            if not 1 <= hours <= 12:
                raise ValueError("hour out of range")
            hours = hours % 12 + (12 if half.lower() == "pm" else 0)
        moment = datetime(day_.year, day_.month, day_.day, hours, int(minute), int(second or 0))
    except ValueError:
        raise ValueError(f"{shown(value)} is not a real date") from None
    return moment


CONVERTERS: Final[dict[str, Callable[[str], Any]]] = {
    "number": to_number,
    "boolean": _to_boolean,
    "date": to_date,
}
COORDINATE_RANGE: Final = {"latitude": 90.0, "longitude": 180.0}


def shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:37] + "...")


# --- the same values, a column at a time ----------------------------------------------
# Only forms whose JSON is their own text (or a canonical rewrite of it) are decided in
# the engine; anything else is left to the converters above, row by row.

_DECIMAL: Final = r"^(-?)([0-9]{1,15})(?:\.([0-9]{0,15}))?$"
# Every ASCII spelling of the words (lower() of a non-ASCII value is never one of them
# but for the Kelvin sign, which none has): one lookup, no lower-casing pass.
_BOOLEAN_WORDS: Final = {
    "".join(spelling): "true" if value else "false"
    for word, value in _BOOLEANS.items()
    for spelling in itertools.product(*({c, c.upper()} for c in word))
}
# _CANONICAL_DATE without its look-ahead (the year 0000 is checked apart).
_CANONICAL_DATE_BODY: Final = (
    r"^[0-9]{4}-"
    r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31)"
    r"(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z?)?$"
)


def json_form(value: str, kind: str, out: str) -> list[list[Any]]:
    """polars: stages of expressions that add ``out`` (the JSON text of each stripped,
    non-empty value of column ``value``) and ``out + "_ok"`` (whether it was decided here);
    ``kind``: number, boolean, date, latitude or longitude.

    Stages, not one expression: the engine evaluates a repeated sub-expression again each
    time, so every intermediate is a column of its own, computed once.
    """
    import polars as pl  # the engine is configured by shared.engine, imported before this

    v, c = pl.col(value), pl.col
    if kind == "boolean":
        text = v.replace_strict(_BOOLEAN_WORDS, default=None, return_dtype=pl.String)
        return [[text.alias(out)], [c(out).is_not_null().alias(f"{out}_ok")]]
    if kind == "date":
        ok = v.str.contains(_CANONICAL_DATE_BODY) & ~v.str.starts_with("0000")
        return [[pl.concat_str(pl.lit('"'), v, pl.lit('"')).alias(out),
                 ok.fill_null(False).alias(f"{out}_ok")]]  # fmt: skip
    groups = v.str.extract_groups(_DECIMAL).alias(f"{out}_g")
    split = [c(f"{out}_g").struct.field(f).alias(f"{out}_{f}") for f in ("1", "2", "3")]
    sign, whole, fraction = (c(f"{out}_{f}") for f in ("1", "2", "3"))
    trimmed = [
        whole.str.strip_chars_start("0").alias(f"{out}_i"),
        fraction.fill_null("").str.strip_chars_end("0").alias(f"{out}_f"),
        # A fraction below 1e-4 is written with an exponent by orjson: not decided here.
        fraction.fill_null("").str.starts_with("0000").alias(f"{out}_tiny"),
    ]
    digits, decimals, tiny = c(f"{out}_i"), c(f"{out}_f"), c(f"{out}_tiny")
    integral = decimals == ""
    negative = (sign == "-") & ~(integral & (digits == ""))  # -0 and -0.0 are 0
    number = pl.concat_str(
        pl.when(negative).then(pl.lit("-")).otherwise(pl.lit("")),
        pl.when(digits == "").then(pl.lit("0")).otherwise(digits),
        pl.when(integral).then(pl.lit("")).otherwise(pl.concat_str(pl.lit("."), decimals)),
    )
    ok = whole.is_not_null() & (digits.str.len_bytes() + decimals.str.len_bytes() <= 15)
    ok = ok & ~((digits == "") & tiny & ~integral)
    if kind != "number":
        # A coordinate is a float: integral ones get ".0"; and it must be within range.
        inside = v.cast(pl.Float64, strict=False).abs() <= COORDINATE_RANGE[kind]
        number = pl.when(integral).then(pl.concat_str(number, pl.lit(".0"))).otherwise(number)
        ok = ok & inside
    return [[groups], split, trimmed, [number.alias(out), ok.fill_null(False).alias(f"{out}_ok")]]
