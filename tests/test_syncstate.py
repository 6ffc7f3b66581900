"""The sync state: its rows, its Parquet format (whole and streamed), its keys and the
mapping fingerprint. Its store is tests/test_statestore.py."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import polars as pl
import pytest

from shared.chunked import ChunkedStrings
from shared.definitions import parse_definition
from shared.syncstate import (
    CONFIRMED,
    RETRY,
    StateMeta,
    SyncState,
    SyncStateError,
    SyncTarget,
    email_key,
    email_keys,
    mapping_fingerprint,
)
from tests.test_definitions import MINIMAL, with_change


def meta(generation: str = "g1", base: str | None = None, **changes: object) -> StateMeta:
    fields = {
        "export": "vip",
        "list_id": "Y6nRLr",
        "mapping_fingerprint": "sha256:m",
        "snapshot_people": 3,
        "generation": generation,
        "base_generation": base,
        "saved_at": "2026-01-01T00:00:00.000+00:00",
    }
    return StateMeta(**(fields | changes))  # type: ignore[arg-type]


def make_state(n: int = 3, *, generation: str = "g1", base: str | None = None) -> SyncState:
    emails = [f"person{i}@example.com" for i in range(n)]
    return SyncState(
        meta(generation, base, snapshot_people=n),
        keys=email_keys(emails),
        emails=emails,
        attr_hashes=np.arange(n, dtype=np.uint64) + 100,
        first_added_ms=np.arange(n, dtype=np.int64) * 1000,
        flags=np.where(np.arange(n) % 2 == 0, CONFIRMED, RETRY).astype(np.uint8),
    )


def with_meta(state: SyncState, new: StateMeta) -> SyncState:
    columns = ("keys", "emails", "attr_hashes", "first_added_ms", "flags")
    return SyncState(new, **{name: getattr(state, name) for name in columns})


# -- the in-memory state and its format ---------------------------------------------------


def test_rows_are_sorted_by_key_and_stay_aligned():
    state = make_state(50)
    assert np.all(state.keys[1:] > state.keys[:-1])
    for i, address in enumerate(state.emails):
        assert state.keys[i] == email_key(address)
        n = int(address.removeprefix("person").split("@")[0])
        assert state.attr_hashes[i] == 100 + n
        assert state.first_added_ms[i] == 1000 * n


def test_state_is_read_only_and_does_not_alias_the_callers_arrays():
    keys = np.sort(email_keys(["a@x.com", "b@x.com"]))
    hashes = np.array([1, 2], dtype=np.uint64)
    state = SyncState(
        meta(),
        keys=keys,
        emails=["?", "?"],
        attr_hashes=hashes,
        first_added_ms=[0, 0],
        flags=[1, 1],
    )
    hashes[0] = 99
    assert state.attr_hashes[0] == 1
    with pytest.raises(ValueError):
        state.flags[0] = 0
    assert keys.flags.writeable  # the caller's array is left as it was


def test_counts_and_repr_hold_no_address():
    state = make_state(5)
    assert len(state) == 5
    assert state.on_list == 3
    assert state.confirmed.tolist() == [(f & CONFIRMED) != 0 for f in state.flags.tolist()]
    assert "@" not in repr(state)
    assert state.nbytes > 5 * 25


def test_duplicate_keys_and_ragged_columns_are_refused():
    with pytest.raises(ValueError, match="unique"):
        SyncState(meta(), keys=[5, 5], emails=["a", "b"], attr_hashes=[1, 2],
                  first_added_ms=[0, 0], flags=[1, 1])  # fmt: skip
    with pytest.raises(ValueError, match="length"):
        SyncState(meta(), keys=[5, 6], emails=["a"], attr_hashes=[1, 2],
                  first_added_ms=[0, 0], flags=[1, 1])  # fmt: skip


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_parquet_round_trip(n):
    state = make_state(n)
    again = SyncState.from_parquet(state.to_parquet())
    assert again.equals(state)
    assert again.meta == state.meta
    assert again.emails.to_list() == state.emails.to_list()


def _on_disk(state: SyncState) -> SyncState:
    """The same state with its e-mails in key order in a temporary file, as a run's."""
    store = ChunkedStrings(spill=True)
    store.append(state.emails)
    columns = ("keys", "attr_hashes", "first_added_ms", "flags")
    return SyncState(
        state.meta, emails=store.drain_sorted(), **{n: getattr(state, n) for n in columns}
    )


