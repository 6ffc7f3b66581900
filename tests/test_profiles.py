from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from shared.definitions import parse_definition
from shared.errors import InputError
from shared.mapping import emails, phones, values
from shared.profiles import (
    MappedProfile,
    ProfileMapper,
    RejectCode,
    RowRejected,
    mask_email,
    to_e164,
)

COLUMNS = [
    "CustomerId",
    "Email",
    "Phone",
    "FirstName",
    "LastName",
    "Company",
    "City",
    "Country",
    "Lat",
    "Lon",
    "Tier",
    "LifetimeValue",
    "IsVip",
    "SignupDate",
]

MAPPING = {
    "email": "Email",
    "phone_number": "Phone",
    "external_id": "CustomerId",
    "first_name": "FirstName",
    "last_name": "LastName",
    "organization": "Company",
    "location": {"city": "City", "country": "Country", "latitude": "Lat", "longitude": "Lon"},
    "properties": {
        "tier": {"column": "Tier"},
        "lifetime_value": {"column": "LifetimeValue", "type": "number"},
        "is_vip": {"column": "IsVip", "type": "boolean"},
        "signup_date": {"column": "SignupDate", "type": "date"},
    },
}


def definition(mapping: dict = MAPPING):
    return parse_definition(
        {
            "name": "vip",
            "source": {"container": "ci-exports", "folder": "CI_1/Klaviyo", "segment": "Vip"},
            "connection": {"name": "klaviyo", "privacy_consent": True},
            "destination": {"list_id": "Y6nRLr"},
            "mapping": mapping,
        }
    )


@pytest.fixture(scope="module")
def mapper() -> ProfileMapper:
    return ProfileMapper(definition().mapping, COLUMNS, default_region="US", source="vip.csv")


def row(**values: str) -> list[str]:
    """A row of COLUMNS, empty except for ``values`` (Email defaults to a valid one)."""
    values.setdefault("Email", "jane@example.com")
    return [values.get(column, "") for column in COLUMNS]


def rejected(mapper: ProfileMapper, values: list[str]) -> RowRejected:
    with pytest.raises(RowRejected) as caught:
        mapper.to_profile(values)
    return caught.value


# --- a whole row -----------------------------------------------------------------------------


def test_full_row(mapper):
    profile = mapper.to_profile(
        row(
            CustomerId=" C-001 ",
            Email="  Jane.Doe@Example.COM ",
            Phone="(415) 555-0123",
            FirstName="Zoë",
            LastName="Łódź-Nakamura",
            Company="Contoso",
            City="Ōsaka",
            Country="Japan",
            Lat="34.6937",
            Lon="135.5023",
            Tier=" gold ",
            LifetimeValue="1234.50",
            IsVip="Yes",
            SignupDate="2023-04-01T00:00:00Z",
        )
    )
    assert isinstance(profile, MappedProfile)
    assert profile.email == "jane.doe@example.com"
    assert profile.phone_dropped is False
    assert profile.attributes == {
        "email": "jane.doe@example.com",
        "phone_number": "+14155550123",
        "external_id": "C-001",
        "first_name": "Zoë",
        "last_name": "Łódź-Nakamura",
        "organization": "Contoso",
        "location": {
            "city": "Ōsaka",
            "country": "Japan",
            "latitude": 34.6937,
            "longitude": 135.5023,
        },
        "properties": {
            "tier": "gold",
            "lifetime_value": 1234.5,
            "is_vip": True,
            "signup_date": "2023-04-01T00:00:00Z",
        },
    }


def test_empty_values_are_omitted(mapper):
    profile = mapper.to_profile(row(Email="jane@example.com", FirstName="  ", City="\t"))
    assert profile.attributes == {"email": "jane@example.com"}  # no empty location/properties
    assert profile.phone_dropped is False


