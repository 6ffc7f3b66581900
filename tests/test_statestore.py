"""The sync state's store against Azurite: generations, the ETag-guarded pointer,
idempotent re-saves, pruning, and loading the base of a resumed run."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from shared.statestore import LoadedState, SyncStateStore
from shared.syncstate import ConcurrentUpdateError, SyncStateError
from tests.test_syncstate import make_state, meta, with_meta


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
