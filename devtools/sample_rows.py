"""The rows of a realistic Customer Insights export, made from one seeded random stream.

What real exports contain, in known shares (when dirty): mixed-case and padded addresses,
duplicates, invalid and missing addresses, non-ASCII names, quoted fields with commas and
newlines, empty values, and a phone number of their own for nearly every person, in the
formats people type. :class:`RowMaker` counts what it makes (:class:`Tally`), so that
devtools/sample_export.py can say what a correct run must report.
"""

from __future__ import annotations

import bisect
import random
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

__all__ = ["BAD_PHONES", "COLUMNS", "PHONES", "RowMaker", "Tally"]

COLUMNS: tuple[tuple[str, str], ...] = (
    ("CustomerId", "string"),
    ("Email", "string"),
    ("FirstName", "string"),
    ("LastName", "string"),
    ("Phone", "string"),
    ("City", "string"),
    ("Country", "string"),
    ("LoyaltyTier", "string"),
    ("LifetimeValue", "decimal"),
    ("IsVip", "boolean"),
    ("SignupDate", "dateTime"),
)

# Shares of rows, when dirty.
INVALID_EMAIL_SHARE = 0.01
MISSING_EMAIL_SHARE = 0.002
DUPLICATE_SHARE = 0.02
INVALID_PHONE_SHARE = 0.01
MIXED_CASE_SHARE = 0.10
PADDED_SHARE = 0.03
QUOTED_CITY_SHARE = 0.005
EMPTY_VALUE_SHARE = 0.01

# (display, ascii for the address) per country; non-ASCII names are on purpose.
_FIRST = {
    "NL": [("Daan", "daan"), ("Sanne", "sanne"), ("Zoë", "zoe"), ("Joëlle", "joelle")],
    "US": [("Emma", "emma"), ("Liam", "liam"), ("Renée", "renee"), ("Olivia", "olivia")],
    "DE": [("Jürgen", "juergen"), ("Anna", "anna"), ("Lukas", "lukas"), ("Mia", "mia")],
    "GB": [("Oliver", "oliver"), ("Amelia", "amelia"), ("Siân", "sian"), ("Harry", "harry")],
    "FR": [("Léa", "lea"), ("Hugo", "hugo"), ("Chloé", "chloe"), ("François", "francois")],
    "SE": [("Åsa", "asa"), ("Björn", "bjorn"), ("Linnéa", "linnea"), ("Erik", "erik")],
    "KR": [("민준", "minjun"), ("서연", "seoyeon"), ("지호", "jiho"), ("하은", "haeun")],
    "BR": [("João", "joao"), ("Ana", "ana"), ("Conceição", "conceicao"), ("Pedro", "pedro")],
    "ES": [("José", "jose"), ("Lucía", "lucia"), ("Martín", "martin"), ("Sofía", "sofia")],
}
_LAST = {
    "NL": [("de Vries", "devries"), ("Jansen", "jansen"), ("van den Berg", "vandenberg")],
    "US": [("Smith", "smith"), ("O'Brien", "obrien"), ("Johnson", "johnson")],
    "DE": [("Müller", "mueller"), ("Schröder", "schroeder"), ("Weiß", "weiss")],
    "GB": [("Taylor", "taylor"), ("Ångström", "angstrom"), ("Evans", "evans")],
    "FR": [("Lefèvre", "lefevre"), ("Dubois", "dubois"), ("Girard", "girard")],
    "SE": [("Ångström", "angstrom"), ("Öberg", "oberg"), ("Lindqvist", "lindqvist")],
    "KR": [("김", "kim"), ("이", "lee"), ("박", "park")],
    "BR": [("Gonçalves", "goncalves"), ("Araújo", "araujo"), ("Silva", "silva")],
    "ES": [("Núñez", "nunez"), ("García", "garcia"), ("Peña", "pena")],
}
_CITIES = {
    "NL": ["Amsterdam", "Rotterdam", "'s-Hertogenbosch"],
    "US": ["San Francisco", "New York", "Chicago"],
    "DE": ["Berlin", "München", "Köln"],
    "GB": ["London", "Manchester", "Cardiff"],
    "FR": ["Paris", "Lyon", "Besançon"],
    "SE": ["Stockholm", "Göteborg", "Malmö"],
    "KR": ["서울", "부산", "Incheon"],
    "BR": ["São Paulo", "Rio de Janeiro", "Brasília"],
    "ES": ["Madrid", "A Coruña", "Sevilla"],
}
# Cities that need quoting: commas, newlines, quotes.
_AWKWARD_CITIES = [
    "Washington, D.C.",
    "Den Haag\n(Zuid-Holland)",
    'Saint-Denis "La Plaine"',
    "Austin, TX\r\nUSA",
]
_COUNTRIES = list(_FIRST)
_COUNTRY_WEIGHTS = [30, 25, 12, 10, 8, 5, 4, 3, 3]
# Upper bounds of each country's share of [0, 1), for bisect.
_COUNTRY_CUMULATIVE = [
    sum(_COUNTRY_WEIGHTS[: i + 1]) / sum(_COUNTRY_WEIGHTS) for i in range(len(_COUNTRY_WEIGHTS) - 1)
]
_DATES = [f"{day:%Y-%m-%d}" for day in (date(2015, 1, 1) + timedelta(days=n) for n in range(3650))]
_TIMES = [f"{minute // 60:02d}:{minute % 60:02d}:00" for minute in range(24 * 60)]
_DOMAINS = [
    "gmail.com",
    "outlook.com",
    "hotmail.nl",
    "yahoo.com",
    "web.de",
    "orange.fr",
    "naver.com",
    "icloud.com",
    "contoso.com",
    "fabrikam.nl",
]
_TIERS = ["Bronze", "Silver", "Gold", "Platinum", ""]
# Always invalid, whatever the region.
BAD_PHONES = ["12345", "+31 6 12", "+999 123 456 789", "0000000000", "+1 555", "06-1234"]


