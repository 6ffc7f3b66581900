"""The mass-removal guard: each rule alone, its edges, the override and the message."""

from __future__ import annotations

import pytest

from shared.guard import check_removals


def verdict(would_remove, *, on_list=1000, snapshot=1000, previous=1000, limit=10, allow=False):
    return check_removals(
        would_remove,
        on_list=on_list,
        snapshot_people=snapshot,
        previous_people=previous,
        max_removal_percent=limit,
        allow_mass_removal=allow,
    )


def test_removals_up_to_the_limit_pass():
    result = verdict(100, snapshot=950)  # exactly 10 % of 1,000; snapshot at 95 %
    assert not result.held
    assert result.reasons == ()
    assert result.message is None


def test_removals_above_the_limit_are_held():
    result = verdict(101, snapshot=950)
    assert result.held
    assert len(result.reasons) == 1
    assert "10.1 %" in result.reasons[0]
    assert "max_removal_percent (10 %)" in result.reasons[0]


def test_a_shrunken_snapshot_is_held_even_with_few_removals():
    # 50 removals of 10,000 on the list is 0.5 %, but the snapshot lost 11 %.
    result = verdict(50, on_list=10_000, snapshot=890, previous=1000)
    assert result.held
    assert result.reasons == (
        "the snapshot has 890 people, fewer than 90 % of the previous snapshot's 1,000",
    )
    assert not verdict(50, on_list=10_000, snapshot=900, previous=1000).held


def test_an_empty_snapshot_is_always_held():
    result = verdict(5, on_list=5, snapshot=0, previous=None, limit=100)
    assert result.held
    assert result.reasons == ("the snapshot is empty",)


def test_nothing_to_remove_is_never_held():
    assert not verdict(0, snapshot=0, previous=1000).held
    assert not verdict(0, on_list=0, snapshot=10, previous=None, limit=0).held


def test_limit_zero_holds_any_removal_and_any_shrink():
    assert verdict(1, on_list=1_000_000, snapshot=1_000_000, previous=1_000_000, limit=0).held
    assert verdict(1, on_list=1_000_000, snapshot=999_999, previous=1_000_000, limit=0).held


def test_limit_hundred_allows_removing_everyone_but_not_an_empty_snapshot():
    assert not verdict(1000, snapshot=1, limit=100).held
    assert verdict(1000, snapshot=0, limit=100).held


def test_first_run_has_no_previous_snapshot_to_compare():
    assert not verdict(1, on_list=100, snapshot=1, previous=None).held


def test_fractional_limits():
    assert verdict(6, snapshot=1000, limit=0.5).held
    assert not verdict(5, snapshot=1000, limit=0.5).held


def test_override_removes_but_records_why_it_would_have_held():
    result = verdict(600, snapshot=400, allow=True)
    assert not result.held
    assert result.overridden
    assert len(result.reasons) == 2
    assert result.message is None
    assert result.to_dict()["overridden"] is True


def test_held_message_says_how_many_of_how_many_why_and_how_to_allow():
    result = verdict(3001, on_list=60_000, snapshot=30_000, previous=60_000)
    message = result.message
    assert "would have removed 3,001 of the 60,000 people" in message
    assert "5.0 % of them" not in message  # under the limit: not a reason here
    assert "fewer than 90 % of the previous snapshot's 60,000" in message
    assert "--allow-mass-removal" in message
    assert "?allow_mass_removal=true" in message
    assert "Nobody was removed" in message
    assert result.to_dict()["message"] == message


def test_limit_outside_0_to_100_is_a_programming_error():
    with pytest.raises(ValueError, match="0 to 100"):
        verdict(1, limit=101)