def test_email_only_mapping():
    only = ProfileMapper(definition({"email": "Email"}).mapping, ["Email"])
    assert only.to_profile(["a@example.com"]) == (
        "a@example.com",
        {"email": "a@example.com"},
        False,
    )


@pytest.mark.parametrize("name", ["Zoë", "Łukasz", "李小龍", "Ñúñez", "O'Brien", "Αλέξανδρος"])
def test_non_ascii_names_are_kept(mapper, name):
    assert mapper.to_profile(row(FirstName=name)).attributes["first_name"] == name


# --- e-mail ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("\tJANE@EXAMPLE.CO.UK\n", "jane@example.co.uk"),
        ("o'brien+news@mail.example.com", "o'brien+news@mail.example.com"),
        ("Jöhn@Exämple.com", "jöhn@exämple.com"),  # left to emval: Unicode
        ("a@x.c", "a@x.c"),  # left to emval: one-letter TLD
    ],
)
def test_email_is_normalised(mapper, raw, expected):
    assert mapper.to_profile(row(Email=raw)).email == expected


@pytest.mark.parametrize("raw", ["", "   ", "\t"])
def test_missing_email(mapper, raw):
    error = rejected(mapper, row(Email=raw))
    assert error.code == RejectCode.MISSING_EMAIL == "missing_email"
    assert error.field == "mapping.email"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("jane.example.com", "Missing an '@' sign"),
        ("jane doe@example.com", "invalid characters"),
        ("jane..doe@example.com", "periods"),
        ("jane@example..com", "Domain"),
        ("jane@localhost", "Domain"),
        ("jane@example.test", "special-use"),
        ("jane@examplecom", "the domain has no dot"),  # RFC-valid, refused by Klaviyo
        ("jane@-example.com", "hyphen"),
        ('"jane"@example.com', "Quoting"),
        ("jane@[192.0.2.1]", "bracketed"),
    ],
)
def test_invalid_email(mapper, raw, reason):
    error = rejected(mapper, row(Email=raw))
    assert error.code == RejectCode.INVALID_EMAIL
    assert error.field == "mapping.email"
    assert reason in error.detail
    # Logged and reported: never the whole address.
    assert raw.lower() not in error.detail
    assert raw.lower() not in str(error)


def test_invalid_email_detail_is_masked(mapper):
    error = rejected(mapper, row(Email="John.Doe@Example..com"))
    assert error.detail.startswith("j***@example..com: ")


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("john.doe@example.com", "j***@example.com"),
        ("j@example.com", "j***@example.com"),
        ("no-at-sign", "n***"),
        ("", "***"),
    ],
)
def test_mask_email(email, masked):
    assert mask_email(email) == masked


def test_plain_email_fast_path_agrees_with_emval():
    """Whatever the fast check accepts, emval accepts too, unchanged."""
    rng = random.Random(7)
    locals_ = ["john.doe", "a", "o'brien", "x+tag", "_", "-", "a" * 64, "a" * 65, "a..b", ".a"]
    labels = ["mail", "ab--cd", "abc--d", "a", "b" * 63, "b" * 64, "-a", "a-", "xn--bcher-kva", "1"]
    tlds = ["com", "nl", "c", "123", "arpa", "invalid", "local", "localhost", "onion", "test"]
    tlds += ["example", "museum", "c" * 63]
    accepted = 0
    for _ in range(5000):
        local = rng.choice(locals_) if rng.random() < 0.5 else _word(rng, "abz09._+'-", 1, 10)
        domain = ".".join(
            [rng.choice(labels) if rng.random() < 0.5 else _word(rng, "abz09-", 1, 10)]
            * rng.randrange(1, 5)
            + [rng.choice(tlds)]
        )
        email = f"{local}@{domain}"
        if emails.is_plain_email(email):
            accepted += 1
            assert emails._validate_email(email).normalized == email
    assert accepted > 500  # the check is exercised, not vacuous


def _word(rng: random.Random, alphabet: str, shortest: int, longest: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(shortest, longest + 1)))