# random() * n is several times faster than randrange(n); the tiny bias does not matter here.
def _below(rng: random.Random, n: int) -> int:
    return int(rng.random() * n)


def _digits(rng: random.Random, count: int) -> str:
    return str(int(rng.random() * 10**count)).zfill(count)


def _pick(rng: random.Random, options: str | Sequence[str]) -> str:
    return options[int(rng.random() * len(options))]


# Phone makers per country, checked against libphonenumber (tests/test_sample_export.py):
# the ways people type their number into a form (national with or without the trunk
# prefix, +country, "+country (0)", the 00/011 international prefix, dots, dashes,
# brackets). Random digits give nearly every person a number of their own.
_US_AREAS = ["206", "212", "305", "312", "415", "617"]


def _nl(r: random.Random) -> str:
    return f"{_pick(r, '12345')}{_digits(r, 7)}"


def _us(r: random.Random) -> tuple[str, str, str]:
    return _pick(r, _US_AREAS), f"{_pick(r, '23456789')}{_digits(r, 2)}", _digits(r, 4)


def _gb_mobile(r: random.Random) -> str:
    return f"7{_pick(r, ['400', '500', '800'])} {_digits(r, 6)}"


def _fr(r: random.Random) -> str:
    return f"{_pick(r, '12')}{_digits(r, 1)} {_digits(r, 2)} {_digits(r, 2)} {_digits(r, 2)}"


