"""The phone metadata the column-wise path needs, as patterns and lookup tables.

``phone_columns.py`` asks the engine per block; this module turns phonenumbers' metadata
into what those questions need: ASCII patterns (``[0-9]``, not Unicode's ``\\d``), the
digits a pattern can start with, prefix widths, lookup tables keyed by region, calling
code or metadata, and one regex per purpose over all keys (``_match_by_key``).
"""

from __future__ import annotations

import re
import re._parser as sre_parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

import numpy as np
import phonenumbers
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import ValidationResult, _test_number_length

from shared.engine import pl
from shared.mapping.phones import country_rules

__all__ = ["DIGITS", "PhoneTables", "bit", "first_digits", "match_by_key"]

MAX_NSN, MAX_INPUT = 17, 250  # phonenumbers' length limits
_LENGTHS = 32  # lengths looked up; every longer number is TOO_LONG everywhere (checked)
_NOT_STRIPPED: Final = (
    ValidationResult.TOO_SHORT,
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    ValidationResult.INVALID_LENGTH,
)
_col = pl.col


def _anchored(pattern: str | None, *, whole: bool) -> str | None:
    if not pattern:
        return None
    # Numbers here are ASCII digits: [0-9] matches what \d does on them, and compiles
    # nine times faster in the engine (whose \d is Unicode's).
    pattern = pattern.replace("\\d", "[0-9]")
    return f"^(?:{pattern})$" if whole else f"^(?:{pattern})"


DIGITS = frozenset("0123456789")


def first_digits(pattern: str | None) -> frozenset[str]:
    """The digits a match of ``pattern`` can start with (all ten when unsure)."""
    if not pattern:
        return frozenset()
    try:
        return _first(list(sre_parse.parse(pattern).data)) & DIGITS
    except (TypeError, ValueError, KeyError):
        return DIGITS


def _first(items: list[Any]) -> frozenset[str]:
    """First characters of a parsed sequence; ``DIGITS`` stands for "anything"."""
    for at, (op, arg) in enumerate(items):
        name = str(op)
        if name == "LITERAL":
            return frozenset(chr(arg))
        if name == "IN":
            chars: set[str] = set()
            for kind, value in arg:
                if str(kind) == "LITERAL":
                    chars.add(chr(value))
                elif str(kind) == "RANGE":
                    chars.update(map(chr, range(value[0], value[1] + 1)))
                else:
                    return DIGITS
            return frozenset(chars)
        if name == "SUBPATTERN":
            return _first(list(arg[3]))
        if name == "BRANCH":
            return frozenset().union(*(_first(list(b)) for b in arg[1]))
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            inner = _first(list(arg[2]))
            if arg[0] > 0:
                return inner
            return inner | _first(items[at + 1 :])
        return DIGITS
    return DIGITS  # an empty match: anything may follow


@cache
def _width(pattern: str | None) -> int | None:
    """The length of every match of ``pattern``, or None when matches differ in length."""
    if not pattern:
        return None
    low, high = sre_parse.parse(pattern).getwidth()
    return low if low == high else None


def _length_bits(meta: Any, accept: Any) -> int:
    """Bit n set when ``accept(_test_number_length('0' * n))`` (it looks at the length only)."""
    verdicts = [_test_number_length("0" * n, meta) for n in range(MAX_INPUT + 1)]
    assert all(v == ValidationResult.TOO_LONG for v in verdicts[_LENGTHS - 1 :])
    return sum(1 << n for n, v in enumerate(verdicts[:_LENGTHS]) if accept(v))


@dataclass(slots=True)
class _Table:
    """One lookup table: key -> value, as the Series pair ``replace_strict`` takes."""

    dtype: Any
    values: dict[str, Any] = field(default_factory=dict)
    _series: tuple[pl.Series, pl.Series] | None = None

    def put(self, key: str, value: Any) -> None:
        self.values[key] = value
        self._series = None

    def expr(self, key: pl.Expr) -> pl.Expr:
        if self._series is None:
            old = pl.Series(list(self.values), dtype=pl.String)
            self._series = (old, pl.Series(list(self.values.values()), dtype=self.dtype))
        return key.replace_strict(*self._series, default=None, return_dtype=self.dtype)