# --- phone numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(415) 555-0123", "+14155550123"),
        ("415.555.0123", "+14155550123"),
        ("+1 415 555 0123", "+14155550123"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+44 (0)20 7946 0958", "+442079460958"),
        ("+31 6 12345678", "+31612345678"),
    ],
)
def test_phone_to_e164(mapper, raw, expected):
    profile = mapper.to_profile(row(Phone=raw))
    assert profile.attributes["phone_number"] == expected
    assert profile.phone_dropped is False


@pytest.mark.parametrize("raw", ["12345", "+1 415 555", "+999 1234 5678", "call me", "+44 20 7946"])
def test_invalid_phone_is_dropped_but_profile_kept(mapper, raw):
    profile = mapper.to_profile(row(Phone=raw, FirstName="Jane"))
    assert "phone_number" not in profile.attributes
    assert profile.phone_dropped is True
    assert profile.attributes["first_name"] == "Jane"


def test_default_region_applies_to_national_numbers():
    assert to_e164("020 7946 0958", "GB") == "+442079460958"
    assert to_e164("06 12345678", "NL") == "+31612345678"
    assert to_e164("020 7946 0958", None) is None  # no region, no country code
    assert to_e164("+44 20 7946 0958", None) == "+442079460958"


def test_region_column_applies_per_row():
    columns = ["Email", "Phone", "Country"]
    mapping = definition({"email": "Email", "phone_number": "Phone"}).mapping
    mapper = ProfileMapper(mapping, columns, default_region="US", region_column="Country")
    uk = mapper.to_profile(["a@example.com", "020 7946 0958", " gb "])
    assert uk.attributes["phone_number"] == "+442079460958"
    # Not an ISO code: the default region (US) applies, where this is no number.
    other = mapper.to_profile(["a@example.com", "020 7946 0958", "United Kingdom"])
    assert other.phone_dropped is True
    us = mapper.to_profile(["a@example.com", "(415) 555-0123", ""])
    assert us.attributes["phone_number"] == "+14155550123"


def test_missing_region_column_is_an_input_error():
    mapping = definition({"email": "Email", "phone_number": "Phone"}).mapping
    with pytest.raises(InputError) as caught:
        ProfileMapper(mapping, ["Email", "Phone", "Land"], region_column="Country")
    assert caught.value.field == "options.phone_region_column"


def _phone_samples(count: int) -> list[tuple[str, str | None]]:
    """Valid examples of every type and region, written many ways, plus broken ones."""
    rng = random.Random(20240401)
    examples = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                examples.append((number, region))
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            examples.append((number, None))
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)

    def mutate(text: str) -> str:
        chars, at = list(text), rng.randrange(1, len(text))
        match rng.randrange(4):
            case 0:
                chars[at] = str(rng.randrange(10))
            case 1:
                chars.insert(at, str(rng.randrange(10)))
            case 2:
                del chars[at]
            case _:
                chars = chars[: rng.randrange(2, len(chars) + 1)]
        return "".join(chars)

    samples = []
    for _ in range(count):
        number, home = rng.choice(examples)
        e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
        region = home if rng.random() < 0.7 else rng.choice([None, *regions])
        match rng.randrange(9):
            case 0:
                text = e164
            case 1:
                text = mutate(e164)
            case 2:
                text = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
            case 3:
                text = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
            case 4:
                national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
                text = mutate("x" + "".join(c for c in national if c.isdigit()))[1:]
            case 5:  # a national prefix or zeros after the country code
                code = str(number.country_code)
                text = f"+{code}{rng.choice(['0', '00', '1', '9', '15'])}{e164[1 + len(code) :]}"
            case 6:
                text = "+" + "".join(str(rng.randrange(10)) for _ in range(rng.randrange(3, 18)))
            case 7:
                text = "".join(str(rng.randrange(10)) for _ in range(rng.randrange(3, 14)))
            case _:
                text = "".join(c + rng.choice(["", "", " ", "-", ".", "(", ")"]) for c in e164)
        samples.append((text, region))
    return samples


