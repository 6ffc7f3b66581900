"""The planner: every class of person, every transition of the sync state, and a
multi-run sequence against a simulated list (tests/syncsim.py)."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import polars as pl
import pytest

from shared.plan import KeyIndex, Leavers, Planner
from shared.syncstate import CONFIRMED, RETRY, StateMeta, SyncState, SyncTarget, email_key
from tests.syncsim import TARGET, Day, KlaviyoList, attr_hash, block_arrays, email, on_list, run_day

PEOPLE = {f"p{i}": 0 for i in range(20)}


def row(day: Day, name: str) -> dict[str, int] | None:
    """The next state's row of ``name`` (None if it is not in it)."""
    state = day.state
    at = np.searchsorted(state.keys, email_key(email(name)))
    if at >= len(state) or state.keys[at] != email_key(email(name)):
        return None
    assert state.emails[int(at)] == email(name)
    return {
        "hash": int(state.attr_hashes[at]),
        "first": int(state.first_added_ms[at]),
        "flags": int(state.flags[at]),
    }


@pytest.fixture
def klaviyo() -> KlaviyoList:
    return KlaviyoList()


@pytest.fixture
def day1(klaviyo) -> Day:
    return run_day(None, PEOPLE, klaviyo, generation="run-1")


# -- first run ------------------------------------------------------------------------


def test_first_run_sends_everyone_and_records_each_jobs_time(day1, klaviyo):
    assert day1.sent == set(PEOPLE)
    assert day1.members == {
        "added": 20,
        "updated": 0,
        "unchanged": 0,
        "removed": 0,
        "kept_not_owned": 0,
        "held": 0,
        "retried": 0,
        "failed": 0,
    }
    assert day1.planner.summary()["joiners"] == 20
    assert len(day1.state) == 20
    assert day1.state.on_list == 20
    firsts = {row(day1, n)["first"] for n in PEOPLE}
    assert len(firsts) == 5  # five jobs of four, each with its own created_at
    for name in PEOPLE:
        r = row(day1, name)
        assert r["hash"] == attr_hash(name, 0)
        assert r["flags"] == CONFIRMED
        assert r["first"] <= klaviyo.members[email(name)]  # joined after the job began
    meta = day1.state.meta
    assert (meta.generation, meta.base_generation, meta.snapshot_people) == ("run-1", None, 20)
    assert meta.mapping_fingerprint == TARGET.mapping_fingerprint


def test_rerun_of_the_same_snapshot_sends_nobody(day1, klaviyo):
    day2 = run_day(day1.state, PEOPLE, klaviyo, generation="run-2")
    assert day2.sent == set()
    assert day2.members["unchanged"] == 20
    assert day2.planner.rows_unchanged == 20
    assert day2.members["added"] == day2.members["updated"] == day2.members["removed"] == 0
    assert np.array_equal(day2.state.keys, day1.state.keys)
    assert np.array_equal(day2.state.first_added_ms, day1.state.first_added_ms)
    assert day2.state.meta.base_generation == "run-1"


# -- churn ----------------------------------------------------------------------------


def test_churn_sends_joiners_and_changed_and_removes_leavers(day1, klaviyo):
    snapshot = {n: v for n, v in PEOPLE.items() if n not in {"p0", "p1"}}
    snapshot |= {"p2": 1, "p3": 1, "new1": 0, "new2": 0}
    day2 = run_day(day1.state, snapshot, klaviyo, generation="run-2")
    assert day2.sent == {"p2", "p3", "new1", "new2"}
    summary = day2.planner.summary()
    assert (summary["joiners"], summary["changed"], summary["unchanged"]) == (2, 2, 16)
    assert summary["leavers"] == 2
    assert day2.members["added"] == 2
    assert day2.members["updated"] == 2
    assert day2.members["unchanged"] == 16
    assert day2.members["removed"] == 2
    assert on_list(klaviyo) == set(snapshot)
    assert row(day2, "p0") is None and row(day2, "p1") is None
    assert row(day2, "p2")["hash"] == attr_hash("p2", 1)
    assert row(day2, "p2")["first"] == row(day1, "p2")["first"]  # first add is kept
    assert row(day2, "new1")["first"] > row(day1, "p19")["first"]


