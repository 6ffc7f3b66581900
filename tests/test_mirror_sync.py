"""Mirror sync on real services (Azurite, the Klaviyo sandbox): the list follows the
segment day by day, sends only changes, removes only what the export added, and holds
back a mass removal."""

from __future__ import annotations

import asyncio

import pytest

from devtools.klaviyo_sandbox import AccountSpec, ListSpec
from shared.definitions import parse_definition
from shared.service import configure, start_run
from shared.settings import Settings
from shared.state import DefinitionStore, open_state
from shared.worker import execute_run
from tests.fixtures_app import admin_header, call
from tests.killing import take_message, worker_env, worker_services
from tests.sync_days import (
    FORM_IN_SEGMENT,
    FORM_ONLY,
    LIST_ID,
    REMOVE,
    N,
    accounted,
    email,
    on_list,
    operations,
    people,
    run,
    sign_up_form,
    sync_definition,
    sync_settings,
    write_day,
)

OTHER = "CustomerInsights_other/KlaviyoExport"


@pytest.fixture
def settings(storage_connection_string, klaviyo_sandbox) -> Settings:
    return sync_settings(storage_connection_string, klaviyo_sandbox.url)


def test_the_list_follows_the_segment_over_four_days(container, settings, klaviyo_sandbox):
    sandbox, forms = klaviyo_sandbox, set(FORM_IN_SEGMENT + FORM_ONLY)
    definition = sync_definition(container.container_name)
    sign_up_form(sandbox)

    # Day 1: everyone is a joiner; the form members in the segment are sent too.
    day1 = people(range(N))
    write_day(container, day1, "2026/11/01/0600")
    report = run(definition, settings)
    assert accounted(report) and report["status"] == "succeeded"
    assert report["rows"]["sent"] == N and report["rows"]["unchanged"] == 0
    assert report["members"]["added"] == N and report["members"]["removed"] == 0
    assert on_list(sandbox) == {email(i) for i in range(N)} | forms

    # Day 2: 5 % leave (the 40 form members among them), 5 % join, 5 % change.
    leavers, joiners, changed = range(100), range(N, N + 100), range(1000, 1100)
    day2_ids = [i for i in range(N + 100) if i not in leavers]
    write_day(container, people(day2_ids, changed), "2026/11/02/0600")
    report = run(definition, settings)
    assert accounted(report) and report["status"] == "succeeded"
    assert report["rows"] == {
        "read": N, "sent": 200, "unchanged": N - 200, "rejected": 0, "duplicates": 0,
        "phones_dropped": 0,
    }  # fmt: skip
    members = report["members"]
    assert (members["added"], members["updated"], members["unchanged"]) == (100, 100, N - 200)
    assert members["removed"] == 60  # the leavers this export added
    assert members["kept_not_owned"] == 40  # on the list before the export added them
    assert members["held"] == 0
    segment2 = {email(i) for i in day2_ids}
    assert on_list(sandbox) == segment2 | forms
    assert sandbox.state.profile(email(1000))["attributes"]["first_name"] == "Name1000v"
    assert {email(i) for i in joiners} <= on_list(sandbox)

    # Day 3: a half-written export (one partition of three) looks like mass churn: held.
    write_day(container, people(day2_ids, changed), "2026/11/03/0600", only=[1])
    before = operations(sandbox)
    report = run(definition, settings)
    assert accounted(report) and report["status"] == "held"
    assert report["rows"]["sent"] == 0 and report["members"]["removed"] == 0
    assert report["members"]["held"] == N - report["rows"]["read"]
    assert "--allow-mass-removal" in report["message"]
    assert on_list(sandbox) == segment2 | forms
    after = operations(sandbox)
    assert after.get(REMOVE, 0) == before.get(REMOVE, 0)

    # Day 4: day 2's content again: nothing sent, nothing removed.
    write_day(container, people(day2_ids, changed), "2026/11/04/0600")
    before = operations(sandbox)
    report = run(definition, settings)
    assert accounted(report) and report["status"] == "succeeded"
    assert report["rows"]["sent"] == 0 and report["rows"]["unchanged"] == N
    assert report["members"]["removed"] == 0 and report["jobs"]["planned"] == 0
    after = operations(sandbox)
    for write in (
        "POST /api/profile-bulk-import-jobs",
        "DELETE /api/lists/{id}/relationships/profiles",
    ):
        assert after.get(write, 0) == before.get(write, 0), write
    assert on_list(sandbox) == segment2 | forms


