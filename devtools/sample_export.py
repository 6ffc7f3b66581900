"""Write a realistic Customer Insights segment export to Blob Storage (demo, benchmark, tests).

The export has the real layout: ``<folder>/model.json`` and
``<folder>/<segment>/<YYYY>/<MM>/<DD>/<HHMM>/<segment>_<n>.csv`` (UTF-8 with a BOM, CRLF,
optionally gzipped), and what real exports contain: mixed-case and padded addresses,
duplicates, invalid addresses, non-ASCII names, quoted fields with commas and newlines,
empty values, phones in local and E.164 formats. Files are streamed to Blob Storage in
blocks (``stage_block`` + ``commit_block_list``); no file is ever held whole.

The returned :class:`SampleSummary` holds the counts the generator knows, so a run's report
can be checked exactly. Its definitions:

- an e-mail is *valid* when it is a plain ``local@domain.tld`` once surrounding spaces are
  stripped (case does not matter); *invalid* ones break that (no ``@``, two ``@``, a space
  inside, no dot in the domain); *missing* ones are empty;
- a *duplicate* is a row whose valid e-mail, stripped and lower-cased, equals an earlier
  row's; ``unique_valid_emails`` counts the distinct ones, so
  ``rows == unique_valid_emails + duplicate_emails + invalid_emails + missing_emails``;
- a phone is *valid* when libphonenumber accepts it with the row's Country as the region
  for local formats; empty phones are neither valid nor invalid.

Usage::

    python -m devtools.sample_export --connection-string "$CS" --container segments --rows 100000
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import csv
import io
import json
import os
import random
import sys
import zlib
from array import array
from collections import deque
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

__all__ = ["COLUMNS", "SampleSummary", "main", "write_sample_export"]

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

BLOCK_SIZE = 4 * 1024 * 1024  # bytes staged per block
_IN_FLIGHT = 2  # blocks being uploaded while the next one is generated
_CHECK_EVERY = 512  # rows between buffer-size checks

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
_BAD_PHONES = ["12345", "+31 6 12", "+999 123 456 789", "0000000000", "+1 555", "06-1234"]


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


_PHONES: dict[str, list[Callable[[random.Random], str]]] = {
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


@dataclass(frozen=True, slots=True)
class SampleSummary:
    """What was written, and the counts a correct run must report (module docstring)."""

    container: str
    folder: str
    segment: str
    prefix: str  # the snapshot folder, ending in "/"
    taken_at: datetime
    files: tuple[str, ...]
    header: bool
    rows: int
    bytes: int
    invalid_emails: int
    missing_emails: int
    duplicate_emails: int
    unique_valid_emails: int
    valid_phones: int
    invalid_phones: int
    multiline_rows: int  # rows with a newline inside a quoted field


@dataclass(slots=True)
class _Tally:
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


class _RowMaker:
    """Makes the rows of an export in order from one seeded random stream, counting them.

    Written for speed (~10 µs a row here, upload included): one roll decides several things.
    """

    def __init__(self, seed: int, *, dirty: bool, phone_share: float) -> None:
        self._rng = random.Random(seed)
        self._seed = seed
        self._dirty = dirty
        self._phone_share = phone_share
        self.tally = _Tally()
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
            return _pick(rng, _BAD_PHONES)
        if roll < self._phone_share + (INVALID_PHONE_SHARE if self._dirty else 0.0):
            tally.valid_phones += 1
            return _pick(rng, _PHONES[code])(rng)  # type: ignore[operator]
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


# ---------------------------------------------------------------- writing


class _BlockWriter:
    """Stages one blob in blocks as text arrives, a few uploads in flight; never the whole file."""

    def __init__(self, container_client: ContainerClient, name: str, *, gzip_file: bool) -> None:
        self._blob = container_client.get_blob_client(name)
        self._ids: list[str] = []
        self._in_flight: deque[Future[None]] = deque()
        self._pool = ThreadPoolExecutor(max_workers=_IN_FLIGHT, thread_name_prefix="stage")
        # wbits=31: a gzip stream (header + trailer), as `gzip` writes it.
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip_file else None
        self.bytes = 0

    def write(self, text: str) -> None:
        """Stage ``text`` (UTF-8) as the next block."""
        self._stage(text.encode("utf-8"))

    def commit(self) -> None:
        """Flush, wait for the uploads and commit the block list."""
        if self._compressor is not None:
            self._put(self._compressor.flush())
        for future in self._in_flight:
            future.result()
        self._pool.shutdown()
        content_type = "application/gzip" if self._compressor is not None else "text/csv"
        self._blob.commit_block_list(
            self._ids, content_settings=ContentSettings(content_type=content_type)
        )

    def _stage(self, data: bytes) -> None:
        if self._compressor is not None:
            data = self._compressor.compress(data)
        self._put(data)

    def _put(self, data: bytes) -> None:
        if not data:
            return
        while len(self._in_flight) >= _IN_FLIGHT:
            self._in_flight.popleft().result()
        block_id = f"{len(self._ids):08d}"  # the SDK base64-encodes it; all ids same length
        self._ids.append(block_id)
        self._in_flight.append(self._pool.submit(self._blob.stage_block, block_id, data))
        self.bytes += len(data)


def _write_partition(
    container_client: ContainerClient,
    name: str,
    rows: range,
    maker: _RowMaker,
    *,
    header: bool,
    gzip_file: bool,
) -> int:
    """Write rows ``rows`` to blob ``name``; returns the bytes stored."""
    out = _BlockWriter(container_client, name, gzip_file=gzip_file)
    buffer = io.StringIO()
    buffer.write("\ufeff")  # Customer Insights writes a UTF-8 byte-order mark
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header:
        writer.writerow([column for column, _ in COLUMNS])
    for count, i in enumerate(rows, 1):
        values = maker.row(i)
        if maker.needs_quoting:
            writer.writerow(values)
            maker.needs_quoting = False
        else:
            # No other value holds a comma, quote or newline: a plain join is valid CSV,
            # and ten times faster than csv.writer.
            buffer.write(",".join(values) + "\r\n")
        if count % _CHECK_EVERY == 0 and buffer.tell() >= BLOCK_SIZE:
            out.write(buffer.getvalue())
            buffer.seek(0)
            buffer.truncate()
    out.write(buffer.getvalue())
    out.commit()
    return out.bytes


def _write_model(
    container_client: ContainerClient,
    folder: str,
    segment: str,
    files: Sequence[str],
    *,
    header: bool,
    taken_at: datetime,
) -> None:
    """Write (or update) model.json with the segment's entity and its partitions."""
    path = f"{folder}/model.json"
    try:
        model = json.loads(container_client.download_blob(path).readall())
    except ResourceNotFoundError:
        model = {"name": "CustomerInsights", "version": "1.0", "entities": []}
    base = (
        f"https://{container_client.account_name}.blob.core.windows.net/"
        f"{container_client.container_name}/"
    )
    settings = {
        "$type": "CsvFormatSettings",
        "columnHeaders": header,
        "delimiter": ",",
        "quoteStyle": "QuoteStyle.Csv",
        "csvStyle": "CsvStyle.QuoteAlways",
        "encoding": "UTF-8",
    }
    entity = {
        "$type": "LocalEntity",
        "name": segment,
        "description": f"Segment {segment} exported by Customer Insights",
        "attributes": [{"name": n, "dataType": t} for n, t in COLUMNS],
        "partitions": [
            {
                "name": name.rsplit("/", 1)[1].split(".")[0],
                "refreshTime": _iso(taken_at),
                "location": base + quote(name),
                "fileFormatSettings": settings,
            }
            for name in files
        ],
    }
    others = [e for e in model.get("entities", []) if e.get("name") != segment]
    model["entities"] = [*others, entity]
    model["modifiedTime"] = _iso(taken_at)
    container_client.upload_blob(path, json.dumps(model, indent=2).encode(), overwrite=True)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def write_sample_export(
    container_client: ContainerClient,
    *,
    folder: str,
    segment: str,
    rows: int,
    partitions: int = 1,
    header: bool = False,
    seed: int = 7,
    taken_at: datetime | None = None,
    dirty: bool = True,
    phone_share: float = 0.3,
    gzip_files: bool | Collection[int] = False,
) -> SampleSummary:
    """Write model.json and ``partitions`` CSV files holding ``rows`` rows in all.

    Deterministic for a ``seed`` (and ``taken_at``, which names the snapshot folder; default
    now). ``dirty`` adds the invalid, missing and duplicate e-mails, invalid phones, quoted
    cities and empty values described in the module docstring; ``phone_share`` is the share
    of rows with a valid phone. ``header`` writes a header row (and says so in model.json);
    ``gzip_files`` writes ``.csv.gz`` (True: every partition; a collection: the partitions
    of those 0-based indexes).
    """
    if rows < 0 or partitions < 1:
        raise ValueError("rows must be >= 0 and partitions >= 1")
    folder = folder.strip("/")
    taken_at = (taken_at or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
    prefix = f"{folder}/{segment}/{taken_at:%Y/%m/%d/%H%M}/"
    maker = _RowMaker(seed, dirty=dirty, phone_share=phone_share)
    files: list[str] = []
    stored = 0
    for p in range(partitions):
        zipped = p in gzip_files if isinstance(gzip_files, Collection) else gzip_files
        name = f"{prefix}{segment}_{p + 1}{'.csv.gz' if zipped else '.csv'}"
        span = range(rows * p // partitions, rows * (p + 1) // partitions)
        stored += _write_partition(
            container_client, name, span, maker, header=header, gzip_file=zipped
        )
        files.append(name)
    _write_model(container_client, folder, segment, files, header=header, taken_at=taken_at)
    t = maker.tally
    return SampleSummary(
        container=container_client.container_name,
        folder=folder,
        segment=segment,
        prefix=prefix,
        taken_at=taken_at,
        files=tuple(files),
        header=header,
        rows=rows,
        bytes=stored,
        invalid_emails=t.invalid_emails,
        missing_emails=t.missing_emails,
        duplicate_emails=t.duplicate_emails,
        unique_valid_emails=t.unique_valid_emails,
        valid_phones=t.valid_phones,
        invalid_phones=t.invalid_phones,
        multiline_rows=t.multiline_rows,
    )


# ---------------------------------------------------------------- command line


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.sample_export", description=__doc__)
    parser.add_argument(
        "--connection-string",
        default=os.environ.get("AZURE_STORAGE_CONNECTION_STRING"),
        help="storage connection string (default: $AZURE_STORAGE_CONNECTION_STRING)",
    )
    parser.add_argument("--container", required=True, help="created if missing")
    parser.add_argument("--folder", default="CustomerInsights_00000000-sample/klaviyo")
    parser.add_argument("--segment", default="NewsletterSubscribers")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--header", action="store_true", help="write a header row")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clean", action="store_true", help="no invalid or duplicate values")
    parser.add_argument("--phone-share", type=float, default=0.3)
    parser.add_argument("--gzip", action="store_true", help="write .csv.gz files")
    args = parser.parse_args(argv)
    if not args.connection_string:
        parser.error("--connection-string or AZURE_STORAGE_CONNECTION_STRING is required")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Write a sample export and print its summary as JSON."""
    args = _arguments(argv)
    service = BlobServiceClient.from_connection_string(args.connection_string)
    container = service.get_container_client(args.container)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    summary = write_sample_export(
        container,
        folder=args.folder,
        segment=args.segment,
        rows=args.rows,
        partitions=args.partitions,
        header=args.header,
        seed=args.seed,
        dirty=not args.clean,
        phone_share=args.phone_share,
        gzip_files=args.gzip,
    )
    json.dump(asdict(summary), sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