def test_the_mask_is_aligned_with_the_block(day1):
    planner = Planner(day1.state, target=TARGET)
    keys, hashes, emails = block_arrays({"p5": 0, "fresh": 0, "p6": 3, "p7": 0})
    mask = planner.classify(keys, hashes, emails)
    assert mask.dtype == np.bool_
    assert mask.tolist() == [False, True, True, False]


def test_blocks_of_any_size_give_the_same_plan(day1, klaviyo):
    snapshot = {n: (i % 3 == 0) * 1 for i, n in enumerate(PEOPLE)} | {"x": 0, "y": 0}
    sizes = [1, 3, 7, 100]
    days = [
        run_day(
            day1.state,
            snapshot,
            KlaviyoList(dict(klaviyo.members)),
            generation="g",
            block_size=size,
        )
        for size in sizes
    ]
    assert all(d.sent == days[0].sent for d in days)
    assert all(d.planner.summary() == days[0].planner.summary() for d in days)
    assert all(np.array_equal(d.state.attr_hashes, days[0].state.attr_hashes) for d in days)


def test_leaver_who_was_on_the_list_before_the_export_is_kept(klaviyo):
    klaviyo.sign_up("form1")
    day1 = run_day(None, {"form1": 0, "a": 0}, klaviyo, generation="run-1")
    day2 = run_day(day1.state, {"b": 0}, klaviyo, generation="run-2", limit=100)
    assert day2.members["kept_not_owned"] == 1
    assert day2.members["removed"] == 1
    assert on_list(klaviyo) == {"form1", "b"}
    assert row(day2, "form1") is None  # no longer this export's to remove


def test_leaver_already_gone_from_the_list_counts_as_removed(day1, klaviyo):
    del klaviyo.members[email("p0")]  # someone removed them by hand
    day2 = run_day(day1.state, {n: 0 for n in list(PEOPLE)[1:]}, klaviyo, generation="run-2")
    assert day2.members["removed"] == 1
    assert row(day2, "p0") is None


def leaving(state, first_kept: int, limit: float) -> tuple[Planner, Leavers]:
    """A planner whose snapshot lacks the first ``first_kept`` people, and its leavers."""
    planner = Planner(state, target=TARGET)
    planner.classify(*block_arrays({n: 0 for n in list(PEOPLE)[first_kept:]}))
    planner.check_guard(max_removal_percent=limit)
    return planner, planner.leavers()


def test_leavers_are_aligned_for_the_removal_stage(day1):
    _, leavers = leaving(day1.state, 3, limit=15)
    assert len(leavers) == 3
    assert sorted(leavers.emails) == [email("p0"), email("p1"), email("p2")]
    for key, address, first in zip(
        leavers.keys, leavers.emails, leavers.first_added_ms, strict=True
    ):
        assert key == email_key(address)
        assert first == row(day1, address.split("@")[0])["first"]
    assert leavers.keys.dtype == np.uint64
    assert leavers.first_added_ms.dtype == np.int64


def test_a_removal_that_did_not_happen_keeps_the_leaver(day1):
    planner, leavers = leaving(day1.state, 2, limit=10)
    # The removal stage got through one of the two before the run stopped.
    planner.record_removals(removed=leavers.keys[:1], kept_not_owned=[], gone=[])
    state = planner.next_state("run-2")
    assert len(state) == 19
    assert leavers.keys[1] in state.keys
    assert planner.members()["removed"] == 1


# -- the guard --------------------------------------------------------------------------


def test_partial_snapshot_is_held_and_keeps_the_leavers(day1, klaviyo):
    partial = {n: 0 for n in list(PEOPLE)[:10]} | {"new1": 0}
    day2 = run_day(day1.state, partial, klaviyo, generation="run-2")
    assert day2.verdict.held
    assert day2.members["held"] == 10
    assert day2.members["removed"] == 0
    assert day2.members["added"] == 1  # joiners still go
    assert on_list(klaviyo) == set(PEOPLE) | {"new1"}
    assert len(day2.state) == 21
    assert row(day2, "p15") == row(day1, "p15")
    # The held snapshot is not the guard's reference: the previous one still is.
    assert day2.state.meta.snapshot_people == 20
    with pytest.raises(RuntimeError, match="held"):
        day2.planner.leavers()
    with pytest.raises(RuntimeError, match="guard"):
        day2.planner.record_removals(removed=[], kept_not_owned=[], gone=[])


