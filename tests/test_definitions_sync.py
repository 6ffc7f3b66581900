"""The definition's ``sync`` block: defaults, validation naming the field, round trip."""

from __future__ import annotations

import json

import pytest

from shared.definitions import SyncSpec, parse_definition
from shared.errors import DefinitionError
from tests.test_definitions import MINIMAL, with_change


def test_sync_defaults_to_mirror_with_a_ten_percent_guard():
    definition = parse_definition(MINIMAL)
    assert definition.sync == SyncSpec(mode="mirror", max_removal_percent=10)
    assert definition.to_dict()["sync"] == {"mode": "mirror", "max_removal_percent": 10}


@pytest.mark.parametrize(
    "sync",
    [
        {"mode": "add"},
        {"max_removal_percent": 0},
        {"max_removal_percent": 100},
        {"mode": "mirror", "max_removal_percent": 2.5},
        {},
    ],
)
def test_sync_block_round_trips(sync):
    definition = parse_definition(with_change("sync", sync))
    assert definition.sync.mode == sync.get("mode", "mirror")
    assert definition.sync.max_removal_percent == sync.get("max_removal_percent", 10)
    assert parse_definition(json.dumps(definition.to_dict())) == definition


@pytest.mark.parametrize(
    ("sync", "field", "words"),
    [
        ({"mode": "sync"}, "sync.mode", "must be one of: mirror, add"),
        ({"mode": None}, "sync.mode", "must be one of: mirror, add"),
        ({"max_removal_percent": 101}, "sync.max_removal_percent", "from 0 to 100"),
        ({"max_removal_percent": -0.5}, "sync.max_removal_percent", "from 0 to 100"),
        ({"max_removal_percent": "10"}, "sync.max_removal_percent", "must be a number"),
        ({"max_removal_percent": True}, "sync.max_removal_percent", "must be a number"),
        ({"mod": "add"}, "sync.mod", "did you mean 'mode'?"),
        ("mirror", "sync", "must be an object"),
    ],
)
def test_invalid_sync_block_names_the_field(sync, field, words):
    with pytest.raises(DefinitionError) as caught:
        parse_definition(with_change("sync", sync))
    assert caught.value.field == field
    assert words in str(caught.value)
