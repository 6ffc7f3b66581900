import random

import numpy as np
import orjson
import pytest

from shared.batches import MAX_PAYLOAD_BYTES, MAX_PROFILES_PER_JOB, Batch, Packer
from shared.engine import pl
from shared.profileblock import ProfileBlock, email_keys, part_hashes


def _part(i: int, pad: int = 0) -> bytes:
    return orjson.dumps(
        {"type": "profile", "attributes": {"email": f"u{i}@x.io", "first_name": "x" * pad}}
    )


def _block(parts: list[bytes], start: int = 0) -> ProfileBlock:
    emails = pl.Series([orjson.loads(p)["attributes"]["email"] for p in parts], dtype=pl.String)
    n = len(parts)
    return ProfileBlock(
        emails=emails,
        keys=email_keys(emails),
        attr_hashes=part_hashes(parts),
        files=np.full(n, 1, dtype=np.uint32),
        lines=np.arange(start + 1, start + n + 1, dtype=np.int64),
        phone_dropped=np.zeros(n, dtype=bool),
        parts=parts,
    )


def test_payload_is_a_valid_bulk_import_body_for_the_list():
    batch = Batch(0, "Y6nRLr")
    for i in range(3):
        batch.add(_part(i), 0, i + 1, i + 1)
    body = orjson.loads(batch.payload())
    data = body["data"]
    assert data["type"] == "profile-bulk-import-job"
    assert [p["attributes"]["email"] for p in data["attributes"]["profiles"]["data"]] == [
        "u0@x.io", "u1@x.io", "u2@x.io",
    ]  # fmt: skip
    assert data["relationships"]["lists"]["data"] == [{"type": "list", "id": "Y6nRLr"}]
    assert batch.nbytes == len(batch.payload())


def test_batch_is_full_at_ten_thousand_profiles():
    batch = Batch(0, "L")
    part = _part(1)
    for i in range(MAX_PROFILES_PER_JOB):
        assert batch.fits(len(part))
        batch.add(part, 0, i, i + 1)
    assert not batch.fits(len(part))


def test_batch_never_exceeds_the_payload_limit():
    batch = Batch(0, "L")
    part = _part(1, pad=90_000)
    while batch.fits(len(part)):
        batch.add(part, 0, 1, 1)
    assert len(batch.payload()) <= MAX_PAYLOAD_BYTES
    assert len(batch.payload()) + len(part) + 1 > MAX_PAYLOAD_BYTES


def _one_by_one(parts: list[bytes], blocks: list[ProfileBlock]) -> list[tuple[bytes, list[int]]]:
    """The reference cut: Batch.fits and Batch.add, one profile at a time."""
    out, batch, index = [], Batch(0, "L"), 0
    for block in blocks:
        for i, part in enumerate(block.parts):
            if not batch.fits(len(part)):
                out.append((batch.payload(), list(batch.lines)))
                index += 1
                batch = Batch(index, "L")
            batch.add(part, int(block.files[i]), int(block.lines[i]), int(block.keys[i]))
    out.append((batch.payload(), list(batch.lines)))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_packing_blocks_cuts_the_jobs_adding_one_by_one_would(seed):
    rng = random.Random(seed)
    # Small profiles first (the 10,000 limit cuts), then big ones too (the 5 MB limit cuts).
    pads = [rng.choice([0, 10, 30]) for _ in range(22_000)]
    pads += [rng.choice([0, 300, 2_000, 60_000]) for _ in range(8_000)]
    parts = [_part(i, pad=pad) for i, pad in enumerate(pads)]
    cuts = sorted(rng.sample(range(1, len(parts)), 40))
    blocks = [_block(parts[a:b], a) for a, b in zip([0, *cuts], [*cuts, len(parts)], strict=True)]
    packer, packed = Packer("L"), []
    for block in blocks:
        packed += list(packer.pack(block))
    packed.append(packer.flush())
    assert [(b.payload(), list(b.lines)) for b in packed] == _one_by_one(parts, blocks)
    assert [b.index for b in packed] == list(range(len(packed)))
    assert all(len(b) <= MAX_PROFILES_PER_JOB and b.nbytes <= MAX_PAYLOAD_BYTES for b in packed)
    assert max(len(b) for b in packed) == MAX_PROFILES_PER_JOB  # both limits are exercised
    assert max(b.nbytes for b in packed) > MAX_PAYLOAD_BYTES - 60_000


def test_a_block_filtered_by_a_mask_packs_only_what_is_kept():
    block = _block([_part(i) for i in range(10)])
    keep = np.array([i % 3 != 0 for i in range(10)])
    packer = Packer("L")
    assert list(packer.pack(block.select(keep))) == []
    batch = packer.flush()
    assert list(batch.lines) == [i + 1 for i in range(10) if i % 3]
    emails = [p["attributes"]["email"] for p in orjson.loads(batch.payload())["data"]
              ["attributes"]["profiles"]["data"]]  # fmt: skip
    assert emails == [f"u{i}@x.io" for i in range(10) if i % 3]
    assert batch.position_of(int(block.keys[4])) == 2


@pytest.mark.parametrize("position", [0, 2, 4])
def test_remove_keeps_origins_and_size_in_step(position):
    packer = Packer("L")
    block = _block([_part(i) for i in range(5)], start=9)
    assert list(packer.pack(block)) == []
    batch = packer.flush()
    removed = batch.remove(position)
    assert removed.email == f"u{position}@x.io"
    assert removed.line == 10 + position
    assert len(batch) == 4
    assert batch.nbytes == len(batch.payload())
    assert list(batch.lines) == [10 + i for i in range(5) if i != position]
    assert batch.position_of(int(block.keys[position])) is None
    emails = [
        p["attributes"]["email"]
        for p in orjson.loads(batch.payload())["data"]["attributes"]["profiles"]["data"]
    ]
    assert emails == [f"u{i}@x.io" for i in range(5) if i != position]


def test_removing_every_profile_one_by_one_keeps_a_valid_payload():
    batch = Batch(0, "L")
    for i in range(4):
        batch.add(_part(i), 0, i, i + 1)
    for position in (1, 2, 0, 0):
        batch.remove(position)
        orjson.loads(batch.payload())
    assert len(batch) == 0