def test_override_removes_them(day1, klaviyo):
    partial = {n: 0 for n in list(PEOPLE)[:10]}
    day2 = run_day(day1.state, partial, klaviyo, generation="run-2", allow=True)
    assert not day2.verdict.held and day2.verdict.overridden
    assert day2.members["removed"] == 10
    assert on_list(klaviyo) == set(partial)
    assert day2.state.meta.snapshot_people == 10


def test_empty_snapshot_is_held(day1, klaviyo):
    day2 = run_day(day1.state, {}, klaviyo, generation="run-2", limit=100)
    assert day2.verdict.held
    assert day2.verdict.reasons == ("the snapshot is empty",)
    assert len(day2.state) == 20


def test_leavers_need_the_guard_first(day1):
    planner = Planner(day1.state, target=TARGET)
    with pytest.raises(RuntimeError, match="check_guard"):
        planner.leavers()
    with pytest.raises(RuntimeError, match="guard"):
        planner.record_removals(removed=[], kept_not_owned=[], gone=[])


# -- failures and retries ---------------------------------------------------------------


def test_failed_joiner_is_recorded_unconfirmed_and_retried(day1, klaviyo):
    day2 = run_day(day1.state, PEOPLE | {"new": 0}, klaviyo, generation="run-2", fail=["new"])
    assert day2.members["failed"] == 1 and day2.members["added"] == 0
    assert row(day2, "new") == {"hash": attr_hash("new", 0), "first": 0, "flags": RETRY}
    assert day2.state.on_list == 20
    day3 = run_day(day2.state, PEOPLE | {"new": 0}, klaviyo, generation="run-3")
    assert day3.sent == {"new"}
    assert day3.members["retried"] == 1
    assert day3.members["added"] == 1
    assert row(day3, "new")["flags"] == CONFIRMED
    assert row(day3, "new")["first"] > 0


def test_failed_update_keeps_the_old_hash_and_is_retried(day1, klaviyo):
    changed = PEOPLE | {"p4": 1}
    day2 = run_day(day1.state, changed, klaviyo, generation="run-2", fail=["p4"])
    assert day2.members["failed"] == 1 and day2.members["updated"] == 0
    assert row(day2, "p4") == {**row(day1, "p4"), "flags": CONFIRMED | RETRY}
    day3 = run_day(day2.state, changed, klaviyo, generation="run-3")
    assert day3.sent == {"p4"}
    assert day3.members["retried"] == 1 and day3.members["updated"] == 1
    assert row(day3, "p4") == {**row(day1, "p4"), "hash": attr_hash("p4", 1)}


def test_sends_never_confirmed_count_as_failed(day1, klaviyo):
    day2 = run_day(
        day1.state, PEOPLE | {"p1": 1, "new": 0}, klaviyo, generation="run-2", lost_jobs=True
    )
    assert day2.members["failed"] == 2
    assert row(day2, "new")["flags"] == RETRY
    assert row(day2, "p1")["flags"] == CONFIRMED | RETRY
    assert row(day2, "p1")["hash"] == attr_hash("p1", 0)


def test_failed_joiner_who_leaves_is_dropped_without_removal(day1, klaviyo):
    day2 = run_day(day1.state, PEOPLE | {"new": 0}, klaviyo, generation="run-2", fail=["new"])
    day3 = run_day(day2.state, PEOPLE, klaviyo, generation="run-3")
    assert day3.planner.summary()["never_added_leavers"] == 1
    assert day3.planner.summary()["leavers"] == 0
    assert day3.members["removed"] == 0
    assert row(day3, "new") is None


def test_a_failed_retry_stays_a_retry(day1, klaviyo):
    day2 = run_day(day1.state, PEOPLE | {"new": 0}, klaviyo, generation="run-2", fail=["new"])
    day3 = run_day(day2.state, PEOPLE | {"new": 0}, klaviyo, generation="run-3", fail=["new"])
    assert row(day3, "new") == {"hash": attr_hash("new", 0), "first": 0, "flags": RETRY}


def test_earliest_confirming_job_is_the_first_add(day1):
    planner = Planner(day1.state, target=TARGET)
    keys, hashes, emails = block_arrays({"new": 0})
    planner.classify(keys, hashes, emails)
    planner.confirm(keys, 5000)
    planner.confirm(keys, 3000)  # the same key confirmed twice, out of order
    planner.confirm(np.array([email_key("someone-not-sent")], np.uint64), 1000)
    state = planner.next_state("run-2")
    at = np.searchsorted(state.keys, keys[0])
    assert state.first_added_ms[at] == 3000
    assert len(state) == 21


