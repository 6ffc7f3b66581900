"""Rows of a segment -> Klaviyo profile attributes, fast enough for millions of rows.

:class:`ProfileMapper` resolves the mapping's columns once, then turns each row into the
``attributes`` object of a Klaviyo profile: e-mail normalised and checked, phone number
in E.164 (dropped and flagged when invalid), custom properties typed. A row that cannot
become a profile raises :class:`RowRejected`; the run counts and reports it.

Two checks would dominate a million-row export if done naively, so each has a fast path
that must give the library's exact answer, and is tested against it:

- e-mail: emval costs 2-3 µs an address; plain ASCII addresses are recognised by one
  regex that accepts only what emval accepts unchanged. The rest goes to emval.
- phone: ``phonenumbers.parse`` + ``is_valid_number`` cost ~75 µs a number.
  :func:`to_e164` replays them from the same metadata with precompiled patterns (1-3 µs
  for ``+<cc>...`` or a national number without trunk prefix, ~7 µs with one), and hands
  any number whose answer depends on a step it does not replay to phonenumbers itself.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from enum import StrEnum
from functools import cache, lru_cache, partial
from typing import Any, Final, NamedTuple

import emval
import phonenumbers
from phonenumbers import PhoneMetadata

from shared.definitions import PROFILE_FIELDS, MappingSpec
from shared.errors import InputError

__all__ = [
    "MappedProfile",
    "ProfileMapper",
    "RejectCode",
    "RowRejected",
    "mask_email",
    "to_e164",
]


class RejectCode(StrEnum):
    """Why a row was rejected; stable short strings for reports."""

    MISSING_EMAIL = "missing_email"
    INVALID_EMAIL = "invalid_email"
    INVALID_PROPERTY = "invalid_property"
    INVALID_LOCATION = "invalid_location"
    PROFILE_TOO_LARGE = "profile_too_large"


class RowRejected(Exception):
    """A row that cannot become a Klaviyo profile.

    ``detail`` is plain words safe to log: it never holds a full e-mail address.
    """

    def __init__(self, code: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field


class MappedProfile(NamedTuple):
    email: str
    attributes: dict[str, Any]
    phone_dropped: bool


# NamedTuple's generated __new__ is Python code costing ~0.5 µs a call; building the tuple
# directly gives the same object for a sixth of that.
_new_profile: Final = partial(tuple.__new__, MappedProfile)


def mask_email(email: str) -> str:
    """``john.doe@example.com`` -> ``j***@example.com``: enough to recognise, not to use."""
    local, at, domain = email.partition("@")
    return f"{local[:1]}***{at}{domain}"


# --- e-mail -----------------------------------------------------------------------------

_EMAIL_VALIDATOR: Final = emval.EmailValidator(
    allow_smtputf8=True,
    allow_empty_local=False,
    allow_quoted_local=False,
    allow_domain_literal=False,
    deliverable_address=False,
)
# emval's Python wrapper copies every result field into a new Python object, which costs
# more than the validation itself (8 µs vs 3 µs a call). Its Rust validator takes the same
# input and returns the same fields, so call it directly when it is there.
_validate_email: Final[Callable[[str], Any]] = getattr(
    _EMAIL_VALIDATOR, "_emval", _EMAIL_VALIDATOR
).validate_email


# Addresses this simple are valid for emval too, and its normalised form is the address
# itself (tested against emval on generated addresses). Checking them here costs 0.5 µs
# instead of emval's 2-3 µs; anything else (Unicode, quoting, "--" in the domain, a
# one-letter or numeric TLD, special-use names) is left to emval.
_PLAIN_EMAIL: Final = re.compile(
    r"(?=.{1,254}\Z)(?=[^@]{1,64}@)"  # whole address, local part: emval's length limits
    r"[a-z0-9_+'-]+(?:\.[a-z0-9_+'-]+)*@"
    r"(?=.{1,253}\Z)(?!.*--)"  # domain length; "--" has IDNA rules, leave it to emval
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?!(?:arpa|invalid|local|localhost|onion|test)\Z)[a-z]{2,63}"  # special-use names
)
_is_plain_email: Final = _PLAIN_EMAIL.fullmatch


def _checked_email(email: str) -> str:
    """emval's verdict on a stripped, lower-cased address that is not plain; raises
    RowRejected without ever quoting the address."""
    if not email:
        raise RowRejected(RejectCode.MISSING_EMAIL, "no e-mail address", field="mapping.email")
    try:
        result = _validate_email(email)
    except (SyntaxError, ValueError) as exc:
        reason = str(exc).replace(email, mask_email(email))
        raise RowRejected(
            RejectCode.INVALID_EMAIL, f"{mask_email(email)}: {reason}", field="mapping.email"
        ) from None
    if "." not in result.domain_name:
        # Valid by RFC 5321 but refused by Klaviyo (and undeliverable in practice).
        detail = f"{mask_email(email)}: the domain has no dot"
        raise RowRejected(RejectCode.INVALID_EMAIL, detail, field="mapping.email")
    return result.normalized  # type: ignore[no-any-return]


# --- phone numbers ----------------------------------------------------------------------

_MIN_NSN, _MAX_NSN = 2, 17  # phonenumbers' _MIN_LENGTH_FOR_NSN / _MAX_LENGTH_FOR_NSN
# Punctuation that parse() ignores in an international number (tested against it).
_SEPARATORS: Final = str.maketrans("", "", " -().")
_UNDECIDED: Final = object()
_REGIONS: Final = frozenset(phonenumbers.SUPPORTED_REGIONS)


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


_CC_PREFIXES: Final = _country_code_prefixes()


class _RegionRules:
    """One region's ``_number_type_helper(nsn) != UNKNOWN``, one regex per length.

    phonenumbers checks the general pattern, then each number type in turn (premium,
    toll free, ..., fixed line, mobile), each a possible-length test plus a full match.
    The number is valid when the general pattern and any type match, so for each length
    we keep ``(?=general\\Z)(?:type|type|...)`` over the types that allow that length.
    """

    __slots__ = ("by_length", "leading_digits", "patterns")

    def __init__(self, metadata: Any, country_code: int, region: str) -> None:
        lead = metadata.leading_digits
        self.leading_digits = re.compile(lead).match if lead is not None else None
        self.patterns: dict[int, str] = {}
        general = metadata.general_desc
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
                    self.patterns[length] = (
                        f"(?=(?:{general.national_number_pattern})\\Z)(?:{'|'.join(alternatives)})"
                    )
        # is_valid_number_for_region() is False for every number when patterns is empty.
        self.by_length = {n: re.compile(p).fullmatch for n, p in self.patterns.items()}

    def is_valid(self, nsn: str) -> bool:
        match = self.by_length.get(len(nsn))
        return match is not None and match(nsn) is not None


def _has_pattern(desc: Any) -> bool:
    return desc is not None and bool(desc.national_number_pattern)


def _allows_length(desc: Any, length: int) -> bool:
    lengths = desc.possible_length
    return len(lengths) == 0 or length in lengths


class _CountryRules:
    """``parse`` + ``is_valid_number`` for ``+<country code><nsn>``, one calling code."""

    __slots__ = ("national_prefix", "quick", "regions")

    def __init__(self, country_code: int) -> None:
        main_region = phonenumbers.region_code_for_country_code(country_code)
        main = PhoneMetadata.metadata_for_region_or_calling_code(country_code, main_region)
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[country_code]
        self.regions: tuple[_RegionRules, ...] | None = None
        self.national_prefix = None
        self.quick: dict[int, Callable[[str], Any]] = {}
        if main is None:
            return
        # parse() strips a national prefix even after "+cc" (+44 07911... -> 7911...),
        # and that step is not replicated here: numbers the prefix matches are declined.
        prefix = main.national_prefix_for_parsing or None
        self.national_prefix = re.compile(prefix).match if prefix else None
        if len(regions) == 1:
            self.regions = (_RegionRules(main, country_code, regions[0]),)
        else:
            self.regions = tuple(
                _RegionRules(metadata, country_code, region)
                for region in regions
                if (metadata := PhoneMetadata.metadata_for_region(region.upper(), None))
            )
        # The common case in one regex call: not starting with the national prefix, and
        # valid for the first region (region_code_for_number() picks the first region
        # without leading digits whose patterns match, so that region decides).
        first = self.regions[0] if self.regions else None
        if first is not None and first.leading_digits is None:
            avoid = f"(?!(?:{prefix}))" if prefix else ""
            self.quick = {n: re.compile(avoid + p).fullmatch for n, p in first.patterns.items()}

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
def _country_rules(country_code: int) -> _CountryRules:
    return _CountryRules(country_code)


def _international_e164(number: str) -> object:
    """``+`` and ASCII digits: E.164, None when invalid, or _UNDECIDED."""
    entry = _CC_PREFIXES.get(number[1:4])
    if entry is None:
        return _UNDECIDED  # parse() would retry with the default region's IDD prefix
    size, country_code = entry
    # parse() keeps leading zeros (italian_leading_zero), so the national significant
    # number is exactly the remaining digits and format_number(E164) gives back `number`.
    return _country_rules(country_code).e164(number, number[1 + size :])


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
        self.country = _country_rules(self.metadata.country_code)
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


def _to_number(value: str) -> int | float:
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
        raise ValueError(f"{_shown(value)} is not a number{hint}") from None
    if not math.isfinite(number):
        raise ValueError(f"{_shown(value)} is not a finite number")
    if number.is_integer() and -_SAFE_INT <= number <= _SAFE_INT:
        return int(number)
    return number


def _to_boolean(value: str) -> bool:
    # Exports write "true"/"false": one lookup; lower() only for other spellings.
    answer = _BOOLEANS.get(value)
    if answer is None:
        answer = _BOOLEANS.get(value.lower())
        if answer is None:
            raise ValueError(f"{_shown(value)} is not true/false, yes/no, y/n or 1/0")
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


def _to_date(value: str) -> str:
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
        raise ValueError(f"{_shown(value)} is not a date (use ISO 8601, e.g. 2023-04-01)")
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
        raise ValueError(f"{_shown(value)} is not a real date") from None
    return moment


_CONVERTERS: Final[dict[str, Callable[[str], Any]]] = {
    "number": _to_number,
    "boolean": _to_boolean,
    "date": _to_date,
}
_COORDINATE_RANGE: Final = {"latitude": 90.0, "longitude": 180.0}


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:37] + "...")


# --- the mapper -------------------------------------------------------------------------


class ProfileMapper:
    """Turns rows with the given ``columns`` into Klaviyo profile attributes.

    Phone numbers written without ``+country code`` take the row's region from
    ``region_column`` (ISO codes such as ``NL``; anything else is ignored), else
    ``default_region``. ``source`` names the data in errors. A mapped column missing
    from ``columns`` raises InputError naming the definition field.
    """

    __slots__ = (
        "_columns",
        "_coordinates",
        "_default_region",
        "_email",
        "_location",
        "_phone",
        "_plain_properties",
        "_region",
        "_strings",
        "_typed_properties",
    )

    def __init__(
        self,
        mapping: MappingSpec,
        columns: Sequence[str],
        *,
        default_region: str | None = None,
        region_column: str | None = None,
        source: str | None = None,
    ) -> None:
        wanted = mapping.mapped_columns()
        if region_column is not None:
            wanted["options.phone_region_column"] = region_column
        index = _column_index(wanted, columns, source)
        self._default_region = default_region
        self._region = index.get("options.phone_region_column")
        self._email = index["mapping.email"]
        self._phone = index.get("mapping.phone_number")
        # The per-row work is flat loops over (name, position) pairs prepared here: at a
        # million rows, every function call and attribute lookup per value shows.
        self._strings = tuple(
            (field, index[f"mapping.{field}"])
            for field in PROFILE_FIELDS
            if field != "phone_number" and f"mapping.{field}" in index
        )
        self._location = tuple(
            (f, index[f"mapping.location.{f}"])
            for f, _ in mapping.location
            if f not in _COORDINATE_RANGE
        )
        self._coordinates = tuple(
            (f, index[f"mapping.location.{f}"])
            for f, _ in mapping.location
            if f in _COORDINATE_RANGE
        )
        self._plain_properties = tuple(
            (p.name, index[f"mapping.properties.{p.name}.column"])
            for p in mapping.properties
            if p.type == "string"
        )
        self._typed_properties = tuple(
            (p.name, index[f"mapping.properties.{p.name}.column"], _CONVERTERS[p.type])
            for p in mapping.properties
            if p.type != "string"
        )
        self._columns = {p.name: p.column for p in mapping.properties}

    def to_profile(self, values: Sequence[str]) -> MappedProfile:
        """The profile for one row (values in ``columns`` order).

        Raises RowRejected when the row cannot be a profile; an invalid phone number is
        left out and flagged in ``phone_dropped`` instead.
        """
        # One method, no helpers per section: each call costs more than its loop here.
        email = values[self._email].strip().lower()
        if not _is_plain_email(email):
            email = _checked_email(email)
        attributes: dict[str, Any] = {"email": email}
        phone_dropped = False
        if self._phone is not None and (raw := values[self._phone].strip()):
            region = self._default_region
            if self._region is not None:
                code = values[self._region].strip().upper()
                if code in _REGIONS:
                    region = code
            phone = to_e164(raw, region)
            if phone is None:
                phone_dropped = True
            else:
                attributes["phone_number"] = phone
        for field, i in self._strings:
            if value := values[i].strip():
                attributes[field] = value
        if self._location or self._coordinates:
            location: dict[str, Any] = {}
            for field, i in self._location:
                if value := values[i].strip():
                    location[field] = value
            for field, i in self._coordinates:
                if value := values[i].strip():
                    location[field] = _coordinate(field, value)
            if location:
                attributes["location"] = location
        if self._plain_properties or self._typed_properties:
            properties: dict[str, Any] = {}
            for name, i in self._plain_properties:
                if value := values[i].strip():
                    properties[name] = value
            for name, i, convert in self._typed_properties:
                if value := values[i].strip():
                    try:
                        properties[name] = convert(value)
                    except ValueError as exc:
                        raise self._invalid_property(name, exc) from None
            if properties:
                attributes["properties"] = properties
        return _new_profile((email, attributes, phone_dropped))  # type: ignore[no-any-return]

    def _invalid_property(self, name: str, exc: ValueError) -> RowRejected:
        return RowRejected(
            RejectCode.INVALID_PROPERTY,
            f"property {name!r} (column {self._columns[name]!r}): {exc}",
            field=f"mapping.properties.{name}",
        )


def _coordinate(field: str, value: str) -> float:
    limit = _COORDINATE_RANGE[field]
    try:
        number = float(_to_number(value))
    except ValueError as exc:
        reason = str(exc)
    else:
        if -limit <= number <= limit:
            return number
        reason = f"{_shown(value)} is outside -{limit:g}..{limit:g}"
    raise RowRejected(
        RejectCode.INVALID_LOCATION,
        f"location {field}: {reason}",
        field=f"mapping.location.{field}",
    )


def _column_index(
    wanted: dict[str, str], columns: Sequence[str], source: str | None
) -> dict[str, int]:
    """Definition field path -> column position; InputError for a column not there."""
    positions: dict[str, int] = {}
    for i, name in enumerate(columns):
        positions.setdefault(name, i)  # a repeated header: the first one wins
    index = {}
    for field, column in wanted.items():
        if column not in positions:
            raise InputError(
                _missing_column_message(field, column, columns), file=source, field=field
            )
        index[field] = positions[column]
    return index


def _missing_column_message(field: str, column: str, columns: Sequence[str]) -> str:
    shown = ", ".join(repr(c) for c in columns[:8])
    if len(columns) > 8:
        shown += f", ... ({len(columns)} columns)"
    message = f"mapped column {column!r} ({field}) is not among the segment's columns: {shown}"
    by_lower = {c.lower(): c for c in columns}
    close = difflib.get_close_matches(column.lower(), list(by_lower), n=1, cutoff=0.75)
    if close:
        message += f"; did you mean {by_lower[close[0]]!r}?"
    return message
