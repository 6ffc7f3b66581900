"""The block reader's UTF-8 check (shared/damage.py): the verdict of a strict decode."""

from __future__ import annotations

import random

import pytest

from shared.damage import is_utf8

# Valid sequences, broken ones (truncated, stray continuation, overlong, surrogate, over
# U+10FFFF, bytes never valid) and ASCII that may split or join them.
_PIECES = [
    b"a", b",", b"\n", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xc2\xa0",
    b"\xef\xbb\xbf", b"\x80", b"\xbf", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc0\xaf",
    b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff", b"\xfe", b"\xf8\x88",
]  # fmt: skip


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("seed", range(4))
def test_is_utf8_agrees_with_a_strict_decode(seed):
    rng = random.Random(seed)
    for _ in range(5000):
        if rng.random() < 0.3:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 12)))
        else:
            data = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 8)))
        assert is_utf8(data) == _decodes(data), data


def test_is_utf8_on_a_block():
    block = "Zoë,Ñandú,東京\n".encode() * 10_000
    assert is_utf8(block)
    assert not is_utf8(block + b"\xe6\x9d")  # a character cut short at the end
    assert not is_utf8(b"\xa9" + block)  # a continuation byte with no lead
    assert is_utf8(b"")