# -- modes, full runs, mapping changes ----------------------------------------------------


def test_add_mode_never_removes_and_keeps_leavers(day1, klaviyo):
    day2 = run_day(
        day1.state, {"p0": 1, "new": 0}, klaviyo, generation="run-2", mode="add", limit=0
    )
    assert not day2.verdict.held
    assert day2.verdict.would_remove == 0
    assert day2.members["removed"] == day2.members["held"] == 0
    assert day2.members["updated"] == 1 and day2.members["added"] == 1
    assert on_list(klaviyo) == set(PEOPLE) | {"new"}
    assert len(day2.state) == 21
    assert row(day2, "p10") == row(day1, "p10")
    assert len(day2.planner.leavers()) == 0
    # Whatever a caller records, add mode drops nobody from the state.
    day2.planner.record_removals(removed=day1.state.keys, kept_not_owned=[], gone=[])
    assert len(day2.planner.next_state("run-2b")) == 21


def test_switching_back_to_mirror_removes_add_mode_leavers(day1, klaviyo):
    day2 = run_day(
        day1.state, {n: 0 for n in list(PEOPLE)[:19]}, klaviyo, generation="g2", mode="add"
    )
    day3 = run_day(day2.state, {n: 0 for n in list(PEOPLE)[:19]}, klaviyo, generation="g3")
    assert day3.members["removed"] == 1
    assert "p19" not in on_list(klaviyo)


def test_full_run_resends_unchanged_people_once(day1, klaviyo):
    day2 = run_day(day1.state, PEOPLE | {"p3": 1}, klaviyo, generation="run-2", full=True)
    assert day2.planner.full_reason == "requested"
    assert day2.sent == set(PEOPLE)
    assert day2.members["unchanged"] == 19
    assert day2.members["updated"] == 1
    assert day2.planner.rows_unchanged == 0
    assert row(day2, "p5") == row(day1, "p5")  # resent: first add and hash as they were
    day3 = run_day(day2.state, PEOPLE | {"p3": 1}, klaviyo, generation="run-3")
    assert day3.sent == set()


def test_mapping_change_makes_the_next_run_full_by_itself(day1, klaviyo):
    remapped = SyncTarget(TARGET.export, TARGET.list_id, "sha256:mapping-2")
    day2 = run_day(day1.state, PEOPLE, klaviyo, generation="run-2", target=remapped)
    assert day2.planner.full_reason == "mapping changed"
    assert day2.sent == set(PEOPLE)
    assert day2.state.meta.mapping_fingerprint == "sha256:mapping-2"
    day3 = run_day(day2.state, PEOPLE, klaviyo, generation="run-3", target=remapped)
    assert day3.planner.full_reason is None and day3.sent == set()


def test_a_state_of_another_export_or_list_is_refused(day1):
    with pytest.raises(ValueError, match="not ours"):
        Planner(day1.state, target=SyncTarget("vip", "OtherList", "x"))
    with pytest.raises(ValueError, match="mode"):
        Planner(None, target=TARGET, mode="sync")  # type: ignore[arg-type]


def test_same_base_and_snapshot_plan_the_same_sends(day1, klaviyo):
    # What a resumed run relies on: from the same base generation it packs the same jobs.
    snapshot = PEOPLE | {"p1": 2, "z": 0}
    masks = []
    for _ in range(2):
        planner = Planner(day1.state, target=TARGET)
        masks.append(planner.classify(*block_arrays(snapshot)))
    assert np.array_equal(*masks)


# -- inputs -------------------------------------------------------------------------------


def test_emails_as_a_list_or_a_series(day1):
    snapshot = {f"n{i}": 0 for i in range(50)} | {"p0": 0}
    keys, hashes, emails = block_arrays(snapshot)
    states = []
    for given in (emails, pl.Series(emails), emails[:]):
        planner = Planner(day1.state, target=TARGET)
        planner.classify(keys, hashes, given)
        planner.confirm(keys, 7)
        states.append(planner.next_state("g"))
    assert states[0].emails.equals(states[1].emails)
    # A few joiners in a big block take the other path of picking their e-mails.
    planner = Planner(states[0], target=TARGET)
    keys2, hashes2, emails2 = block_arrays(snapshot | {"late": 0})
    planner.classify(keys2, hashes2, emails2)
    planner.confirm(keys2, 8)
    assert email("late") in planner.next_state("g2").emails.to_list()


