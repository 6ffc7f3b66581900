"""The fingerprint: stable, order-free, and sensitive to exactly what a run reads and where
it writes; and the comparison of two listings of one snapshot folder."""

from __future__ import annotations

import copy

import pytest

from shared.definitions import parse_definition
from shared.fingerprint import (
    definition_digest,
    fingerprint,
    list_snapshot_folder,
    snapshot_changes,
    what_changed,
)
from tests.exports import definition_doc

FILES = (("f/S/2026/11/01/0900/S_1.csv", 10, '"0x1"'), ("f/S/2026/11/01/0900/S_2.csv", 0, '"0x2"'))
DOC = definition_doc("ci-exports")


def fp(doc=DOC, files=FILES) -> str:
    return fingerprint(parse_definition(doc), files)


def changed(path: str, value) -> dict:
    doc = copy.deepcopy(DOC)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    node[last] = value
    return doc


def test_the_same_input_gives_the_same_fingerprint_in_any_order():
    assert fp() == fp(files=tuple(reversed(FILES)))
    assert fp().startswith("v1:") and len(fp().split(":")) == 3


@pytest.mark.parametrize(
    "files",
    [
        FILES[:1],  # a file removed
        (*FILES, ("f/S/2026/11/01/0900/S_3.csv", 5, '"0x3"')),  # added
        (FILES[0], (FILES[1][0], 7, '"0x9"')),  # the 0-byte file overwritten
        ((FILES[0][0], 10, '"0x8"'), FILES[1]),  # same size, new ETag
        tuple((n.replace("f/", "e/"), s, t) for n, s, t in FILES),  # another folder
    ],
)
def test_any_change_of_the_files_changes_it(files):
    assert fp(files=files) != fp()
    assert what_changed(fp(), fp(files=files)) == "snapshot changed"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("source.container", "other-exports"),
        ("source.folder", "CustomerInsights_test/Other"),
        ("source.segment", "Others"),
        ("destination.list_id", "Xy12ab"),
        ("mapping.first_name", "CustomerId"),
        ("options.phone_default_region", "DE"),
        ("connection.api_key_secret", "other-account-key"),
    ],
)
def test_what_a_run_reads_or_where_it_writes_changes_it(path, value):
    assert fp(changed(path, value)) != fp()
    assert what_changed(fp(), fp(changed(path, value))) == "definition changed"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("name", "renamed"),
        ("enabled", False),
        ("connection.display_name", "Another label"),
        ("connection.access", "contributors"),
        ("connection.name", "renamed-connection"),
    ],
)
def test_labels_do_not_change_it(path, value):
    assert definition_digest(parse_definition(changed(path, value))) == definition_digest(
        parse_definition(DOC)
    )


def test_what_changed_in_words():
    assert what_changed(None, fp()) == "no successful run recorded a fingerprint yet"
    assert what_changed(fp(), fp()) == "unchanged"
    both = fp(changed("destination.list_id", "Xy12ab"), FILES[:1])
    assert what_changed(fp(), both) == "definition and snapshot changed"


def test_snapshot_changes_names_each_file_once():
    prefix = "f/S/2026/11/01/0900/"
    now = ((FILES[0][0], 10, '"0x7"'), (prefix + "S_3.csv", 1, '"0x3"'))
    change = snapshot_changes(FILES, now, prefix)
    assert change.as_dict() == {
        "path": prefix,
        "added": ["S_3.csv"],
        "rewritten": ["S_1.csv"],
        "removed": ["S_2.csv"],
    }
    assert change.describe() == "1 added (S_3.csv); 1 rewritten (S_1.csv); 1 removed (S_2.csv)"
    assert snapshot_changes(FILES, tuple(reversed(FILES)), prefix) is None


def test_listing_one_folder_keeps_only_its_own_data_files(container):
    prefix = "f/S/2026/11/01/0900/"
    for name in ("S_1.csv", "S_2.CSV.GZ", "notes.txt", "sub/S_9.csv"):
        container.upload_blob(prefix + name, b"x")
    container.upload_blob("f/S/2026/11/01/09001/S_1.csv", b"x")  # a sibling prefix
    names = [n for n, _, _ in list_snapshot_folder(container, prefix)]
    assert names == [prefix + "S_1.csv", prefix + "S_2.CSV.GZ"]