class _Prefixes:
    """Patterns matched at the start of a number (``re.match``), per key (a region or a
    metadata key): the length of the prefix each number starts with.

    A literal prefix (``00``, ``011``, ``0``: most of them) is tested with ``starts_with``
    and one whose matches all have the same length with ``contains``, each one call for
    every key at once (a column of prefixes or patterns); only the few others are
    extracted group by group.
    """

    def __init__(self) -> None:
        self.raw: dict[str, str] = {}
        self.first: dict[str, frozenset[str]] = {}
        self.literal = _Table(pl.String)
        self.fixed = _Table(pl.String)  # anchored patterns whose matches have one length
        self.width = _Table(pl.Int64)

    def put(self, key: str, pattern: str | None) -> None:
        self.first[key] = first_digits(pattern)
        if not pattern:
            return
        if pattern.isascii() and pattern.isdigit():
            self.literal.put(key, pattern)
        elif (width := _width(pattern)) is not None:
            self.fixed.put(key, _anchored(pattern, whole=False))
            self.width.put(key, width)
        else:
            self.raw[key] = pattern

    def lengths(self, frame: pl.DataFrame, value: str, key: str) -> np.ndarray:
        """Per row of ``frame``: the length of the prefix ``frame[value]`` starts with,
        by the pattern of ``frame[key]``; -1 where it does not match (or no pattern)."""
        if not frame.height:
            return np.full(0, -1, dtype=np.int64)
        v, k = _col(value), _col(key)
        literal = self.literal.expr(k) if self.literal.values else pl.lit(None, pl.String)
        fixed = self.fixed.expr(k) if self.fixed.values else pl.lit(None, pl.String)
        width = self.width.expr(k) if self.width.values else pl.lit(None, pl.Int64)
        found = frame.select(
            pl.when(v.str.starts_with(literal).fill_null(False))
            .then(literal.str.len_bytes().cast(pl.Int64))
            .when(v.str.contains(fixed).fill_null(False))
            .then(width)
            .otherwise(pl.lit(-1, pl.Int64))
        ).to_series()
        out = found.to_numpy().astype(np.int64)
        if self.raw:
            varying = frame.with_row_index("_i").filter(k.is_in(list(self.raw)))
            for (name,), part in varying.partition_by(key, as_dict=True).items():
                ascii_ = self.raw[name].replace("\\d", "[0-9]")
                extracted = part[value].str.extract(f"^({ascii_})", 1)
                out[part["_i"].to_numpy()] = extracted.str.len_bytes().fill_null(-1).to_numpy()
        return out