def test_block_columns_must_align(day1):
    planner = Planner(day1.state, target=TARGET)
    keys, hashes, emails = block_arrays({"a": 0, "b": 0})
    with pytest.raises(ValueError, match="differ in length"):
        planner.classify(keys, hashes[:1], emails)


def test_a_key_sent_twice_keeps_one_row_its_first_send():
    planner = Planner(None, target=TARGET)
    keys, hashes, emails = block_arrays({"a": 0, "b": 0, "c": 0})
    planner.classify(keys, hashes, emails)
    again, again_hashes, again_emails = block_arrays({"c": 1, "a": 1})
    planner.classify(again, again_hashes, again_emails)
    planner.confirm(keys, 1)
    state = planner.next_state("g")
    assert len(state) == 3 and sorted(state.emails.to_list()) == sorted(emails)
    by_email = dict(zip(state.emails.to_list(), state.attr_hashes.tolist(), strict=True))
    assert by_email == {e: int(h) for e, h in zip(emails, hashes, strict=True)}


# -- the key index ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 1000, 65_537])
@pytest.mark.parametrize("count_slice", [1 << 20, 7])
def test_key_index_finds_what_searchsorted_finds(n, count_slice, monkeypatch):
    # The directory is counted a slice of keys at a time: slices of 7 keys put many
    # slice boundaries inside buckets.
    monkeypatch.setattr("shared.keyindex._COUNT_SLICE", count_slice)
    rng = np.random.default_rng(n)
    keys = np.unique(rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True))
    if n >= 3:
        keys = np.unique(np.concatenate([keys, np.array([0, 1, 2**64 - 1], np.uint64)]))
    index = KeyIndex(keys)
    probes = np.concatenate(
        [
            keys,
            rng.integers(0, 2**64 - 1, 500, dtype=np.uint64),
            np.array([0, 2**64 - 1], np.uint64),
        ]
    )
    row, found = index.find(probes)
    assert np.array_equal(found, np.isin(probes, keys))
    assert np.array_equal(row[found], np.searchsorted(keys, probes[found]))
    # Where not found, the row is the insertion point (a lower bound).
    assert np.array_equal(row[~found], np.searchsorted(keys, probes[~found]))


# -- the multi-day scenario ---------------------------------------------------------


def test_multi_day_sequence(klaviyo):
    """Day 1 into a list with form members (some also in the segment), day 2 churn,
    day 3 a partial export (held), day 4 day 2's content again, day 5 a failure and its
    retry, day 6 a mapping change. After each day the list is the segment plus the form
    members, and the counts add up."""
    klaviyo.sign_up("form1", "form2", "both1", "both2")
    forms = {"form1", "form2", "both1", "both2"}
    seg1 = {f"s{i}": 0 for i in range(40)} | {"both1": 0, "both2": 0}

    def check(day: Day, snapshot: dict[str, int], *, held: bool = False) -> None:
        m = day.members
        assert m["added"] + m["updated"] + m["unchanged"] + m["failed"] == len(snapshot)
        assert day.planner.rows_unchanged + len(day.sent) == len(snapshot)
        if not held:
            assert on_list(klaviyo) == set(snapshot) | forms

    d1 = run_day(None, seg1, klaviyo, generation="d1")
    check(d1, seg1)
    assert d1.members["added"] == 42

    seg2 = {n: v for n, v in seg1.items() if n not in {"s0", "s1", "both1"}}
    seg2 |= {"s5": 1, "s6": 1, "j1": 0, "j2": 0, "form2": 0}
    d2 = run_day(d1.state, seg2, klaviyo, generation="d2")
    check(d2, seg2)
    assert d2.sent == {"s5", "s6", "j1", "j2", "form2"}
    assert (d2.members["removed"], d2.members["kept_not_owned"]) == (2, 1)  # both1 stays

    seg3 = dict(list(seg2.items())[:15])
    d3 = run_day(d2.state, seg3, klaviyo, generation="d3")
    check(d3, seg3, held=True)
    assert d3.verdict.held and d3.members["held"] == len(seg2) - 15
    assert d3.sent == set()
    assert on_list(klaviyo) == set(seg2) | forms

    d4 = run_day(d3.state, seg2, klaviyo, generation="d4")
    check(d4, seg2)
    assert d4.sent == set() and d4.members["removed"] == 0
    assert d4.members["unchanged"] == len(seg2)

    seg5 = seg2 | {"j3": 0, "s7": 1}
    d5 = run_day(d4.state, seg5, klaviyo, generation="d5", fail=["j3", "s7"])
    assert d5.members["failed"] == 2
    d5b = run_day(d5.state, seg5, klaviyo, generation="d5b")
    check(d5b, seg5)
    assert d5b.sent == {"j3", "s7"} and d5b.members["retried"] == 2

    remapped = SyncTarget(TARGET.export, TARGET.list_id, "sha256:mapping-2")
    d6 = run_day(d5b.state, seg5, klaviyo, generation="d6", target=remapped)
    check(d6, seg5)
    assert d6.sent == set(seg5) and d6.members["unchanged"] == len(seg5)
    # form2 joined the segment on day 2 but was on the list before: still not ours.
    assert row(d6, "form2")["first"] > klaviyo.members[email("form2")]