PHONES: dict[str, list[Callable[[random.Random], str]]] = {
    "NL": [
        lambda r: f"020 {_pick(r, '23456789')}{_digits(r, 2)} {_digits(r, 4)}",
        lambda r: f"06 {_nl(r)}",
        lambda r: f"06-{_nl(r)}",
        lambda r: f"+31 6 {_nl(r)}",
        lambda r: f"+31 (0)6 {_nl(r)}",
        lambda r: f"0031 6 {_nl(r)}",
        lambda r: f"+316{_nl(r)}",
    ],
    "US": [
        lambda r: "({}) {}-{}".format(*_us(r)),
        lambda r: "+1 {} {}{}".format(*_us(r)),
        lambda r: "{}-{}-{}".format(*_us(r)),
        lambda r: "{}.{}.{}".format(*_us(r)),
        lambda r: "1-{}-{}-{}".format(*_us(r)),
        lambda r: "+1 ({}) {}-{}".format(*_us(r)),
        lambda r: "{}{}{}".format(*_us(r)),
    ],
    "DE": [
        lambda r: f"030 {_pick(r, '23456789')}{_digits(r, 7)}",
        lambda r: f"0151 {_digits(r, 8)}",
        lambda r: f"0151-{_digits(r, 8)}",
        lambda r: f"+49 151 {_digits(r, 8)}",
        lambda r: f"+49 (0)151 {_digits(r, 8)}",
        lambda r: f"0049 30 {_pick(r, '23456789')}{_digits(r, 7)}",
    ],
    "GB": [
        lambda r: f"020 7{_digits(r, 3)} {_digits(r, 4)}",
        lambda r: f"0{_gb_mobile(r)}",
        lambda r: f"+44 {_gb_mobile(r)}",
        lambda r: f"+44 (0){_gb_mobile(r)}",
        lambda r: f"0044 {_gb_mobile(r)}",
    ],
    "FR": [
        lambda r: f"06 {_fr(r)}",
        lambda r: f"+33 6 {_fr(r)}",
        lambda r: f"06.{_fr(r).replace(' ', '.')}",
        lambda r: f"0033 6 {_fr(r)}",
    ],
    "SE": [
        lambda r: f"070-{_digits(r, 3)} {_digits(r, 2)} {_digits(r, 2)}",
        lambda r: f"+46 70 {_digits(r, 3)} {_digits(r, 4)}",
        lambda r: f"070{_digits(r, 7)}",
    ],
    "KR": [
        lambda r: f"010-{_pick(r, '234')}{_digits(r, 3)}-{_digits(r, 4)}",
        lambda r: f"+82 10-{_pick(r, '234')}{_digits(r, 3)}-{_digits(r, 4)}",
        lambda r: f"010{_pick(r, '234')}{_digits(r, 7)}",
    ],
    "BR": [
        lambda r: f"(11) 9{_pick(r, '6789')}{_digits(r, 3)}-{_digits(r, 4)}",
        lambda r: f"+55 11 9{_pick(r, '6789')}{_digits(r, 3)} {_digits(r, 4)}",
        lambda r: f"+55 (11) 9{_pick(r, '6789')}{_digits(r, 3)}-{_digits(r, 4)}",
    ],
    "ES": [
        lambda r: f"6{_digits(r, 2)} {_digits(r, 3)} {_digits(r, 3)}",
        lambda r: f"+34 6{_digits(r, 2)} {_digits(r, 3)} {_digits(r, 3)}",
        lambda r: f"0034 6{_digits(r, 8)}",
    ],
}


@dataclass(slots=True)
class Tally:
    invalid_emails: int = 0
    missing_emails: int = 0
    duplicate_emails: int = 0
    unique_valid_emails: int = 0
    valid_phones: int = 0
    invalid_phones: int = 0
    multiline_rows: int = 0
    # Rows with an original valid address (row number, country), to draw duplicates from:
    # compact arrays rather than the addresses, so 10M rows stay small.
    originals: array = field(default_factory=lambda: array("L"))
    original_countries: array = field(default_factory=lambda: array("B"))