def test_fast_phone_path_gives_phonenumbers_answers():
    reference = phones._slow_e164.__wrapped__  # phonenumbers itself, uncached
    samples = _phone_samples(4000)
    decided = valid = 0
    for text, region in samples:
        assert to_e164(text, region) == reference(text, region), (text, region)
        compact = text if text.lstrip("+").isdigit() else text.translate(phones._SEPARATORS)
        if phones._fast_e164(compact, region) is not phones._UNDECIDED:
            decided += 1
        valid += reference(text, region) is not None
    # Meaningful only if both paths and both answers are well represented.
    assert decided > 0.7 * len(samples)
    assert 0.3 * len(samples) < valid < 0.8 * len(samples)


def test_trunk_prefix_shortcut_gives_phonenumbers_answers():
    """National numbers with a trunk prefix (020..., 06...) in every region: the shortcut
    that skips parse()'s prefix step must give parse()'s answer."""
    reference = phones._slow_e164.__wrapped__
    rng = random.Random(11)
    shortcut = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        rules = phones._national_rules(region)
        if rules is None or rules.national_prefix is None:
            continue
        for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
            digits = "".join(c for c in national if c.isdigit())
            for _ in range(12):
                text = digits
                if rng.random() < 0.7:  # another number of the same shape, or a broken one
                    at = rng.randrange(1, len(text))
                    text = text[:at] + rng.choice(["", str(rng.randrange(10))]) + text[at + 1 :]
                assert to_e164(text, region) == reference(text, region), (text, region)
                prefix = rules.national_prefix(text)
                rest = text[prefix.end() :] if prefix else ""
                shortcut += bool(
                    prefix and len(rest) in rules.strip_lengths and rules.country.is_valid(rest)
                )
    assert shortcut > 500  # the shortcut is exercised, not vacuous


# --- properties ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "raw", "expected"),
    [
        ("Tier", "  gold ", "gold"),
        ("LifetimeValue", "42", 42),
        ("LifetimeValue", "-3.5", -3.5),
        ("LifetimeValue", "1.0", 1),
        ("LifetimeValue", "1e3", 1000),
        ("LifetimeValue", ".5", 0.5),
        ("LifetimeValue", "+7", 7),
        ("LifetimeValue", "12345678901234567890", 1.2345678901234567e19),  # too big for int
        ("IsVip", "true", True),
        ("IsVip", "FALSE", False),
        ("IsVip", "Yes", True),
        ("IsVip", "n", False),
        ("IsVip", "1", True),
        ("IsVip", "0", False),
        ("SignupDate", "2023-04-01", "2023-04-01"),
        ("SignupDate", "2023-04-01T00:00:00Z", "2023-04-01T00:00:00Z"),
        ("SignupDate", "2023-04-01T00:00:00.0000000Z", "2023-04-01T00:00:00Z"),
        ("SignupDate", "2023-04-01T10:30:00+02:00", "2023-04-01T10:30:00+02:00"),
        ("SignupDate", "2023-04-01 10:30:00", "2023-04-01T10:30:00"),
        ("SignupDate", "4/1/2023 12:00:00 AM", "2023-04-01T00:00:00"),
        ("SignupDate", "4/1/2023 1:30:05 PM", "2023-04-01T13:30:05"),
        ("SignupDate", "12/31/2023 12:15:00 PM", "2023-12-31T12:15:00"),
        ("SignupDate", "4/1/2023", "2023-04-01"),
    ],
)
def test_property_types(mapper, column, raw, expected):
    properties = mapper.to_profile(row(**{column: raw})).attributes["properties"]
    (value,) = properties.values()
    assert value == expected
    assert type(value) is type(expected)


