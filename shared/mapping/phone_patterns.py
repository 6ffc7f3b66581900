"""The phone metadata the column-wise path needs, as numpy lookup tables and DFAs.

``phone_columns.py`` works on a block of numbers as a matrix of digits; this module turns
phonenumbers' metadata into what its steps look up per row: for each region its calling
code, international prefix and length rules; for each metadata (``R:<region>``, a
region's own, or ``C:<code>``, a calling code's main region) its national prefix for
parsing, general pattern (a DFA) and strip lengths; for each calling code its regions in
``region_code_for_number``'s order, with their leading digits, general and type patterns
(DFAs, ``phone_dfa.py``). Tables grow as new regions and codes turn up, block by block.
"""

from __future__ import annotations

import re
import re._constants as sre_constants
import re._parser as sre_parse
from typing import Any, Final

import numpy as np
import phonenumbers
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import ValidationResult, _test_number_length

from shared.mapping.phone_dfa import DEAD, PAD, DfaTable, Unsupported
from shared.mapping.phones import country_rules

__all__ = [
    "DIGITS",
    "MAX_INPUT",
    "MAX_NSN",
    "PhoneTables",
    "Prefix",
    "Prefixes",
    "bit",
    "first_digits",
]

MAX_NSN, MAX_INPUT = 17, 250  # phonenumbers' length limits
_LENGTHS = 32  # lengths looked up; every longer number is TOO_LONG everywhere (checked)
_NOT_STRIPPED: Final = (
    ValidationResult.TOO_SHORT,
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    ValidationResult.INVALID_LENGTH,
)
DIGITS = frozenset("0123456789")
_BOUNDED = 20  # a prefix pattern this wide at most is matched once per distinct prefix


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


def _length_bits(meta: Any, accept: Any) -> int:
    """Bit n set when ``accept(_test_number_length('0' * n))`` (it looks at the length only)."""
    verdicts = [_test_number_length("0" * n, meta) for n in range(MAX_INPUT + 1)]
    assert all(v == ValidationResult.TOO_LONG for v in verdicts[_LENGTHS - 1 :])
    return sum(1 << n for n, v in enumerate(verdicts[:_LENGTHS]) if accept(v))


