"""The block mapper against the row-by-row one: same profiles byte for byte, same rejects.

Every fast path the engine takes (stripping, e-mail, phones, typed values, the JSON it
writes) must give what ``ProfileMapper`` + orjson give, on data full of edge cases.
"""

from __future__ import annotations

import random
import re
import sys

import numpy as np
import orjson
import pytest
import xxhash

from devtools.sample_rows import COLUMNS as SAMPLE_COLUMNS
from devtools.sample_rows import RowMaker
from shared.blocks import RowBlock, column_name
from shared.definitions import parse_definition
from shared.engine import pl
from shared.errors import InputError
from shared.mapping import emails, values
from shared.mapping.columns import PY_WHITESPACE, BlockMapper
from shared.profiles import ProfileMapper, RowRejected
from tests.golden import _BOOLEANS, _DATES, _EMAILS, _NUMBERS, _PHONES, _STRINGS
from tests.test_profiles import _date_samples

WIDE_COLUMNS = [
    "Id", "Email", "Phone", "First", "Last", "Org", "Title", "Locale", "City", "Zip",
    "Country", "Lat", "Lon", "Tier", "Value", "Vip", "Since", "Note",
]  # fmt: skip
WIDE_MAPPING = {
    "email": "Email",
    "phone_number": "Phone",
    "external_id": "Id",
    "first_name": "First",
    "last_name": "Last",
    "organization": "Org",
    "title": "Title",
    "locale": "Locale",
    "location": {
        "city": "City", "zip": "Zip", "country": "Country",
        "latitude": "Lat", "longitude": "Lon",
    },
    "properties": {
        "value": {"column": "Value", "type": "number"},
        "tier": {"column": "Tier"},
        "vip": {"column": "Vip", "type": "boolean"},
        "since": {"column": "Since", "type": "date"},
        "note \"quoted\" ü": {"column": "Note"},
        "same_as_value": {"column": "Value", "type": "string"},
    },
}  # fmt: skip


def _definition(mapping: dict, region: str | None = "US", region_column: str | None = "Country"):
    return parse_definition(
        {
            "name": "wide",
            "source": {"container": "ci-exports", "folder": "CI_1/Klaviyo", "segment": "Vip"},
            "connection": {"name": "klaviyo", "privacy_consent": True},
            "destination": {"list_id": "Y6nRLr"},
            "mapping": mapping,
            "options": {
                k: v
                for k, v in (
                    ("phone_default_region", region),
                    ("phone_region_column", region_column),
                )
                if v is not None
            },
        }
    )


def _expected(mapper: ProfileMapper, rows: list[list[str]], email_at: int):
    parts, rejects = [], []
    for line, row in enumerate(rows, 1):
        try:
            profile = mapper.to_profile(row)
        except RowRejected as exc:
            rejects.append((line, str(exc.code), exc.detail, row[email_at]))
            continue
        part = orjson.dumps({"type": "profile", "attributes": profile.attributes})
        if len(part) > 100_000:
            reason = f"profile is {len(part):,} bytes; Klaviyo accepts at most 100 KB"
            rejects.append((line, "profile_too_large", reason, profile.email))
            continue
        parts.append((line, profile.email, part, profile.phone_dropped))
    return parts, sorted(rejects)


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ESCAPED = re.compile('[\\\\"\x00-\x1f]')


def _flags(chunk: list[list[str]]) -> tuple[bool, np.ndarray]:
    """What the block reader says of these rows: any control character, and per row
    whether no value holds a character JSON must escape."""
    controls = any(_CONTROL.search(v) for row in chunk for v in row)
    plain = np.array([not any(_ESCAPED.search(v) for v in row) for row in chunk], dtype=bool)
    return controls, plain


def _mapped(mapper: BlockMapper, rows: list[list[str]], block_rows: int, *, flags: bool = False):
    """The block mapper's profiles and rejects; ``flags``: with the reader's flags (no
    control characters, rows that need no escapes), else the cautious defaults."""
    parts, rejects = [], []
    for start in range(0, len(rows), block_rows):
        chunk = rows[start : start + block_rows]
        frame = pl.DataFrame(
            {column_name(p): [r[p] for r in chunk] for p in mapper.positions},
            schema={column_name(p): pl.String for p in mapper.positions},
        )
        lines = np.arange(start + 1, start + len(chunk) + 1, dtype=np.int64)
        controls, plain = _flags(chunk) if flags else (True, None)
        result = mapper.map(RowBlock(0, "f.csv", frame, lines, controls=controls, plain=plain))
        block = result.profiles
        assert block.keys.tolist() == [xxhash.xxh3_64_intdigest(e.encode()) for e in
                                       block.emails.to_list()]  # fmt: skip
        assert block.attr_hashes.tolist() == [xxhash.xxh3_64_intdigest(p) for p in block.parts]
        parts += list(zip(block.lines.tolist(), block.emails.to_list(), block.parts,
                          block.phone_dropped.tolist(), strict=True))  # fmt: skip
        rejects += [(r.line, r.code, r.detail, r.email) for r in result.rejects]
        assert result.records == len(chunk)
    return parts, sorted(rejects)