def _date_samples(count: int) -> list[str]:
    """Dates and date-times around every edge: year 0, Feb 29 in (non-)leap years, day 31
    of short months, 24:00, second 60, fractions, offsets, odd separators and digits."""
    rng = random.Random(29)
    years = ["0000", "0001", "1900", "1999", "2000", "2023", "2024", "2100", "9999", "٢٠٢٣"]
    days = [f"{n:02d}" for n in range(33)] + ["1", "001"]
    samples = [f"{y}-{m:02d}-{d}" for y in years for m in range(14) for d in days]
    suffixes = ["", "", "Z", "Z", "z", "+00:00", "-00:00", "+02:00", ".5Z", ".0000000Z", " "]
    for _ in range(count):
        day = f"{rng.choice(years)}-{rng.randrange(14):02d}-{rng.choice(days)}"
        hour, minute, second = rng.randrange(26), rng.randrange(62), rng.randrange(62)
        sep = rng.choice(["T", "T", "T", " ", "t"])
        samples.append(f"{day}{sep}{hour:02d}:{minute:02d}:{second:02d}{rng.choice(suffixes)}")
    return samples


def test_canonical_date_fast_path_agrees_with_parser():
    """Whatever the regex passes through unchanged, the full parser gives back unchanged;
    for everything else _to_date gives the parser's answer or error."""
    fast = 0
    for value in _date_samples(40000):
        try:
            expected = values._parsed_date(value)
        except ValueError as exc:
            expected = str(exc)
        if values._is_canonical_date(value):
            fast += 1
            assert expected == value, value
        try:
            assert values.to_date(value) == expected, value
        except ValueError as exc:
            assert str(exc) == expected, value
    assert fast > 5000  # the fast path is exercised, not vacuous


@pytest.mark.parametrize(
    "raw",
    ["0", "7", "007", "42", "999999999999999", "1000000000000000", "9007199254740993", "+7"],
)
def test_integer_fast_path_agrees_with_float_route(raw):
    number = float(raw)
    expected = int(number) if -(2**53) <= number <= 2**53 else number
    value = values.to_number(raw)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("column", "raw", "words"),
    [
        ("LifetimeValue", "1,5", "use '.' for decimals"),
        ("LifetimeValue", "1.234,50", "not a number"),
        ("LifetimeValue", "NaN", "not a finite number"),
        ("LifetimeValue", "inf", "not a finite number"),
        ("LifetimeValue", "1e999", "not a finite number"),
        ("LifetimeValue", "1_000", "not a number"),
        ("LifetimeValue", "١٢", "not a number"),
        ("LifetimeValue", "12 EUR", "not a number"),
        ("IsVip", "maybe", "not true/false"),
        ("IsVip", "2", "not true/false"),
        ("SignupDate", "2023-02-30", "not a"),
        ("SignupDate", "13/1/2023", "not a real date"),
        ("SignupDate", "4/1/2023 13:00:00 PM", "not a real date"),
        ("SignupDate", "yesterday", "not a date"),
    ],
)
def test_invalid_property(mapper, column, raw, words):
    error = rejected(mapper, row(**{column: raw}))
    name = {"LifetimeValue": "lifetime_value", "IsVip": "is_vip", "SignupDate": "signup_date"}
    assert error.code == RejectCode.INVALID_PROPERTY
    assert error.field == f"mapping.properties.{name[column]}"
    assert f"property '{name[column]}' (column '{column}')" in error.detail
    assert words in error.detail


@pytest.mark.parametrize(
    ("column", "raw"), [("Lat", "91"), ("Lat", "north"), ("Lon", "-180.5"), ("Lon", "nan")]
)
def test_invalid_coordinates(mapper, column, raw):
    error = rejected(mapper, row(**{column: raw}))
    assert error.code == RejectCode.INVALID_LOCATION
    assert error.field == f"mapping.location.{'latitude' if column == 'Lat' else 'longitude'}"


def test_coordinates_are_numbers(mapper):
    location = mapper.to_profile(row(Lat="52", Lon="-4.9")).attributes["location"]
    assert location == {"latitude": 52.0, "longitude": -4.9}


