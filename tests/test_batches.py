import orjson
import pytest

from shared.batches import MAX_PAYLOAD_BYTES, MAX_PROFILES_PER_JOB, Batch


def _part(i: int, pad: int = 0) -> bytes:
    return orjson.dumps(
        {"type": "profile", "attributes": {"email": f"u{i}@x.io", "first_name": "x" * pad}}
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
    ]
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


@pytest.mark.parametrize("position", [0, 2, 4])
def test_remove_keeps_origins_and_size_in_step(position):
    batch = Batch(0, "L")
    for i in range(5):
        batch.add(_part(i), i % 2, 10 + i, 100 + i)
    removed = batch.remove(position)
    assert removed.email == f"u{position}@x.io"
    assert removed.line == 10 + position
    assert len(batch) == 4
    assert batch.nbytes == len(batch.payload())
    assert list(batch.lines) == [10 + i for i in range(5) if i != position]
    assert batch.position_of(100 + position) is None
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