def _pad(rng: random.Random, value: str) -> str:
    if rng.random() < 0.1:
        return rng.choice([" ", "\t", "\u00a0", "\x1c", "\u3000"]) + value + rng.choice(["", " "])
    return value


def _wide_rows(count: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    plain_numbers = ["", "42", "-3.5", "1234.50", "0.07", "52", "-4.9", "7", "0"]
    plain_dates = ["", "2023-04-01", "2024-02-29T10:30:00Z", "2020-12-31T23:59:59"]

    def sometimes(traps: list[str], plain: list[str]) -> str:
        return rng.choice(traps) if rng.random() < 0.04 else rng.choice(plain)

    numbers = [*_NUMBERS, "91", "-180.5", "180"]
    dates = [*_DATES, *_date_samples(300)[::7]]
    rows = []
    for i in range(count):
        phone, country = rng.choice(_PHONES) if rng.random() < 0.3 else ("", "NL")
        if rng.random() < 0.5:
            maker_country = rng.choice(["NL", "US", "GB", "DE", "FR"])
            phone, country = f"+31 6 {rng.randrange(10**7, 10**8)}", maker_country
        email = rng.choice(_EMAILS) if rng.random() < 0.2 else f"User.{i}@Example.COM"
        row = {
            "Id": f"C-{i}",
            "Email": _pad(rng, email),
            "Phone": _pad(rng, phone),
            "First": rng.choice([*_STRINGS, "Zoë", "Renée", ""]),
            "Last": rng.choice(["O'Brien", 'say "hi"', "back\\slash", "", "김"]),
            "Org": rng.choice(["Contoso", "", "  "]),
            "Title": rng.choice(["CEO", "\x00", "tab\there"]),
            "Locale": rng.choice(["nl-NL", ""]),
            "City": rng.choice(["Den Haag\n(Zuid-Holland)", "Austin, TX\r\nUSA", "Ōsaka", ""]),
            "Zip": rng.choice(["1234 AB", ""]),
            "Country": country,
            "Lat": sometimes(numbers, plain_numbers),
            "Lon": sometimes(numbers, plain_numbers),
            "Tier": rng.choice(["Gold", ""]),
            "Value": _pad(rng, sometimes(numbers, plain_numbers)),
            "Vip": sometimes(_BOOLEANS, ["true", "false", "", "TRUE", "yes"]),
            "Since": sometimes(dates, plain_dates),
            "Note": rng.choice(["", "x" * 120_000, "y" * 50_000, "note"]) if i % 97 == 0 else "n",
        }
        rows.append([row[c] for c in WIDE_COLUMNS])
    return rows


@pytest.mark.parametrize("flags", [False, True])
@pytest.mark.parametrize(("block_rows", "count"), [(3, 150), (257, 2500), (5000, 5000)])
def test_wide_mapping_gives_the_row_by_row_profiles_and_rejects(block_rows, count, flags):
    definition = _definition(WIDE_MAPPING)
    options = {"default_region": "US", "region_column": "Country"}
    rows = _wide_rows(count, seed=block_rows)
    if flags and block_rows == 257:  # blocks without any control character
        rows = [[_CONTROL.sub("", v) for v in row] for row in rows]
    block = BlockMapper(definition.mapping, WIDE_COLUMNS, **options)
    row = ProfileMapper(definition.mapping, WIDE_COLUMNS, **options)
    got = _mapped(block, rows, block_rows, flags=flags)
    expected = _expected(row, rows, WIDE_COLUMNS.index("Email"))
    assert got == expected
    # Both outcomes are exercised, and rows of both paths (engine, row by row).
    assert len(expected[0]) > count / 3 and len(expected[1]) > count / 50


def test_the_benchmark_rows_give_the_row_by_row_profiles():
    definition = _definition(
        {"email": "Email", "phone_number": "Phone", "first_name": "FirstName",
         "location": {"city": "City"}, "properties": {
             "ltv": {"column": "LifetimeValue", "type": "number"},
             "vip": {"column": "IsVip", "type": "boolean"},
             "since": {"column": "SignupDate", "type": "date"}}},
    )  # fmt: skip
    columns = [name for name, _ in SAMPLE_COLUMNS]
    maker = RowMaker(9, dirty=True, phone_share=0.95)
    rows = [maker.row(i) for i in range(8000)]
    options = {"default_region": "US", "region_column": "Country"}
    got = _mapped(BlockMapper(definition.mapping, columns, **options), rows, 3000, flags=True)
    expected = _expected(ProfileMapper(definition.mapping, columns, **options), rows, 1)
    assert got == expected


def test_no_region_anywhere_drops_national_numbers_as_phonenumbers_does():
    definition = _definition({"email": "Email", "phone_number": "Phone"}, None, None)
    rows = [["a@x.io", "06 12345678"], ["b@x.io", "+31 6 12345678"], ["c@x.io", " "]]
    mapper = BlockMapper(definition.mapping, ["Email", "Phone"])
    got = _mapped(mapper, rows, 10)
    expected = _expected(ProfileMapper(definition.mapping, ["Email", "Phone"]), rows, 0)
    assert got == expected
    assert [dropped for *_, dropped in got[0]] == [True, False, False]


def test_a_missing_column_is_the_row_mappers_error():
    definition = _definition({"email": "Email", "phone_number": "Mobile"}, None, None)
    with pytest.raises(InputError) as caught:
        BlockMapper(definition.mapping, ["Email", "Phone"], source="x.csv")
    assert caught.value.field == "mapping.phone_number"


def test_python_whitespace_is_what_str_strip_removes():
    assert set(PY_WHITESPACE) == {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}


def test_the_engines_own_strip_is_pythons_but_for_the_controls_it_lacks():
    # Blocks without control characters strip with the engine's own (faster) set.
    candidates = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    stripped = pl.Series([f"{c}x{c}" for c in candidates]).str.strip_chars().to_list()
    engine = {c for c, s in zip(candidates, stripped, strict=True) if s == "x"}
    assert engine == set(PY_WHITESPACE) - set("\x1c\x1d\x1e\x1f")


def test_the_engines_plain_address_check_is_the_row_one():
    rng = random.Random(11)
    samples = [*(e.strip().lower() for e in _EMAILS), "a--b@x.com", "a@b--c.com", "x@y.onion"]
    parts = ["john.doe", "a" * 64, "a" * 65, "o'brien", "x+tag", "-", "_", ".a", "a..b", ""]
    labels = ["mail", "ab--cd", "a", "b" * 63, "b" * 64, "-a", "a-", "xn--bcher-kva", "1"]
    tlds = ["com", "nl", "c", "123", "arpa", "local", "test", "museum", "c" * 63, "c" * 64]
    for _ in range(4000):
        domain = ".".join([rng.choice(labels) for _ in range(rng.randrange(1, 5))])
        samples.append(f"{rng.choice(parts)}@{domain}.{rng.choice(tlds)}")
    samples = [s for s in samples if s.isascii()]
    frame = pl.DataFrame({"e": samples})
    for stage in emails.plain_email("e", "ok"):
        frame = frame.with_columns(stage)
    assert frame["ok"].to_list() == [bool(emails.is_plain_email(s)) for s in samples]
    assert 150 < sum(frame["ok"].to_list()) < len(samples) - 1000


@pytest.mark.parametrize("kind", ["number", "latitude", "longitude", "boolean", "date"])
def test_typed_values_the_engine_decides_are_written_as_orjson_writes_them(kind):
    rng = random.Random(5)
    if kind == "date":
        samples = _date_samples(3000) + list(_DATES)
    elif kind == "boolean":
        samples = [*_BOOLEANS, "true", "false", "Y", "nO", "ǅ", "K"]
    else:
        digits = "0123456789"
        samples = list(_NUMBERS) + [
            rng.choice(["", "-"]) + "".join(rng.choice(digits) for _ in range(rng.randrange(1, 17)))
            + rng.choice(["", ".", "." + "".join(rng.choice("00123456789") for _ in range(
                rng.randrange(0, 17)))])
            for _ in range(20_000)
        ]  # fmt: skip
    samples = [s for s in samples if s]
    frame = pl.DataFrame({"v": samples})
    for stage in values.json_form("v", kind, "j"):
        frame = frame.with_columns(stage)
    convert = values.CONVERTERS.get(kind) or (lambda v: float(values.to_number(v)))
    limit = values.COORDINATE_RANGE.get(kind)
    decided = 0
    for value, text, ok in zip(samples, frame["j"].to_list(), frame["j_ok"].to_list(),
                               strict=True):  # fmt: skip
        if not ok:
            continue
        decided += 1
        converted = convert(value)
        if limit is not None:
            assert -limit <= converted <= limit, value
        assert text == orjson.dumps(converted).decode(), value
    assert decided > min(len(samples) * 0.2, 1000)