def bit(bits: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Whether bit ``length`` of ``bits`` is set (lengths from _LENGTHS on: the top bit)."""
    return (bits >> np.minimum(length, _LENGTHS - 1)) & 1 == 1


def _plain(parsed: Any) -> bool:
    """No anchor, look-around or back reference: a match never looks past its own end."""
    for op, arg in parsed:
        if op in (sre_constants.AT, sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            return False
        if op in (sre_constants.GROUPREF, sre_constants.GROUPREF_EXISTS):
            return False
        if op is sre_constants.SUBPATTERN and not _plain(arg[3]):
            return False
        if op is sre_constants.BRANCH and not all(_plain(b) for b in arg[1]):
            return False
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) and not _plain(arg[2]):
            return False
    return True


class Prefix:
    """A pattern matched at the start of numbers (``re.match``, as parse() does): the
    length of each number's match, -1 where there is none.

    A literal (``00``, ``011``, ``0``: most of them) is compared digit by digit; another
    pattern is asked once per distinct prefix as wide as its widest match (what follows
    cannot change a match that never looks past its end), by Python's own regex engine,
    so the match is the one parse() gets; numbers whose first digit no match can start
    with are not asked at all.
    """

    def __init__(self, pattern: str) -> None:
        self.literal = np.array([int(c) for c in pattern]) if pattern.isdigit() else None
        self._match = re.compile(pattern).match
        parsed = sre_parse.parse(pattern)
        width = parsed.getwidth()[1]
        self._width = width if _plain(parsed) and width <= _BOUNDED else None
        first = first_digits(pattern)
        self._first = np.array([str(d) in first for d in range(PAD + 1)])

    def lengths(self, digits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Per row of ``digits`` (a number, then PAD): its match's length, or -1."""
        if self.literal is not None:
            size = self.literal.size
            hit = (digits[:, :size] == self.literal).all(axis=1) & (lengths >= size)
            return np.where(hit, size, -1)
        out = np.full(len(digits), -1, dtype=np.int64)
        asked = np.flatnonzero(self._first[digits[:, 0]])
        if not asked.size:
            return out
        width = self._width if self._width is not None else digits.shape[1]
        keys = np.ascontiguousarray((digits[asked, :width] + 48).astype(np.uint8))
        unique, inverse = np.unique(keys.view(f"S{width}").ravel(), return_inverse=True)
        found = np.empty(unique.size, dtype=np.int64)
        for i, key in enumerate(unique.tolist()):
            match = self._match(key.decode("ascii").rstrip(":"))
            found[i] = match.end() if match else -1
        out[asked] = found[inverse.ravel()]
        return out


_LITERAL = 6  # literal prefixes up to this long are compared for every key at once


class Prefixes:
    """One prefix pattern (or none) per id: ``lengths`` answers rows of mixed ids, every
    literal at once and each other pattern on its own rows."""

    def __init__(self) -> None:
        self._matchers: list[Prefix | None] = []
        self._literal = np.zeros((0, _LITERAL), dtype=np.uint8)
        self._size = np.zeros(0, dtype=np.int64)  # literal's length; -1 a pattern, -2 none

    def append(self, pattern: str | None) -> None:
        matcher = Prefix(pattern) if pattern else None
        self._matchers.append(matcher)
        literal = np.full(_LITERAL, PAD, dtype=np.uint8)
        size = -2 if matcher is None else -1
        if matcher is not None and matcher.literal is not None and matcher.literal.size <= _LITERAL:
            size = matcher.literal.size
            literal[:size] = matcher.literal
        self._literal = np.vstack([self._literal, literal])
        self._size = np.append(self._size, size)

    def lengths(self, digits: np.ndarray, lengths: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Per row of ``digits`` (a number, then PAD): the length of its match of its id's
        pattern, or -1."""
        size = self._size[ids]
        out = np.full(ids.size, -1, dtype=np.int64)
        literal = size >= 0
        if literal.any():
            same = (digits[:, :_LITERAL] == self._literal[ids]) | (
                np.arange(_LITERAL) >= size[:, None]
            )
            hit = literal & same.all(axis=1) & (lengths >= size)
            out[hit] = size[hit]
        for key in np.unique(ids[size == -1]).tolist():
            at = np.flatnonzero(ids == key)
            matcher = self._matchers[key]
            assert matcher is not None
            out[at] = matcher.lengths(digits[at], lengths[at])
        return out


class _Grow:
    """A table that grows by id: ``ids[key]`` -> row of each column array."""

    def __init__(self, **columns: tuple[Any, Any]) -> None:
        self.ids: dict[Any, int] = {}
        self._defaults = {name: (dtype, fill) for name, (dtype, fill) in columns.items()}
        self.columns = {name: np.zeros(0, dtype=dtype) for name, (dtype, _) in columns.items()}

    def add(self, key: Any, **values: Any) -> int:
        index = self.ids[key] = len(self.ids)
        for name, (dtype, fill) in self._defaults.items():
            value = values.get(name, fill)
            self.columns[name] = np.append(self.columns[name], np.array([value], dtype=dtype))
        return index

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


class PhoneTables:
    """What parse() and is_valid_number need of each region and calling code seen so far."""

    def __init__(self) -> None:
        self.dfa = DfaTable()
        # metadata ("R:NL" a region's own, "C:31" a calling code's main region's):
        # its national prefix for parsing, general pattern, strip lengths; ok: compiled
        self.meta = _Grow(
            ok=(bool, False),
            general=(np.int64, DEAD),
            transform=(bool, False),
            strip=(np.int64, 0),
        )
        self.prefixes = Prefixes()
        # region -> its calling code, international prefix, TOO_LONG lengths, metadata
        self.region = _Grow(
            ok=(bool, False), own=(np.int64, 0), too_long=(np.int64, 0), meta=(np.int64, 0)
        )
        self.idd = Prefixes()
        # calling code (index = the code) -> metadata id (-1: none), regions, one region
        self.code_meta = np.full(1000, -1, dtype=np.int64)
        self.count = np.zeros(1000, dtype=np.int64)
        self.single = np.zeros(1000, dtype=bool)
        self.any_general = np.full(1000, DEAD, dtype=np.int64)
        self.any_length = np.zeros(1000, dtype=np.int64)
        self.codes: set[int] = set()
        # (code, k) -> the k-th region's leading digits (prefix DFA; -1 none), general
        # pattern; (code, k, length) -> its type patterns for numbers of that length
        self.leading = _Keyed(-1)
        self.general = _Keyed(DEAD)
        self.types = _Keyed(DEAD)
        # (code, k) not compiled yet: most numbers of a code are decided by its first
        # region (+1: the US, of 25), so the others wait until a number reaches them.
        self._pending: dict[int, tuple[int, int]] = {}
        self._broken: set[int] = set()  # (code, k) whose patterns are not compiled here

    # -- growing ---------------------------------------------------------------------

    def add_regions(self, regions: list[str]) -> None:
        for region in set(regions) - set(self.region.ids):
            meta = PhoneMetadata.metadata_for_region(region, None)
            if meta is None:  # not a region phonenumbers knows: its rows go row by row
                self.idd.append(None)
                self.region.add(region)
                continue
            own = meta.country_code
            meta_id = self._metadata(f"R:{region}", meta)
            self.idd.append(meta.international_prefix)
            self.region.add(
                region,
                ok=bool(self.meta["ok"][meta_id]),
                own=own,
                too_long=_length_bits(meta, ValidationResult.TOO_LONG.__eq__),
                meta=meta_id,
            )
            self.add_codes([own])

    def add_codes(self, codes: list[int]) -> None:
        for code in set(codes) - self.codes:
            self.codes.add(code)
            main = phonenumbers.region_code_for_country_code(code)
            meta = PhoneMetadata.metadata_for_region_or_calling_code(code, main)
            regions = country_rules(code).regions
            if meta is None or regions is None:
                continue  # no metadata: left to phonenumbers
            meta_id = self._metadata(f"C:{code}", meta)
            try:
                self._code(code, regions)
            except Unsupported:
                continue
            if self.meta["ok"][meta_id]:
                self.code_meta[code] = meta_id

    def _code(self, code: int, regions: tuple[Any, ...]) -> None:
        generals = [f"(?:{r.general})" for r in regions if r.general and r.alternatives]
        any_general = self.dfa.add("|".join(generals))
        for k in range(len(regions)):
            self._pending[_key(code, k)] = (code, k)
        self.count[code] = len(regions)
        self.single[code] = len(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]) == 1
        self.any_general[code] = any_general
        lengths = {n for r in regions for n in r.alternatives}
        self.any_length[code] = sum(1 << n for n in lengths if n < _LENGTHS)

    def reach(self, codes: np.ndarray, k: int) -> np.ndarray:
        """Compile the patterns of the k-th region of these calling codes, if not yet;
        per code, whether they could be (if not, its numbers go to phonenumbers)."""
        keys = _key(codes.astype(np.int64), k)
        for key in np.unique(keys).tolist():
            pending = self._pending.pop(key, None)
            if pending is None:
                continue
            code, k = pending
            rules = country_rules(code).regions[k]  # type: ignore[index]
            add = self.dfa.add
            try:
                leading = add(rules.leading, prefix=True) if rules.leading else -1
                general = add(rules.general)
                types = {n: add(p) for n, p in rules.alternatives.items()}
            except Unsupported:
                self._broken.add(key)
                continue
            self.leading.put(key, leading)
            self.general.put(key, general)
            for length, start in types.items():
                self.types.put(_key(code, k, length), start)
        if not self._broken:
            return np.ones(codes.size, dtype=bool)
        return ~np.isin(keys, list(self._broken))

    def _metadata(self, key: str, meta: Any) -> int:
        if key in self.meta.ids:
            return self.meta.ids[key]
        general = meta.general_desc.national_number_pattern if meta.general_desc else None
        prefix = meta.national_prefix_for_parsing
        try:
            start, ok = self.dfa.add(general), True
        except Unsupported:
            start, ok = DEAD, False
        self.prefixes.append(prefix)
        return self.meta.add(
            key,
            ok=ok,
            general=start,
            transform=bool(meta.national_prefix_transform_rule),
            strip=_length_bits(meta, lambda v: v not in _NOT_STRIPPED),
        )


def _key(code: Any, k: Any, length: Any = 0) -> Any:
    """One integer for (calling code, region index, length): code < 1000, k and length < 64."""
    return (code * 64 + k) * 64 + length


class _Keyed:
    """A dict of integer keys looked up for a whole column at once (``default`` if absent)."""

    def __init__(self, default: int) -> None:
        self._values: dict[int, int] = {}
        self._default = default
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def put(self, key: int, value: int) -> None:
        self._values[key] = value
        self._arrays = None

    def get(self, code: np.ndarray, k: int, length: np.ndarray | int = 0) -> np.ndarray:
        keys = _key(code.astype(np.int64), k, length)
        if self._arrays is None:
            known = np.array(sorted(self._values), dtype=np.int64)
            self._arrays = known, np.array([self._values[x] for x in known.tolist()], np.int64)
        known, values = self._arrays
        if not known.size:
            return np.full(keys.shape, self._default, dtype=np.int64)
        at = np.minimum(np.searchsorted(known, keys), known.size - 1)
        return np.where(known[at] == keys, values[at], self._default)