class RowMaker:
    """Makes the rows of an export in order from one seeded random stream, counting them.

    Written for speed (~10 µs a row here, upload included): one roll decides several things.
    """

    def __init__(self, seed: int, *, dirty: bool, phone_share: float) -> None:
        self._rng = random.Random(seed)
        self._seed = seed
        self._dirty = dirty
        self._phone_share = phone_share
        self.tally = Tally()
        self.needs_quoting = False  # the last row has a value with a comma, quote or newline

    def row(self, i: int) -> list[str]:
        """The values of row ``i``, in COLUMNS order."""
        rnd = self._rng.random
        country = bisect.bisect(_COUNTRY_CUMULATIVE, rnd())
        code = _COUNTRIES[country]
        (first, _), (last, _) = self._names(i, code)
        # One roll leaves at most one of FirstName, City, LifetimeValue empty.
        empty = int(rnd() / EMPTY_VALUE_SHARE) if self._dirty else 3
        return [
            f"{self._rng.getrandbits(128):032x}",
            self._email(i, country),
            "" if empty == 0 else first,
            last,
            self._phone(code),
            "" if empty == 1 else self._city(code),
            code,
            _pick(self._rng, _TIERS),
            "" if empty == 2 else f"{rnd() * 5000:.2f}",
            "true" if rnd() < 0.05 else "false",
            f"{_pick(self._rng, _DATES)}T{_pick(self._rng, _TIMES)}Z",
        ]

    def _names(self, i: int, code: str) -> tuple[tuple[str, str], tuple[str, str]]:
        # A function of the row alone, so a duplicate can rebuild its original's address.
        h = (i * 2654435761 + self._seed * 40503) & 0xFFFFFFFF
        firsts, lasts = _FIRST[code], _LAST[code]
        return firsts[h % len(firsts)], lasts[(h >> 8) % len(lasts)]

    def _address(self, i: int, code: str) -> str:
        (_, first), (_, last) = self._names(i, code)
        domain = _DOMAINS[((i * 2654435761) >> 16) % len(_DOMAINS)]
        # The row number makes it unique (last names never end in a digit).
        return f"{first}.{last}{i}@{domain}"

    def _email(self, i: int, country: int) -> str:
        rng, tally, code = self._rng, self.tally, _COUNTRIES[country]
        roll = rng.random() if self._dirty else 1.0
        if roll < INVALID_EMAIL_SHARE:
            tally.invalid_emails += 1
            return _break_address(self._address(i, code), _below(rng, 4))
        roll -= INVALID_EMAIL_SHARE
        if roll < MISSING_EMAIL_SHARE:
            tally.missing_emails += 1
            return ""
        roll -= MISSING_EMAIL_SHARE
        if roll < DUPLICATE_SHARE and tally.originals:
            tally.duplicate_emails += 1
            pick = _below(rng, len(tally.originals))
            original = tally.originals[pick]
            address = self._address(original, _COUNTRIES[tally.original_countries[pick]])
            return _disguise(address, _below(rng, 4))
        tally.unique_valid_emails += 1
        tally.originals.append(i)
        tally.original_countries.append(country)
        address = self._address(i, code)
        if self._dirty:
            style = rng.random()
            if style < MIXED_CASE_SHARE:
                return _mixed_case(address)
            if style < MIXED_CASE_SHARE + PADDED_SHARE:
                return f" {address}  "
        return address

    def _phone(self, code: str) -> str:
        rng, tally = self._rng, self.tally
        roll = rng.random()
        if self._dirty and roll < INVALID_PHONE_SHARE:
            tally.invalid_phones += 1
            return _pick(rng, BAD_PHONES)
        if roll < self._phone_share + (INVALID_PHONE_SHARE if self._dirty else 0.0):
            tally.valid_phones += 1
            return _pick(rng, PHONES[code])(rng)  # type: ignore[operator]
        return ""

    def _city(self, code: str) -> str:
        rng = self._rng
        roll = rng.random()
        if self._dirty and roll < QUOTED_CITY_SHARE:
            city = _AWKWARD_CITIES[int(roll / QUOTED_CITY_SHARE * len(_AWKWARD_CITIES))]
            self.needs_quoting = True
            if "\n" in city:
                self.tally.multiline_rows += 1
            return city
        return _pick(rng, _CITIES[code])


def _break_address(address: str, kind: int) -> str:
    """An invalid form of ``address``: no @, two @, a space inside, no dot in the domain."""
    local, domain = address.split("@")
    if kind == 0:
        return f"{local}.{domain}"
    if kind == 1:
        return f"{local}@@{domain}"
    if kind == 2:
        first, _, rest = local.partition(".")
        return f"{first} {rest}@{domain}"
    return f"{local}@{domain.replace('.', '')}"


def _disguise(address: str, kind: int) -> str:
    """The same address as another system would write it: case and padding differ."""
    if kind == 0:
        return address.upper()
    if kind == 1:
        return f"  {_mixed_case(address)} "
    if kind == 2:
        local, domain = address.split("@")
        return f"{local}@{domain.upper()}"
    return address


def _mixed_case(address: str) -> str:
    local, domain = address.split("@")
    return f"{'.'.join(p.capitalize() for p in local.split('.'))}@{domain.capitalize()}"