@pytest.mark.parametrize("n", [0, 1, 40_000, 300_000])  # 300k: more than one drained part
def test_emails_on_disk_stream_into_the_same_state(n):
    state = make_state(n)
    data = _on_disk(state).to_parquet()
    streamed = SyncState.from_parquet(data)
    assert streamed.equals(state)
    assert streamed.meta == state.meta
    schema = pl.read_parquet_schema(io.BytesIO(data))
    assert schema == pl.read_parquet_schema(io.BytesIO(state.to_parquet()))


def test_emails_on_disk_are_read_once_when_asked_for():
    state = make_state(5)
    lazy = _on_disk(state)
    assert lazy.nbytes < state.nbytes  # only the sizes are held
    assert lazy.emails.to_list() == state.emails.to_list()
    assert lazy.emails is lazy.emails  # read once, then kept
    assert lazy.equals(state)


def test_emails_on_disk_given_out_of_key_order_are_sorted_with_the_rest():
    state = make_state(50)
    store = ChunkedStrings()
    store.append(state.emails.reverse())
    reversed_ = SyncState(
        state.meta,
        keys=state.keys[::-1],
        emails=store.drain_sorted(),
        attr_hashes=state.attr_hashes[::-1],
        first_added_ms=state.first_added_ms[::-1],
        flags=state.flags[::-1],
    )
    assert reversed_.equals(state)


def test_non_ascii_addresses_survive():
    emails = ["jürgen@exämple.de", "丽@例子.cn"]
    state = SyncState(meta(), keys=email_keys(emails), emails=emails, attr_hashes=[1, 2],
                      first_added_ms=[0, 0], flags=[1, 1])  # fmt: skip
    assert sorted(SyncState.from_parquet(state.to_parquet()).emails.to_list()) == sorted(emails)


def test_unreadable_blobs_name_their_source():
    with pytest.raises(SyncStateError, match=r"sync/x/1\.parquet: not a readable sync state"):
        SyncState.from_parquet(b"PAR1 not really", source="sync/x/1.parquet")
    buffer = io.BytesIO()
    pl.DataFrame({"key": [1]}).write_parquet(buffer)
    with pytest.raises(SyncStateError, match=r"not a readable|metadata"):
        SyncState.from_parquet(buffer.getvalue())


def test_another_format_version_is_refused():
    future = dataclasses.replace(meta(), format_version=2)
    data = with_meta(make_state(), future).to_parquet()
    with pytest.raises(SyncStateError, match="format 2 is not supported"):
        SyncState.from_parquet(data)


def test_email_keys_are_xxh3_of_the_utf8_address():
    import xxhash

    assert email_key("a@b.com") == xxhash.xxh3_64_intdigest(b"a@b.com")
    keys = email_keys(["a@b.com", "ü@b.com"])
    assert keys.dtype == np.uint64
    assert keys.tolist() == [email_key("a@b.com"), email_key("ü@b.com")]


def test_mapping_fingerprint_follows_what_shapes_profiles():
    base = parse_definition(MINIMAL)
    same = parse_definition(with_change("sync", {"mode": "add", "max_removal_percent": 50}))
    assert mapping_fingerprint(base) == mapping_fingerprint(same)
    assert mapping_fingerprint(base) == mapping_fingerprint(parse_definition(MINIMAL))
    for path, value in [
        ("mapping.first_name", "First"),
        ("mapping.email", "Mail"),
        ("options.phone_default_region", "NL"),
        ("destination.list_id", "Other1"),
    ]:
        assert mapping_fingerprint(
            parse_definition(with_change(path, value))
        ) != mapping_fingerprint(base)
    target = SyncTarget.of(base)
    assert (target.export, target.list_id) == ("vip", "Y6nRLr")