def test_a_held_removal_goes_through_when_allowed(container, settings, klaviyo_sandbox):
    definition = sync_definition(container.container_name)
    sign_up_form(klaviyo_sandbox)
    write_day(container, people(range(N)), "2026/11/01/0600")
    run(definition, settings)

    write_day(container, people(range(N)), "2026/11/02/0600", only=[1])
    held = run(definition, settings)
    assert held["status"] == "held"
    kept = set(held["snapshot"]["files"])
    assert len(kept) == 1

    allowed = run(definition, settings, allow_mass_removal=True)
    assert accounted(allowed) and allowed["status"] == "succeeded"
    assert allowed["sync"]["guard"]["overridden"] is True
    read = allowed["rows"]["read"]
    members = allowed["members"]
    assert members["removed"] + members["kept_not_owned"] == N - read
    segment = {email(i) for i in range(read)}
    forms = set(FORM_IN_SEGMENT + FORM_ONLY)
    assert on_list(klaviyo_sandbox) == segment | forms


def test_add_mode_sends_changes_and_never_removes(container, settings, klaviyo_sandbox):
    definition = sync_definition(container.container_name, sync={"mode": "add"})
    write_day(container, people(range(N)), "2026/11/01/0600")
    run(definition, settings)
    write_day(container, people(range(100, N + 100), changed=range(500, 600)), "2026/11/02/0600")
    report = run(definition, settings)
    assert accounted(report) and report["status"] == "succeeded"
    assert report["rows"]["sent"] == 200  # 100 joiners, 100 changed
    assert report["members"]["removed"] == 0 and report["members"]["held"] == 0
    assert on_list(klaviyo_sandbox) == {email(i) for i in range(N + 100)}
    assert operations(klaviyo_sandbox).get("GET /api/lists/{id}/profiles", 0) == 0


def test_full_resends_everything_once_and_a_mapping_change_does_so_by_itself(
    container, settings, klaviyo_sandbox
):
    definition = sync_definition(container.container_name)
    write_day(container, people(range(N)), "2026/11/01/0600")
    run(definition, settings)

    full = run(definition, settings, full=True)
    assert accounted(full) and full["rows"]["sent"] == N and full["rows"]["unchanged"] == 0
    assert full["sync"]["full_reason"] == "requested"
    assert full["members"]["unchanged"] == N  # resent, but nothing about them changed

    again = run(definition, settings)
    assert again["rows"]["sent"] == 0 and again["sync"]["full"] is False

    definition["mapping"]["properties"]["tier_copy"] = {"column": "Tier", "type": "string"}
    remapped = run(definition, settings)
    assert accounted(remapped) and remapped["rows"]["sent"] == N
    assert remapped["sync"]["full_reason"] == "mapping changed"
    assert (
        klaviyo_sandbox.state.profile(email(1))["attributes"]["properties"]["tier_copy"] == "gold"
    )
    assert run(definition, settings)["rows"]["sent"] == 0


def test_failed_rows_are_sent_again_next_run_and_counted_retried(
    container, settings, klaviyo_sandbox
):
    definition = sync_definition(container.container_name)
    rows = [*people(range(N)), ("C-bad", "bad@example.c0m", "Bad", "gold")]
    write_day(container, rows, "2026/11/01/0600")
    klaviyo_sandbox.configure(cancel_jobs=True)
    cancelled = run(definition, settings)
    assert cancelled["status"] == "failed" and "cancelled every import job" in cancelled["error"]
    assert accounted(cancelled) and cancelled["rows"]["sent"] == 0
    assert cancelled["members"]["failed"] == N + 1

    klaviyo_sandbox.configure(cancel_jobs=False)
    retried = run(definition, settings)
    assert accounted(retried) and retried["status"] == "succeeded"
    assert retried["members"]["retried"] == N + 1 and retried["rows"]["unchanged"] == 0
    assert retried["rejected_by_reason"] == {"klaviyo_import_error": 1}  # Klaviyo refuses it
    assert on_list(klaviyo_sandbox) == {email(i) for i in range(N)}

    # The one Klaviyo refused is tried again on the next run; the rest are unchanged.
    third = run(definition, settings)
    assert third["members"]["retried"] == 1 and third["rows"]["unchanged"] == N


def test_a_new_list_id_starts_a_state_of_its_own(container, settings, sandbox_factory):
    sandbox = sandbox_factory(
        accounts=(AccountSpec(lists=(ListSpec(id=LIST_ID), ListSpec(id="Xk2New"))),)
    )
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage": settings.app_storage.connection_string,
            "SEGMENTS_STORAGE": settings.segments_storage.connection_string,
            "STATE_CONTAINER": settings.state_container,
            "KLAVIYO_BASE_URL": sandbox.url,
        }
    )
    definition = sync_definition(container.container_name)
    write_day(container, people(range(300)), "2026/11/01/0600")
    run(definition, settings)
    definition["destination"] = {"list_id": "Xk2New"}
    moved = run(definition, settings)
    assert moved["rows"]["sent"] == 300 and moved["members"]["removed"] == 0
    assert on_list(sandbox, "Xk2New") == {email(i) for i in range(300)}
    assert on_list(sandbox, LIST_ID) == {email(i) for i in range(300)}  # left as it was


