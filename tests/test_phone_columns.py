"""Phone numbers a column at a time: every number the engine decides gets phonenumbers'
own answer (parse + is_valid_number + format_number E164), and nearly every number in the
formats people type is decided there."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from devtools.sample_rows import BAD_PHONES, PHONES
from shared.engine import pl
from shared.mapping import phones
from shared.mapping.phone_columns import PhoneColumns
from shared.mapping.phone_patterns import first_digits
from tests.golden import _PHONES as TRAP_PHONES
from tests.test_profiles import _phone_samples

reference = phones._slow_e164.__wrapped__  # phonenumbers itself, uncached


def _written_every_way() -> list[tuple[str, str | None]]:
    """Example numbers of every region as E.164, with 00/011 prefixes, without "+",
    with a trunk 0 after the code, nationally, and with the calling code before that."""
    samples = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
            e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
            code = str(number.country_code)
            for other in (region, "US", "NL", "GB"):
                samples += [
                    (e164, other),
                    ("00" + e164[1:], other),
                    ("011" + e164[1:], other),
                    (e164[1:], other),
                    (f"+{code}0{e164[1 + len(code) :]}", other),
                    (national, other),
                    (f"{code} {national}", other),
                ]
    return samples


def _people_typed(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        country = rng.choice(list(PHONES))
        maker = rng.choice(PHONES[country])
        samples.append((maker(rng) if rng.random() > 0.02 else rng.choice(BAD_PHONES), country))
    return samples


def _check(samples: list[tuple[str, str | None]]) -> float:
    raw = pl.Series([text for text, _ in samples]).str.strip_chars()
    regions = pl.Series([region for _, region in samples], dtype=pl.String)
    answers = PhoneColumns().resolve(raw, regions)
    got = answers.e164.to_list()
    for i, (text, region) in enumerate(samples):
        if answers.decided[i]:
            assert got[i] == reference(text.strip(), region), (text, region)
        else:
            assert got[i] is None
    return float(answers.decided.mean())


def test_decided_numbers_get_phonenumbers_answers_in_every_region_and_shape():
    samples = _phone_samples(6000) + _written_every_way()
    samples += [(p, c.strip().upper() if c.strip().upper() in phones.REGIONS else None)
                for p, c in TRAP_PHONES]  # fmt: skip
    assert _check(samples) > 0.6  # the engine's path is exercised, not vacuous


def test_nearly_every_number_people_type_is_decided_in_the_engine():
    # 2% broken numbers, some of a shape too rare to be worth a regex: they go row by row.
    assert _check(_people_typed(20_000, seed=3)) > 0.98


def test_a_table_kept_across_blocks_gives_the_same_answers():
    columns = PhoneColumns()
    for seed in (1, 2):
        samples = _people_typed(3_000, seed)
        raw = pl.Series([t for t, _ in samples])
        answers = columns.resolve(raw, pl.Series([r for _, r in samples]))
        fresh = PhoneColumns().resolve(raw, pl.Series([r for _, r in samples]))
        assert answers.e164.to_list() == fresh.e164.to_list()
        assert (answers.decided == fresh.decided).all()


@pytest.mark.parametrize(
    ("pattern", "digits"),
    [
        ("0", "0"),
        ("00", "0"),
        (r"(?:[2-9]\d{9}|3\d{6})", "23456789"),
        (r"0(8(?:[1-46-8]|5\d\d))?", "0"),
        (r"(?:1\d|2)?\d{5}", "0123456789"),
        ("", ""),
    ],
)
def test_first_digits_of_a_pattern(pattern, digits):
    assert first_digits(pattern) == frozenset(digits)