def test_an_unconfirmed_person_is_retried_even_without_the_retry_flag():
    state = SyncState(
        StateMeta("vip", "Y6nRLr", TARGET.mapping_fingerprint, 1, "g1", None, "t"),
        keys=[email_key(email("a"))],
        emails=[email("a")],
        attr_hashes=[attr_hash("a", 0)],
        first_added_ms=[0],
        flags=[0],
    )
    planner = Planner(state, target=TARGET)
    assert planner.classify(*block_arrays({"a": 0})).tolist() == [True]
    assert planner.summary()["retried"] == 1


def test_planner_memory_is_reported(day1):
    planner = Planner(day1.state, target=TARGET)
    empty = planner.nbytes
    planner.classify(*block_arrays({f"new{i}": 0 for i in range(100)}))
    assert planner.nbytes > empty + 100 * 16  # each pending joiner's key and hash at least


def test_the_next_state_merges_stayers_and_joiners_in_key_order_with_their_rows():
    # A large enough day for every interleaving: stayers, leavers, joiners (blocks of
    # several sizes), and the rows must stay aligned with their e-mails.
    names = [f"m{i}" for i in range(3000)]
    klaviyo = KlaviyoList()
    first = run_day(None, dict.fromkeys(names[:2000], 0), klaviyo, generation="run-1")
    today = {n: (1 if i % 7 == 0 else 0) for i, n in enumerate(names[500:])}  # 500 leave
    day2 = run_day(first.state, today, klaviyo, generation="run-2", allow=True, block_size=97)
    state = day2.state
    assert np.all(state.keys[1:] > state.keys[:-1])
    assert len(state) == 1500 + 1000  # stayers and joiners; the leavers were removed
    assert np.array_equal(state.keys, [email_key(e) for e in state.emails.to_list()])
    for name in ("m0", "m499"):
        assert row(day2, name) is None
    for name in ("m500", "m501", "m1999", "m2000", "m2999"):
        got = row(day2, name)
        assert got is not None and got["hash"] == attr_hash(name, today[name])
        assert got["flags"] == CONFIRMED


def test_sealing_the_joiners_before_the_jobs_end_changes_nothing():
    names = [f"s{i}" for i in range(600)]
    days = []
    for seal in (False, True):
        klaviyo = KlaviyoList()
        first = run_day(None, dict.fromkeys(names[:400], 0), klaviyo, generation="r1", seal=seal)
        today = {n: i % 5 for i, n in enumerate(names[100:])}
        again = run_day(first.state, today, klaviyo, generation="r2", allow=True, seal=seal)
        days.append(again)
    sealed, plain = days[1].state, days[0].state
    assert sealed.emails.to_list() == plain.emails.to_list()
    for column in ("keys", "attr_hashes", "first_added_ms", "flags"):
        assert np.array_equal(getattr(sealed, column), getattr(plain, column)), column
    assert days[1].members == days[0].members


def test_a_seal_in_progress_never_holds_up_the_event_loops_confirm(day1):
    planner = Planner(day1.state, target=TARGET)
    keys, hashes, emails = block_arrays({f"late{i}": 0 for i in range(10)})
    planner.classify(keys, hashes, pl.Series(emails))
    confirmed = threading.Event()
    with planner._seal_lock:  # as if seal() were sorting the joiners in its thread
        worker = threading.Thread(target=lambda: (planner.confirm(keys, 5), confirmed.set()))
        worker.start()
        assert confirmed.wait(timeout=30), "confirm() waited for the seal"
    worker.join()
    planner.seal()
    assert planner.members()["added"] == 10


