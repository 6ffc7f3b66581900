"""Export names and run ids, checked whole in one place (API, queue worker, CLI, stores)."""

from __future__ import annotations

import pytest

from shared.errors import InvalidNameError
from shared.export import new_run_id
from shared.names import check_export_name, check_run_id, is_export_name, is_run_id
from shared.runs import RunRecords, run_prefix
from shared.worker import parse_run_message


@pytest.mark.parametrize("name", ["vip", "a", "0-x", "a" * 63, "vip-customers-2"])
def test_valid_names(name):
    assert is_export_name(name) and check_export_name(name) == name


@pytest.mark.parametrize(
    "name", ["vip\n", "vip\r\n", "\nvip", "-vip", "Vip", "a" * 64, "", "../x", "a/b", 7, None]
)
def test_invalid_names(name):
    assert not is_export_name(name)
    with pytest.raises(InvalidNameError) as caught:
        check_export_name(name, field="export")
    assert caught.value.field == "export"


def test_run_ids_are_what_new_run_id_makes_and_nothing_more():
    assert is_run_id(new_run_id())
    run_id = "20261201T182350Z-abc123"
    assert check_run_id(run_id) == run_id
    for bad in (run_id + "\n", run_id.upper(), "../../x", run_id[:-1], f"{run_id}/..", 5):
        assert not is_run_id(bad)


@pytest.mark.parametrize(
    ("export", "run_id"), [("vip\n", "20260101T000000Z-abcdef"), ("vip", "../../../x")]
)
def test_blob_paths_are_never_built_from_a_bad_name_or_run_id(export, run_id):
    with pytest.raises(InvalidNameError):
        run_prefix(export, run_id)
    with pytest.raises(InvalidNameError):
        RunRecords.status_name("../status")


@pytest.mark.parametrize(
    "body",
    [
        b'{"export": "vip\\n", "run_id": "20260101T000000Z-abcdef"}',
        b'{"export": "vip", "run_id": "20260101T000000Z-abcdef\\n"}',
    ],
)
def test_the_queue_worker_refuses_a_trailing_newline(body):
    with pytest.raises(ValueError):
        parse_run_message(body)