def test_a_dry_run_plans_without_writing(container, settings, klaviyo_sandbox):
    definition = sync_definition(container.container_name)
    sign_up_form(klaviyo_sandbox)
    write_day(container, people(range(N)), "2026/11/01/0600")
    run(definition, settings)
    write_day(container, people(range(100, N + 100), changed=range(500, 600)), "2026/11/02/0600")
    before = operations(klaviyo_sandbox)

    plan = run(definition, settings, dry_run=True)
    assert accounted(plan) and plan["status"] == "succeeded" and plan["dry_run"] is True
    members = plan["members"]
    assert (members["added"], members["updated"]) == (100, 100)
    assert members["removed"] == 60 and members["kept_not_owned"] == 40  # looked up, kept
    assert plan["sync"]["guard"]["held"] is False
    after = operations(klaviyo_sandbox)
    for write in (
        "POST /api/profile-bulk-import-jobs",
        "DELETE /api/lists/{id}/relationships/profiles",
    ):
        assert after.get(write, 0) == before.get(write, 0), write
    # The dry run saved no state: the real run still sees the same plan.
    real = run(definition, settings)
    assert real["members"]["removed"] == 60 and real["rows"]["sent"] == 200


def test_the_api_passes_the_flags_and_a_held_run_says_so(
    storage_connection_string, klaviyo_sandbox, container
):
    services = worker_services(worker_env(storage_connection_string, klaviyo_sandbox.url))
    services.definitions.put(parse_definition(sync_definition(container.container_name)))
    write_day(container, people(range(N)), "2026/11/01/0600")
    start_run(services, "churners")
    assert asyncio.run(execute_run(services, take_message(services))) == "succeeded"
    write_day(container, people(range(N)), "2026/11/02/0600", only=[2])

    def post(**params: str) -> tuple[str, dict]:
        route = {"name": "churners"}
        url = "http://localhost/api/exports/churners/runs"
        response, body = call(
            "run_start", "POST", url, route=route, params=params, principal=admin_header()
        )
        assert response.status_code == 202, body
        return body["run_id"], body

    configure(services)
    try:
        run_id, body = post(full="true")
        assert (body["full"], body["allow_mass_removal"], body["dry_run"]) == (True, False, False)
        assert asyncio.run(execute_run(services, take_message(services))) == "held"
        url = f"http://localhost/api/exports/churners/runs/{run_id}"
        route = {"name": "churners", "run_id": run_id}
        response, record = call("run_get", "GET", url, route=route, principal=admin_header())
        assert response.status_code == 200 and record["status"] == "held"
        assert "--allow-mass-removal" in record["message"] and record["error"] is None
        assert record["report"]["rows"]["sent"] == record["report"]["rows"]["read"]  # full

        run_id, body = post(allow_mass_removal="true")
        assert asyncio.run(execute_run(services, take_message(services))) == "succeeded"
        removed = services.runs.get("churners", run_id)["summary"]["members"]["removed"]
        assert removed == N - len(on_list(klaviyo_sandbox))
    finally:
        configure(None)
    assert on_list(klaviyo_sandbox) < {email(i) for i in range(N)}


def test_a_leaver_another_export_still_syncs_to_the_list_stays(
    container, settings, klaviyo_sandbox
):
    # Two segments into one list: VIPs (this test's "churners" export) and a second one.
    sandbox = klaviyo_sandbox
    vips = sync_definition(
        container.container_name, sync={"mode": "mirror", "max_removal_percent": 50}
    )
    other = sync_definition(
        container.container_name,
        name="newsletter",
        source={"container": container.container_name, "folder": OTHER, "segment": "News"},
    )
    definitions = DefinitionStore(open_state(settings))
    for doc in (vips, other):
        definitions.put(parse_definition(doc))
    both = range(0, 50)  # in both segments; the VIP export adds them first
    write_day(container, people(range(200)), "2026/11/01/0600")
    assert run(vips, settings)["members"]["added"] == 200
    write_day(container, people(both), "2026/11/01/0600", folder=OTHER, segment="News")
    assert run(other, settings)["members"]["added"] == 50  # already on: not owned by it

    # The 50 leave the VIP segment but stay in the other: the VIP export keeps them.
    write_day(container, people(range(50, 200)), "2026/11/02/0600")
    report = run(vips, settings)
    assert accounted(report)
    assert report["members"]["removed"] == 0 and report["members"]["kept_not_owned"] == 50
    assert report["sync"]["kept_for_other_exports"] == 50
    assert on_list(sandbox) == {email(i) for i in range(200)}
    # Once the other export is deleted, its old state protects nobody.
    write_day(container, people(range(50, 190)), "2026/11/03/0600")
    definitions.delete("newsletter")
    report = run(vips, settings)
    assert report["members"]["removed"] == 10 and report["sync"]["kept_for_other_exports"] == 0
    assert on_list(sandbox) == {email(i) for i in range(190)}