# --- columns ---------------------------------------------------------------------------------


def test_missing_mapped_column_names_positions_not_the_header_cells():
    # The columns may come from a header row that is really data: none is quoted.
    columns = [c if c != "Phone" else "phone" for c in COLUMNS]
    with pytest.raises(InputError) as caught:
        ProfileMapper(definition().mapping, columns, source="vip_1.csv")
    error = caught.value
    assert error.field == "mapping.phone_number"
    assert error.detail == (
        f"mapped column 'Phone' (mapping.phone_number) is not among the segment's "
        f"{len(columns)} columns, read from its header row (not shown: the first row may be "
        "data); the closest name is column 3"
    )


def test_missing_mapped_column_lists_the_models_columns():
    columns = [c if c != "Phone" else "phone" for c in COLUMNS]
    with pytest.raises(InputError) as caught:
        ProfileMapper(definition().mapping, columns, source="vip_1.csv", show_columns=True)
    error = caught.value
    assert error.field == "mapping.phone_number"
    assert error.file == "vip_1.csv"
    assert error.detail.startswith(
        "mapped column 'Phone' (mapping.phone_number) is not among the segment's columns: "
        "'CustomerId', 'Email', 'phone'"
    )
    assert f"({len(columns)} columns)" in error.detail
    assert error.detail.endswith("did you mean 'phone'?")


def test_missing_property_column_names_its_path():
    columns = [c for c in COLUMNS if c != "IsVip"]
    with pytest.raises(InputError) as caught:
        ProfileMapper(definition().mapping, columns)
    assert caught.value.field == "mapping.properties.is_vip.column"
    assert "did you mean" not in caught.value.detail


def test_columns_are_resolved_by_position():
    reordered = list(reversed(COLUMNS))
    mapper = ProfileMapper(definition().mapping, reordered)
    values = list(reversed(row(Email="x@example.com", FirstName="Jane")))
    assert mapper.to_profile(values).attributes["first_name"] == "Jane"


def test_reject_codes_are_stable_strings():
    assert [code.value for code in RejectCode] == [
        "missing_email",
        "invalid_email",
        "invalid_property",
        "invalid_location",
        "profile_too_large",
    ]


# --- what is not sent as it stands ------------------------------------------------------------


def test_control_characters_are_removed_from_string_values(mapper):
    profile = mapper.to_profile(
        row(FirstName="An\x00n\x7fe\x9f", LastName="tab\there", City="\x00\x01", Company=" \x0b ")
    )
    assert profile.attributes["first_name"] == "Anne"
    assert profile.attributes["last_name"] == "tab\there"  # tab, CR and LF stay
    assert "location" not in profile.attributes  # only control characters: empty
    assert "organization" not in profile.attributes


@pytest.mark.parametrize(
    "raw",
    ["\ufb01le@example.com", "\uff41\uff42@example.com", "x\u00b2@example.com", "\u24b6@x.com"],
)
def test_compatibility_forms_in_the_local_part_are_refused_not_merged(mapper, raw):
    # emval's NFKC would send "file@example.com", "ab@...": another person's mailbox.
    error = rejected(mapper, row(Email=raw))
    assert error.code == RejectCode.INVALID_EMAIL
    assert "Unicode normalisation would turn it into another address" in error.detail
    assert raw not in error.detail


@pytest.mark.parametrize(
    ("raw", "same_as"),
    [
        ("\u212aelvin@example.com", "kelvin@example.com"),  # KELVIN SIGN: canonically K
        ("e\u0301mile@example.fr", "\u00e9mile@example.fr"),  # decomposed accent
        ("user@\uff45xample.com", "user@example.com"),  # the domain follows IDNA's mapping
    ],
)
def test_canonical_equivalents_are_the_same_address(mapper, raw, same_as):
    assert mapper.to_profile(row(Email=raw)).email == same_as
