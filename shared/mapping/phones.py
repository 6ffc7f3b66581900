"""Phone numbers to E.164, one at a time, with phonenumbers' exact answers.

``phonenumbers.parse`` + ``is_valid_number`` cost ~40 µs a number here. :func:`to_e164`
replays them from the same metadata with precompiled patterns (1-3 µs for ``+<cc>...`` or
a national number without trunk prefix, ~7 µs with one), and hands any number whose
answer depends on a step it does not replay to phonenumbers itself. The column-wise path
(``phone_columns.py``) decides most of a block in the engine and leaves the rest to this.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any, Final

import phonenumbers
from phonenumbers import PhoneMetadata

__all__ = ["CC_PREFIXES", "REGIONS", "country_rules", "to_e164"]


# --- phone numbers ----------------------------------------------------------------------

_MIN_NSN, _MAX_NSN = 2, 17  # phonenumbers' _MIN_LENGTH_FOR_NSN / _MAX_LENGTH_FOR_NSN
# Punctuation that parse() ignores in an international number (tested against it).
_SEPARATORS: Final = str.maketrans("", "", " -().")
_UNDECIDED: Final = object()
REGIONS: Final = frozenset(phonenumbers.SUPPORTED_REGIONS)


def _country_code_prefixes() -> dict[str, tuple[int, int]]:
    # _extract_country_code() takes the shortest known calling code among the first 1-3
    # digits; precomputed for every 3-digit start as (its length, the code).
    known = {str(cc) for cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE}
    prefixes = {}
    for start in range(1000):
        digits = f"{start:03d}"
        for size in (1, 2, 3):
            if digits[0] != "0" and digits[:size] in known:
                prefixes[digits] = (size, int(digits[:size]))
                break
    return prefixes


CC_PREFIXES: Final = _country_code_prefixes()


class _RegionRules:
    """One region's ``_number_type_helper(nsn) != UNKNOWN``, one regex per length.

    phonenumbers checks the general pattern, then each number type in turn (premium,
    toll free, ..., fixed line, mobile), each a possible-length test plus a full match.
    The number is valid when the general pattern and any type match, so for each length
    we keep ``(?=general\\Z)(?:type|type|...)`` over the types that allow that length.
    """

    __slots__ = ("_by_length", "alternatives", "general", "leading", "leading_digits", "patterns")

    def __init__(self, metadata: Any, country_code: int, region: str) -> None:
        lead = metadata.leading_digits
        self.leading: str | None = lead  # the patterns as text, for the column-wise path
        self.leading_digits = re.compile(lead).match if lead is not None else None
        self.patterns: dict[int, str] = {}
        self.alternatives: dict[int, str] = {}  # length -> the types' patterns, or-ed
        general = metadata.general_desc
        self.general: str = general.national_number_pattern if _has_pattern(general) else ""
        if _has_pattern(general) and (
            region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
            or phonenumbers.country_code_for_valid_region(region) == country_code
        ):
            types = [
                metadata.premium_rate,
                metadata.toll_free,
                metadata.shared_cost,
                metadata.voip,
                metadata.personal_number,
                metadata.pager,
                metadata.uan,
                metadata.voicemail,
                metadata.fixed_line,
            ]
            # With the same pattern for both, phonenumbers never looks at the mobile desc.
            if not metadata.same_mobile_and_fixed_line_pattern:
                types.append(metadata.mobile)
            for length in range(_MIN_NSN, _MAX_NSN + 1):
                alternatives = [
                    f"(?:{d.national_number_pattern})"
                    for d in types
                    if _has_pattern(d) and _allows_length(d, length)
                ]
                if alternatives and _allows_length(general, length):
                    self.alternatives[length] = "|".join(alternatives)
                    self.patterns[length] = (
                        f"(?=(?:{general.national_number_pattern})\\Z)(?:{'|'.join(alternatives)})"
                    )
        # Compiled when first asked: the column-wise path reads only the patterns' text.
        self._by_length: dict[int, Callable[[str], Any]] | None = None

    def is_valid(self, nsn: str) -> bool:
        if self._by_length is None:
            # is_valid_number_for_region() is False for every number when patterns is empty.
            self._by_length = {n: re.compile(p).fullmatch for n, p in self.patterns.items()}
        match = self._by_length.get(len(nsn))
        return match is not None and match(nsn) is not None


def _has_pattern(desc: Any) -> bool:
    return desc is not None and bool(desc.national_number_pattern)


def _allows_length(desc: Any, length: int) -> bool:
    lengths = desc.possible_length
    return len(lengths) == 0 or length in lengths


class _CountryRules:
    """``parse`` + ``is_valid_number`` for ``+<country code><nsn>``, one calling code."""

    __slots__ = ("_prefix", "_quick", "national_prefix", "regions")

    def __init__(self, country_code: int) -> None:
        main_region = phonenumbers.region_code_for_country_code(country_code)
        main = PhoneMetadata.metadata_for_region_or_calling_code(country_code, main_region)
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[country_code]
        self.regions: tuple[_RegionRules, ...] | None = None
        self.national_prefix = None
        self._prefix: str | None = None
        self._quick: dict[int, Callable[[str], Any]] | None = {}
        if main is None:
            return
        # parse() strips a national prefix even after "+cc" (+44 07911... -> 7911...),
        # and that step is not replicated here: numbers the prefix matches are declined.
        prefix = self._prefix = main.national_prefix_for_parsing or None
        self.national_prefix = re.compile(prefix).match if prefix else None
        if len(regions) == 1:
            self.regions = (_RegionRules(main, country_code, regions[0]),)
        else:
            self.regions = tuple(
                _RegionRules(metadata, country_code, region)
                for region in regions
                if (metadata := PhoneMetadata.metadata_for_region(region.upper(), None))
            )
        self._quick = None  # compiled when first asked (see quick)

    @property
    def quick(self) -> dict[int, Callable[[str], Any]]:
        """The common case in one regex call: not starting with the national prefix, and
        valid for the first region (region_code_for_number() picks the first region
        without leading digits whose patterns match, so that region decides)."""
        if self._quick is None:
            self._quick = {}
            first = self.regions[0] if self.regions else None
            if first is not None and first.leading_digits is None:
                avoid = f"(?!(?:{self._prefix}))" if self._prefix else ""
                patterns = first.patterns.items()
                self._quick = {n: re.compile(avoid + p).fullmatch for n, p in patterns}
        return self._quick

    def e164(self, number: str, nsn: str) -> object:
        """``number`` if valid, None if not, _UNDECIDED where this does not replicate parse."""
        quick = self.quick.get(len(nsn))
        if quick is not None and quick(nsn) is not None:
            return number
        if (
            self.regions is None
            or not _MIN_NSN <= len(nsn) <= _MAX_NSN
            or (self.national_prefix is not None and self.national_prefix(nsn))
        ):
            return _UNDECIDED
        return number if self.is_valid(nsn) else None

    def is_valid(self, nsn: str) -> bool:
        regions = self.regions or ()
        if len(regions) == 1:
            return regions[0].is_valid(nsn)
        # region_code_for_number(): the first region whose leading digits match, or
        # (without leading digits) whose patterns match; then validate for that region.
        for region in regions:
            if region.leading_digits is not None:
                if region.leading_digits(nsn):
                    return region.is_valid(nsn)
            elif region.is_valid(nsn):
                return True
        return False


@cache
def country_rules(country_code: int) -> _CountryRules:
    return _CountryRules(country_code)


def _international_e164(number: str) -> object:
    """``+`` and ASCII digits: E.164, None when invalid, or _UNDECIDED."""
    entry = CC_PREFIXES.get(number[1:4])
    if entry is None:
        return _UNDECIDED  # parse() would retry with the default region's IDD prefix
    size, country_code = entry
    # parse() keeps leading zeros (italian_leading_zero), so the national significant
    # number is exactly the remaining digits and format_number(E164) gives back `number`.
    return country_rules(country_code).e164(number, number[1 + size :])


class _NationalRules:
    """What ``parse(digits, region)`` does to a number written without ``+``."""

    __slots__ = (
        "calling_code",
        "country",
        "idd",
        "metadata",
        "national_prefix",
        "strip_lengths",
    )

    def __init__(self, region: str) -> None:
        self.metadata = PhoneMetadata.metadata_for_region(region, None)
        self.calling_code = str(self.metadata.country_code)
        self.country = country_rules(self.metadata.country_code)
        idd = self.metadata.international_prefix
        self.idd = re.compile(idd).match if idd else None
        prefix = self.metadata.national_prefix_for_parsing
        self.national_prefix = re.compile(prefix).match if prefix else None
        # parse() keeps a stripped number only at lengths _test_number_length() (which
        # looks at the length alone) does not call too short; none where a transform rule
        # rewrites the number (Brazil), so those always take parse()'s own code.
        self.strip_lengths: frozenset[int] = frozenset(
            ()
            if self.metadata.national_prefix_transform_rule
            else (
                n
                for n in range(_MAX_NSN + 1)
                if _test_number_length("0" * n, self.metadata) not in _TOO_SHORT_TO_STRIP
            )
        )

    def e164(self, digits: str) -> object:
        # Written with an international prefix (011..., 00...) or starting with the
        # region's own calling code: parse() has rules of its own there; decline.
        if (self.idd is not None and self.idd(digits)) or digits.startswith(self.calling_code):
            return _UNDECIDED
        nsn = digits
        if self.national_prefix is not None and (prefix := self.national_prefix(digits)):
            # A trunk prefix (020... -> 20...). When the rest is a valid number, parse()
            # strips it (the rest matches the general pattern, the length is allowed), so
            # that is the answer; it costs 1 µs instead of parse()'s own step's 4 µs.
            rest = digits[prefix.end() :]
            if len(rest) in self.strip_lengths and self.country.is_valid(rest):
                return f"+{self.calling_code}{rest}"
            # Otherwise parse()'s own code, called as parse() calls it, decides.
            _, stripped, _ = _strip_national_prefix(digits, self.metadata)
            if _test_number_length(stripped, self.metadata) not in _TOO_SHORT_TO_STRIP:
                nsn = stripped
        if self.country.regions is None or not _MIN_NSN <= len(nsn) <= _MAX_NSN:
            return _UNDECIDED
        return f"+{self.calling_code}{nsn}" if self.country.is_valid(nsn) else None


# parse()'s own helpers for the national-prefix step; private, so looked up defensively:
# without them, national numbers simply take the slow path.
_strip_national_prefix = getattr(
    phonenumbers.phonenumberutil, "_maybe_strip_national_prefix_carrier_code", None
)
_test_number_length = getattr(phonenumbers.phonenumberutil, "_test_number_length", None)
_TOO_SHORT_TO_STRIP: Final = (
    phonenumbers.ValidationResult.TOO_SHORT,
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    phonenumbers.ValidationResult.INVALID_LENGTH,
)


@cache
def _national_rules(region: str) -> _NationalRules | None:
    usable = region in phonenumbers.SUPPORTED_REGIONS and _strip_national_prefix is not None
    return _NationalRules(region) if usable and _test_number_length is not None else None


def _fast_e164(text: str, default_region: str | None) -> object:
    """E.164, None when invalid, or _UNDECIDED for phonenumbers to answer."""
    if len(text) < 4 or not text.isascii():
        return _UNDECIDED
    if text[0] == "+":
        return _international_e164(text) if text[1:].isdigit() else _UNDECIDED
    if default_region is None or not text.isdigit():
        return _UNDECIDED
    rules = _national_rules(default_region)
    return _UNDECIDED if rules is None else rules.e164(text)


@lru_cache(maxsize=16384)
def _slow_e164(raw: str, default_region: str | None) -> str | None:
    """phonenumbers' own answer; the reference the fast path must agree with."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def to_e164(raw: str, default_region: str | None = None) -> str | None:
    """``raw`` as an E.164 number, or None when phonenumbers would not call it valid.

    ``default_region`` (ISO code) applies to numbers written without ``+country code``.
    Same answers as ``phonenumbers.parse`` + ``is_valid_number`` + ``format_number``.
    """
    # isdigit() is only trusted after isascii(): alone it would take "²" or "٣".
    text = raw if raw.isascii() and raw.lstrip("+").isdigit() else raw.translate(_SEPARATORS)
    answer = _fast_e164(text, default_region)
    if answer is _UNDECIDED:
        return _slow_e164(raw, default_region)
    return answer  # type: ignore[return-value]
