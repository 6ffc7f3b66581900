"""The phone patterns' DFAs answer exactly what Python's regex engine answers.

Every pattern of phonenumbers' metadata the column-wise path compiles (general, number
type and leading-digit patterns, whole and prefix matches) is checked on its region's
example numbers and on every one-digit change, deletion and insertion of them, which
land on both sides of the patterns' edges."""

from __future__ import annotations

import random
import re

import numpy as np
import phonenumbers
import pytest
from phonenumbers import PhoneMetadata

from shared.mapping.phone_dfa import PAD, DfaTable, Unsupported

_TYPES = (
    "general_desc", "premium_rate", "toll_free", "shared_cost", "voip", "personal_number",
    "pager", "uan", "voicemail", "fixed_line", "mobile",
)  # fmt: skip


def _patterns() -> list[tuple[str, bool, list[str]]]:
    """(pattern, prefix match, sample digit strings) for every region's patterns."""
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        meta = PhoneMetadata.metadata_for_region(region, None)
        examples = [
            d.example_number
            for name in _TYPES
            if (d := getattr(meta, name)) is not None and d.example_number
        ]
        for name in _TYPES:
            desc = getattr(meta, name)
            if desc is not None and desc.national_number_pattern:
                found.append((desc.national_number_pattern, False, examples))
        if meta.leading_digits:
            found.append((meta.leading_digits, True, examples))
    return found


def _variants(examples: list[str], rng: random.Random) -> list[str]:
    out = {""}
    for number in examples:
        out.add(number)
        for i in range(len(number) + 1):
            out.add(number[:i] + number[i + 1 :])  # deleted
            for d in "0123456789":
                out.add(number[:i] + d + number[i + 1 :])  # changed
                out.add(number[:i] + d + number[i:])  # inserted
    out.update(
        "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 18))) for _ in range(50)
    )
    return sorted(s for s in out if len(s) <= 20)


def _matrix(samples: list[str]) -> np.ndarray:
    matrix = np.full((len(samples), 21), PAD, dtype=np.uint8)
    for i, text in enumerate(samples):
        matrix[i, : len(text)] = [int(c) for c in text]
    return matrix


def test_every_metadata_pattern_is_compiled_and_matches_as_python_does():
    table, rng = DfaTable(), random.Random(3)
    checked = 0
    for pattern, prefix, examples in _patterns():
        start = table.add(pattern, prefix=prefix)
        samples = _variants(examples, rng)
        got = table.run(np.full(len(samples), start), _matrix(samples))
        regex = re.compile(pattern)
        expected = [bool((regex.match if prefix else regex.fullmatch)(s)) for s in samples]
        assert got.tolist() == expected, pattern
        checked += sum(expected)
    assert checked > 50_000  # matches, not only refusals


def test_patterns_share_one_table_and_compile_once():
    table = DfaTable()
    first = table.add(r"[2-9]\d{2}")
    size = table._size
    assert table.add(r"[2-9]\d{2}") == first and table._size == size
    other = table.add(r"1(?:23)?")
    samples = ["234", "123", "1", "12", "1234", "034"]
    got_first = table.run(np.full(6, first), _matrix(samples)).tolist()
    got_other = table.run(np.full(6, other), _matrix(samples)).tolist()
    assert got_first == [True, False, False, False, False, False]
    assert got_other == [False, True, True, False, False, False]


@pytest.mark.parametrize("pattern", [r"^1\d", r"(?=1)\d", r"(\d)\1", r"\d$"])
def test_what_a_dfa_cannot_answer_is_refused(pattern):
    with pytest.raises(Unsupported):
        DfaTable().add(pattern)