def test_jobs_keys_are_read_back_job_by_job_across_chunks():
    from shared.chunked import ChunkedArray
    from shared.settlement import job_keys

    confirmed = ChunkedArray(np.uint64, chunk_bytes=64, spill=True)  # 8 keys a chunk
    counts = [0, 3, 8, 0, 13, 1, 0, 5, 0]
    keys = np.arange(sum(counts), dtype=np.uint64)
    confirmed.append(keys)
    jobs = [(n, i) for i, n in enumerate(counts)]
    edges = np.cumsum([0, *counts])
    got = list(job_keys(confirmed, jobs))
    assert [g.tolist() for g in got] == [keys[a:b].tolist() for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("n", [0, 1, 2, 1000, 70_000])
@pytest.mark.parametrize("repeats", [False, True])
def test_key_order_sorts_the_keys_and_places_each_where_a_stable_sort_would(
    n, repeats, monkeypatch
):
    from shared.chunked import ChunkedArray
    from shared.settlement import key_order

    monkeypatch.setattr("shared.settlement._SEARCH_SLICE", 4096)  # many slices at 70k
    rng = np.random.default_rng(n)
    keys = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    if repeats and n > 1:
        keys[rng.integers(0, n, max(1, n // 10))] = keys[0]  # later sends of the first key
    chunks = ChunkedArray(np.uint64, chunk_bytes=8 * 1000, spill=True)
    chunks.append(keys)
    ordered, places = key_order(chunks)
    assert len(chunks) == 0  # cleared
    distinct, first = np.unique(keys, return_index=True)
    assert ordered.tolist() == distinct.tolist()
    expected = np.full(n, -1)
    expected[first] = np.arange(len(distinct))  # each key's first send keeps its place
    assert places.tolist() == expected.tolist()


@pytest.mark.parametrize("joiners", [0, 1, 37, 400])
@pytest.mark.parametrize("on_disk", [False, True])
@pytest.mark.parametrize("keep_all", [False, True])
def test_merged_strings_come_out_in_key_order_a_slice_at_a_time(
    joiners, on_disk, keep_all, monkeypatch
):
    from shared.chunked import ChunkedStrings
    from shared.keyindex import KeyMerge

    monkeypatch.setattr("shared.keyindex._MERGE_SLICE", 7)  # numbers merged 7 rows at a time

    rng = np.random.default_rng(joiners)
    everyone = np.unique(rng.integers(0, 2**64 - 1, 1000 + joiners, dtype=np.uint64))
    is_joiner = np.zeros(len(everyone), bool)
    is_joiner[rng.permutation(len(everyone))[:joiners]] = True
    keys, joined_keys = everyone[~is_joiner], everyone[is_joiner]
    emails = pl.Series("email", [f"s{k}@example.com" for k in keys.tolist()])
    joined_emails = [f"j{k}@example.com" for k in joined_keys.tolist()]
    keep = np.ones(len(keys), bool) if keep_all else rng.random(len(keys)) < 0.9
    joined: pl.Series | object = pl.Series("email", joined_emails, dtype=pl.String)
    if on_disk:  # as a run's joiners are: drained to a file, in key order
        store = ChunkedStrings(chunk_bytes=200, spill=True)
        store.append(joined)
        joined = store.drain_to(np.arange(joiners, dtype=np.int32), joiners, "email")
    merge = KeyMerge(keys, keep, joined_keys)
    merged = merge.strings(emails, joined)
    by_key = dict(zip(keys[keep].tolist(), emails.filter(pl.Series(keep)).to_list(), strict=True))
    by_key.update(zip(joined_keys.tolist(), joined_emails, strict=True))
    expected = [by_key[k] for k in sorted(by_key)]
    assert merge(keys, joined_keys).tolist() == sorted(by_key)  # the numbers, likewise
    if keep_all and not joiners:  # everyone stayed and nobody joined: the column itself
        assert merged is emails and expected == emails.to_list()
        return
    assert merged.to_series().to_list() == expected
    pieces = list(merged.slices(64))  # many slices, joiners spread across them
    assert all(len(p) <= 64 for p in pieces)
    assert pl.concat(pieces).to_list() == expected