class PhoneTables:
    """What parse() needs of each region and calling code seen so far, as lookup tables."""

    def __init__(self) -> None:
        self.regions: set[str] = set()
        self.codes: set[int] = set()
        # region -> its calling code (text), international prefix, its metadata's key
        self.own = _Table(pl.String)
        self.idd = _Prefixes()
        self.too_long = _Table(pl.Int64)  # region -> length bits of TOO_LONG
        # metadata key ("R:NL" a region's, "C:31" a calling code's main region) ->
        self.prefix = _Prefixes()  # national_prefix_for_parsing
        self.general = _Table(pl.String)
        self.general_first: dict[str, frozenset[str]] = {}
        self.transform = _Table(pl.Boolean)
        self.strip = _Table(pl.Int64)  # length bits a stripped number may keep
        # calling code -> regions; "cc|k" -> k-th region's leading digits, general pattern;
        # "cc|k|n" -> its type patterns for numbers of length n
        self.count = _Table(pl.Int64)
        self.single = _Table(pl.Boolean)
        # A number no region of its code could take (wrong length, no general pattern
        # matches) is invalid without trying the regions one by one.
        self.any_general = _Table(pl.String)
        self.any_length = _Table(pl.Int64)
        self.leading = _Table(pl.String)
        self.valid_general = _Table(pl.String)
        self.types = _Table(pl.String)

    def _metadata(self, key: str, meta: Any) -> None:
        general = meta.general_desc.national_number_pattern if meta.general_desc else None
        self.prefix.put(key, meta.national_prefix_for_parsing)
        self.general.put(key, _anchored(general, whole=True))
        self.general_first[key] = first_digits(general)
        self.transform.put(key, bool(meta.national_prefix_transform_rule))
        self.strip.put(key, _length_bits(meta, lambda v: v not in _NOT_STRIPPED))

    def add_regions(self, regions: list[str]) -> None:
        for region in set(regions) - self.regions:
            meta = PhoneMetadata.metadata_for_region(region, None)
            self.regions.add(region)
            self.own.put(region, str(meta.country_code))
            self.idd.put(region, meta.international_prefix)
            self.too_long.put(region, _length_bits(meta, ValidationResult.TOO_LONG.__eq__))
            self._metadata(f"R:{region}", meta)

    def add_codes(self, codes: list[int]) -> None:
        for code in set(codes) - self.codes:
            self.codes.add(code)
            main = phonenumbers.region_code_for_country_code(code)
            meta = PhoneMetadata.metadata_for_region_or_calling_code(code, main)
            regions = country_rules(code).regions
            if meta is None or regions is None:
                continue  # no metadata: left to phonenumbers
            self._metadata(f"C:{code}", meta)
            self.count.put(str(code), len(regions))
            self.single.put(str(code), len(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]) == 1)
            generals = [f"(?:{r.general})" for r in regions if r.general and r.alternatives]
            self.any_general.put(str(code), _anchored("|".join(generals), whole=True))
            lengths = {n for r in regions for n in r.alternatives}
            self.any_length.put(str(code), sum(1 << n for n in lengths if n < _LENGTHS))
            for k, rules in enumerate(regions):
                self.leading.put(f"{code}|{k}", _anchored(rules.leading, whole=False))
                self.valid_general.put(f"{code}|{k}", _anchored(rules.general, whole=True))
                for length, alternatives in rules.alternatives.items():
                    self.types.put(f"{code}|{k}|{length}", _anchored(alternatives, whole=True))


def bit(bits: pl.Expr, length: pl.Expr) -> pl.Expr:
    """Whether bit ``length`` of ``bits`` is set (lengths from _LENGTHS on: the top bit)."""
    power = pl.lit(2, dtype=pl.Int64).pow(pl.min_horizontal(length, _LENGTHS - 1).cast(pl.Int64))
    return ((bits // power) % 2) == 1


def _matches(value: pl.Expr, pattern: pl.Expr) -> pl.Expr:
    return value.str.contains(pattern).fill_null(False)


Lookup = Callable[[Any], "str | None"]


def match_by_key(
    frame: pl.DataFrame,
    key: str,
    tests: dict[str, tuple[str, Lookup]],
    universe: Iterable[Any],
) -> pl.DataFrame:
    """``frame`` with a boolean column per test ``name: (column, lookup)``: whether the
    row's ``column`` matches the anchored pattern ``lookup(row's key)`` (False without).

    One regex serves every key: ``"<key>#<value>"`` against ``^(?:k1#P1|k2#P2|...)``. It
    is built over the whole ``universe`` of keys, not only those in the block, so the
    same pattern text comes back block after block and the engine's regex cache (32
    patterns) keeps it compiled. (A column of per-row patterns would be hashed row by
    row, which costs more than the match for the long type patterns.)
    """
    keys = sorted({str(k): k for k in universe}.items())
    found = {}
    for name, (column, lookup) in tests.items():
        whole, alternatives = True, []
        for text, value in keys:
            pattern = lookup(value)
            if pattern:
                whole = pattern.endswith("$")
                inner = pattern[1:-1] if whole else pattern[1:]
                alternatives.append(f"{re.escape(text)}#{inner}")
        if not alternatives:
            found[name] = pl.lit(False)
            continue
        combined = "^(?:" + "|".join(alternatives) + (")$" if whole else ")")
        haystack = pl.concat_str(_col(key).cast(pl.String), pl.lit("#"), _col(column))
        found[name] = haystack.str.contains(combined).fill_null(False)
    return frame.with_columns(**found)
