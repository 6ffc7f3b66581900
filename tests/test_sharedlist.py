"""Which leavers another export on the same list still syncs (Azurite, real state blobs)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.definitions import parse_definition
from shared.sharedlist import kept_for_others
from shared.state import DefinitionStore
from shared.statestore import SyncStateStore
from shared.syncstate import CONFIRMED, SyncState, email_keys
from tests.test_definitions import MINIMAL
from tests.test_syncstate import meta

LIST = "Y6nRLr"


def save_state(container, export: str, list_id: str, emails: list[str]) -> None:
    store = SyncStateStore(container, export, list_id)
    loaded = store.load()
    state = SyncState(
        meta("g1", export=export, list_id=list_id, snapshot_people=len(emails)),
        keys=np.sort(email_keys(emails)),
        emails=sorted(emails, key=lambda e: int(email_keys([e])[0])),
        attr_hashes=np.zeros(len(emails), dtype=np.uint64),
        first_added_ms=np.zeros(len(emails), dtype=np.int64),
        flags=np.full(len(emails), CONFIRMED, dtype=np.uint8),
    )
    store.save(state, loaded)


def define(container, name: str, list_id: str = LIST) -> None:
    doc = {**MINIMAL, "name": name, "destination": {"list_id": list_id}}
    DefinitionStore(container).put(parse_definition(doc))


@pytest.fixture
def leavers():
    return ["a@example.com", "b@example.com", "c@example.com"]


def test_people_another_export_on_the_list_still_has_are_kept(container, leavers):
    define(container, "vip")
    define(container, "news")
    save_state(container, "news", LIST, ["b@example.com", "z@example.com"])
    save_state(container, "vip", LIST, leavers)  # this export's own state protects nobody
    keep = kept_for_others(SyncStateStore(container, "vip", LIST), email_keys(leavers))
    assert keep.tolist() == [False, True, False]


def test_a_deleted_export_or_one_on_another_list_protects_nobody(container, leavers):
    define(container, "vip")
    save_state(container, "gone", LIST, leavers)  # its definition was deleted
    define(container, "moved", list_id="Other1")  # its state for LIST is from before
    save_state(container, "moved", LIST, leavers)
    save_state(container, "elsewhere", "Other1", leavers)  # another list altogether
    define(container, "elsewhere", list_id="Other1")
    keep = kept_for_others(SyncStateStore(container, "vip", LIST), email_keys(leavers))
    assert not keep.any()


def test_an_export_whose_definition_cannot_be_read_keeps_its_people(container, leavers, caplog):
    define(container, "vip")
    container.upload_blob("definitions/broken.json", b'{"name": "broken", ')
    save_state(container, "broken", LIST, ["c@example.com"])
    keep = kept_for_others(SyncStateStore(container, "vip", LIST), email_keys(leavers))
    assert keep.tolist() == [False, False, True]
    assert "cannot be read" in caplog.text and "@" not in caplog.text
