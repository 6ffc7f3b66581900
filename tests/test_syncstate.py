"""The sync state's format, and its store against Azurite: generations, the ETag-guarded
pointer, idempotent re-saves, pruning, and loading the base of a resumed run."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import orjson
import polars as pl
import pytest

from shared.chunked import ChunkedStrings
from shared.definitions import parse_definition
from shared.syncstate import (
    CONFIRMED,
    RETRY,
    ConcurrentUpdateError,
    LoadedState,
    StateMeta,
    SyncState,
    SyncStateError,
    SyncStateStore,
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


# -- the store --------------------------------------------------------------------------------


@pytest.fixture
def store(container) -> SyncStateStore:
    return SyncStateStore(container, "vip", "Y6nRLr", keep=3)


def save_next(store: SyncStateStore, generation: str, n: int = 3) -> LoadedState:
    loaded = store.load(run_id=generation)
    store.save(make_state(n, generation=generation, base=loaded.generation), loaded)
    return loaded


def test_no_state_yet(store):
    loaded = store.load(run_id="r1")
    assert loaded == LoadedState(None, None)


def test_save_then_load(store, container):
    loaded = store.load()
    state = make_state(10, generation="r1")
    store.save(state, loaded)
    again = store.load(run_id="r2")
    assert again.generation == "r1" and not again.resumed
    assert again.state is not None and again.state.equals(state)
    pointer = orjson.loads(
        container.get_blob_client("sync/vip/Y6nRLr/current.json").download_blob().readall()
    )
    assert pointer["generation"] == "r1"
    assert pointer["people"] == 10 and pointer["on_list"] == 5
    names = [b.name for b in container.list_blobs()]
    assert sorted(names) == ["sync/vip/Y6nRLr/current.json", "sync/vip/Y6nRLr/r1.parquet"]
    props = container.get_blob_client("sync/vip/Y6nRLr/r1.parquet").get_blob_properties()
    assert props.content_settings.content_type == "application/vnd.apache.parquet"


def test_a_concurrent_writer_fails_and_leaves_the_winner(store):
    save_next(store, "r1")
    a = store.load(run_id="ra")
    b = store.load(run_id="rb")
    store.save(make_state(4, generation="ra", base="r1"), a)
    with pytest.raises(ConcurrentUpdateError, match="now generation ra"):
        store.save(make_state(5, generation="rb", base="r1"), b)
    current = store.load()
    assert current.generation == "ra" and len(current.state) == 4


def test_two_first_runs_race_to_create_the_pointer(store):
    a, b = store.load(), store.load()
    store.save(make_state(2, generation="ra"), a)
    with pytest.raises(ConcurrentUpdateError):
        store.save(make_state(2, generation="rb"), b)
    assert store.load().generation == "ra"


def test_saving_the_same_generation_again_is_idempotent(store):
    save_next(store, "r1")
    loaded = store.load(run_id="r2")
    state = make_state(4, generation="r2", base="r1")
    first = store.save(state, loaded)
    second = store.save(state, loaded)  # stale ETag, same generation: no error
    assert first == second
    current = store.load(run_id="r3")
    assert current.generation == "r2" and current.state.equals(state)
    assert store.generations() == ["r1", "r2"]


def test_a_resumed_run_loads_the_generation_it_started_from(store):
    save_next(store, "r1", n=3)
    save_next(store, "r2", n=5)  # r2 saved, then crashed before finishing
    resumed = store.load(run_id="r2")
    assert resumed.resumed
    assert resumed.generation == "r1"
    assert len(resumed.state) == 3
    # It plans again from r1 and saves r2 once more: idempotent, and r2 is current.
    store.save(make_state(5, generation="r2", base="r1"), resumed)
    assert store.load(run_id="r3").generation == "r2"


def test_a_resumed_first_run_starts_from_nothing(store):
    save_next(store, "r1")
    resumed = store.load(run_id="r1")
    assert resumed.resumed and resumed.generation is None and resumed.state is None
    store.save(make_state(3, generation="r1"), resumed)


def test_load_a_named_generation(store):
    save_next(store, "r1", n=2)
    save_next(store, "r2", n=4)
    assert len(store.load(generation="r1").state) == 2
    with pytest.raises(SyncStateError, match="missing"):
        store.load(generation="nope")


def test_old_generations_are_pruned(store):
    for i in range(1, 6):
        save_next(store, f"r{i}")
    assert store.generations() == ["r3", "r4", "r5"]
    assert store.load(run_id="r5").generation == "r4"  # the base of the last run is kept


def test_pruning_spares_a_young_generation_it_does_not_know(store, container):
    # Another writer stores its generation blob while this run saves; it may be about
    # to swap the pointer (and fail on the ETag), so this save must not delete it.
    class Racing(SyncStateStore):
        def _swap_pointer(self, pointer, etag):
            other = make_state(3, generation="r-other", base="r1")
            container.upload_blob("sync/vip/Y6nRLr/r-other.parquet", other.to_parquet())
            return super()._swap_pointer(pointer, etag)

    racing = Racing(container, "vip", "Y6nRLr", keep=2)
    for i in range(1, 4):
        save_next(racing if i == 3 else store, f"r{i}")
    assert set(store.generations()) == {"r2", "r-other", "r3"}  # r1 fell out of history


def test_the_loser_of_a_race_removes_its_generation_blob(store):
    save_next(store, "r1")
    a, b = store.load(run_id="ra"), store.load(run_id="rb")
    store.save(make_state(generation="ra", base="r1"), a)
    with pytest.raises(ConcurrentUpdateError):
        store.save(make_state(generation="rb", base="r1"), b)
    assert store.generations() == ["r1", "ra"]


def test_a_state_that_does_not_match_the_store_is_refused(store):
    loaded = store.load()
    wrong = with_meta(make_state(), dataclasses.replace(meta(), list_id="Other1"))
    with pytest.raises(ValueError, match="given to"):
        store.save(wrong, loaded)
    with pytest.raises(ValueError, match="planned from"):
        store.save(make_state(generation="r1", base="r0"), loaded)


def test_a_generation_blob_of_another_export_is_refused(store, container):
    save_next(store, "r1")
    foreign = SyncStateStore(container, "other", "Y6nRLr")
    data = container.get_blob_client("sync/vip/Y6nRLr/r1.parquet").download_blob().readall()
    container.upload_blob("sync/other/Y6nRLr/current.json", orjson.dumps(
        {"format_version": 1, "generation": "r1", "history": ["r1"]}))  # fmt: skip
    container.upload_blob("sync/other/Y6nRLr/r1.parquet", data)
    with pytest.raises(SyncStateError, match="not r1 of other/Y6nRLr"):
        foreign.load()


def test_a_damaged_pointer_is_reported(store, container):
    container.upload_blob("sync/vip/Y6nRLr/current.json", b"{not json")
    with pytest.raises(SyncStateError, match=r"current\.json: not a sync state pointer"):
        store.load()


def test_names_that_cannot_be_blob_names_are_refused(container):
    with pytest.raises(ValueError, match="blob name"):
        SyncStateStore(container, "vip", "../x")
    with pytest.raises(ValueError, match="keep at least 2"):
        SyncStateStore(container, "vip", "L1", keep=1)
    with pytest.raises(ValueError, match="blob name"):
        SyncStateStore(container, "vip", "L1").blob_name("a/b")
