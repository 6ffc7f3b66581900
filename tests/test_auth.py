"""Who may do what: every HTTP route x every kind of caller, through function_app itself.

Requests are real ``azure.functions.HttpRequest`` objects carrying the
``X-MS-CLIENT-PRINCIPAL`` header App Service authentication would inject (crafted here,
including malformed ones), against definitions and runs in Azurite.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import pytest
from azure.functions.timer import TimerRequest

from shared import auth, service
from shared.auth import ADMIN, CONTRIBUTOR, AuthError, parse_principal
from shared.definitions import parse_definition
from shared.keyvault import LocalApiKey
from shared.service import Services, start_run
from shared.settings import Settings
from shared.worker import execute_run
from tests.exports import ROOT, definition_doc, write_small_export
from tests.fixtures_app import (
    ADMIN_OID,
    CONTRIBUTOR_OID,
    admin_header,
    call,
    contributor_header,
    indexed_functions,
    live_services,
    principal_header,
)

BASE = "http://localhost/api/exports"
OPEN, CLOSED = "open-export", "closed-export"  # connection.access contributors / administrators


def _definition(container: str, name: str, access: str) -> dict:
    doc = definition_doc(container, name=name)
    doc["connection"]["access"] = access
    return doc


@pytest.fixture
def api(storage_connection_string, blob_service):
    """Services on Azurite with one export open to contributors and one for admins only,
    each with a finished run (so that a new one may start)."""
    container = f"ci-{uuid.uuid4().hex[:12]}"
    blob_service.create_container(container)
    env = {
        "AzureWebJobsStorage": storage_connection_string,
        "SEGMENTS_STORAGE": storage_connection_string,
        "STATE_CONTAINER": f"state-{uuid.uuid4().hex[:12]}",
        "KLAVIYO_API_KEY": "pk_test_sandbox",
    }
    services = Services.from_settings(Settings.from_env(env), provider=LocalApiKey("pk_x"))
    services.queue.clear_messages()
    runs = {}
    for name, access in ((OPEN, "contributors"), (CLOSED, "administrators")):
        services.definitions.put(parse_definition(_definition(container, name, access)))
        runs[name] = start_run(services, name)[0]
        services.runs.finish(name, runs[name], status="failed", error="fixture")
    service.configure(services)
    yield services, container, runs
    service.configure(None)
    services.queue.clear_messages()


CALLERS = {
    "admin": admin_header(),
    "contributor": contributor_header(),
    "both": principal_header(ADMIN, CONTRIBUTOR),
    "no role": principal_header(name="Nora Norole", object_id=str(uuid.UUID(int=3))),
    "other role": principal_header("Exports.Reader"),
    "anonymous": None,
}


def _request(route: str, export: str, runs: dict[str, str], container: str):
    """(function name, method, url, kwargs) for one route on one export."""
    if route == "list":
        return "exports_list", "GET", BASE, {}
    one = {"route": {"name": export}}
    if route == "get":
        return "export_get", "GET", f"{BASE}/{export}", one
    if route == "put":
        body = _definition(
            container, export, "contributors" if export == OPEN else "administrators"
        )
        return "export_put", "PUT", f"{BASE}/{export}", {**one, "body": body}
    if route == "delete":
        return "export_delete", "DELETE", f"{BASE}/{export}", one
    if route == "run":
        return "run_start", "POST", f"{BASE}/{export}/runs", one
    if route == "get run":
        run_id = runs[export]
        return (
            "run_get",
            "GET",
            f"{BASE}/{export}/runs/{run_id}",
            {"route": {"name": export, "run_id": run_id}},
        )
    raise AssertionError(route)


def _expected(route: str, export: str, who: str) -> tuple[int, str | None]:
    """(status, missing role) the README's table promises."""
    if who == "anonymous":
        return 401, None
    if who in ("admin", "both"):
        ok = {"list": 200, "get": 200, "put": 200, "delete": 204, "run": 202, "get run": 200}
        return ok[route], None
    if who in ("no role", "other role"):
        return 403, ADMIN if route in ("put", "delete") else CONTRIBUTOR
    # contributor
    if route in ("put", "delete"):
        return 403, ADMIN
    if route == "list" or export == OPEN:
        return {"list": 200, "get": 200, "run": 202, "get run": 200}[route], None
    return 403, ADMIN


ROUTES = ("list", "get", "put", "delete", "run", "get run")


# The list route has no export of its own: it is asked once.
CASES = [("list", OPEN)] + [(r, e) for r in ROUTES if r != "list" for e in (OPEN, CLOSED)]


@pytest.mark.parametrize("who", list(CALLERS))
@pytest.mark.parametrize(("route", "export"), CASES)
def test_every_route_and_role(api, route, export, who):
    services, container, runs = api
    name, method, url, kwargs = _request(route, export, runs, container)
    response, body = call(name, method, url, principal=CALLERS[who], **kwargs)
    status, missing = _expected(route, export, who)
    assert response.status_code == status, body
    if status in (401, 403):
        assert body["error"]["code"] == ("unauthenticated" if status == 401 else "forbidden")
        assert body["error"].get("missing_role") == missing
        if missing:
            assert missing in body["error"]["message"]
    if route == "list" and status == 200:
        names = [e["name"] for e in body["exports"]]
        assert names == ([OPEN] if who == "contributor" else sorted([CLOSED, OPEN]))
    if route == "run" and status == 202:
        record = services.runs.get(export, body["run_id"])
        assert record["started_by"]["object_id"] == (
            CONTRIBUTOR_OID if who == "contributor" else ADMIN_OID
        )


def test_allowed_callers_start_runs_that_record_who_started_them(api):
    services, _, _ = api
    cases = (
        (OPEN, contributor_header(), {"name": "Casey Contributor", "object_id": CONTRIBUTOR_OID}),
        (CLOSED, admin_header(), {"name": "Ada Lovelace", "object_id": ADMIN_OID}),
    )
    for export, principal, who in cases:
        url = f"{BASE}/{export}/runs"
        response, body = call("run_start", "POST", url, route={"name": export}, principal=principal)
        assert response.status_code == 202
        assert services.runs.get(export, body["run_id"])["started_by"] == who


def test_contributors_cannot_create_exports(api):
    services, container, _ = api
    response, body = call(
        "export_put",
        "PUT",
        f"{BASE}/new-export",
        route={"name": "new-export"},
        body=_definition(container, "new-export", "contributors"),
        principal=contributor_header(),
    )
    assert response.status_code == 403 and body["error"]["missing_role"] == ADMIN
    assert "new-export" not in services.definitions.names()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


MALFORMED = {
    "not base64": "%%% not base64 %%%",
    "not json": _b64(b"\xff\xfe not json"),
    "json list": _b64(b'[{"typ": "roles", "val": "Exports.Admin"}]'),
    "no claims": _b64(b'{"auth_typ": "aad"}'),
    "claims not a list": _b64(b'{"claims": {"typ": "roles", "val": "Exports.Admin"}}'),
    "claim without val": _b64(b'{"claims": [{"typ": "roles"}]}'),
    "claim val not a string": _b64(b'{"claims": [{"typ": "roles", "val": ["Exports.Admin"]}]}'),
    "claim not an object": _b64(b'{"claims": ["Exports.Admin"]}'),
    "empty": "   ",
    "huge": "A" * (70 * 1024),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_principal_is_401_on_every_route_never_500(api, kind):
    _, container, runs = api
    for route in ROUTES:
        name, method, url, kwargs = _request(route, OPEN, runs, container)
        response, body = call(name, method, url, principal=MALFORMED[kind], **kwargs)
        assert response.status_code == 401, (route, body)
        assert body["error"]["code"] == "unauthenticated"


def test_with_the_check_off_every_caller_is_an_administrator(api, caplog):
    services, _, _ = api
    caplog.set_level("WARNING", logger="shared.service")
    relaxed = Services.from_settings(
        Settings.from_env(
            {
                "AzureWebJobsStorage": services.settings.app_storage.connection_string,
                "SEGMENTS_STORAGE": services.settings.segments_storage.connection_string,
                "STATE_CONTAINER": services.settings.state_container,
                "API_AUTH_DISABLED": "true",
            }
        )
    )
    assert any("API_AUTH_DISABLED" in r.getMessage() for r in caplog.records), "log it at start"
    service.configure(relaxed)
    response, body = call("exports_list", "GET", BASE)
    assert response.status_code == 200 and len(body["exports"]) == 2
    response, body = call("run_start", "POST", f"{BASE}/{CLOSED}/runs", route={"name": CLOSED})
    assert response.status_code == 202
    assert services.runs.get(CLOSED, body["run_id"])["started_by"] == auth.LOCAL.as_record()


def test_the_setting_must_be_a_boolean():
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "SEGMENTS_STORAGE": "x=y"}
    assert Settings.from_env(base).api_auth_disabled is False
    assert Settings.from_env({**base, "API_AUTH_DISABLED": "TRUE"}).api_auth_disabled is True
    with pytest.raises(Exception, match="API_AUTH_DISABLED"):
        Settings.from_env({**base, "API_AUTH_DISABLED": "maybe"})


# -- the principal header itself --------------------------------------------------------------


def test_roles_name_and_object_id_are_read_from_the_mapped_claims():
    principal = parse_principal(principal_header(ADMIN, CONTRIBUTOR))
    assert principal.roles == {ADMIN, CONTRIBUTOR}
    assert principal.name == "Ada Lovelace" and principal.object_id == ADMIN_OID
    # v1-style mapping: the role claim type is the role_typ URI.
    uri = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    assert parse_principal(principal_header(ADMIN, role_claim=uri)).is_admin
    # One claim holding a JSON list of roles.
    assert parse_principal(principal_header('["Exports.Contributor"]')).roles == {CONTRIBUTOR}


def test_an_application_caller_is_named_by_its_app_id():
    app_id = "33333333-3333-4333-8333-333333333333"
    header = principal_header(ADMIN, name=None, extra_claims=[{"typ": "azp", "val": app_id}])
    principal = parse_principal(header)
    assert principal.name == f"application {app_id}" and principal.is_admin


def test_a_role_from_another_claim_type_grants_nothing():
    header = principal_header(name="Eve", extra_claims=[{"typ": "groups", "val": ADMIN}])
    assert parse_principal(header).roles == frozenset()
    with pytest.raises(AuthError) as info:
        parse_principal("!!")
    assert info.value.status == 401


def test_app_roles_file_for_the_registration_matches_the_code():
    roles = json.loads((ROOT / "infra" / "auth" / "app-roles.json").read_text())
    assert {r["value"] for r in roles} == {ADMIN, CONTRIBUTOR}
    for role in roles:
        assert set(role["allowedMemberTypes"]) == {"User", "Application"}
        assert role["isEnabled"] is True and role["description"]


# -- who started a run, end to end ------------------------------------------------------------


@pytest.fixture
def live(
    storage_connection_string, klaviyo_sandbox, key_vault, key_vault_client_kwargs, blob_service
):
    """Services that can run exports: Azurite, the Klaviyo sandbox and the Key Vault stand-in."""
    container = f"ci-{uuid.uuid4().hex[:12]}"
    segments = blob_service.create_container(container)
    services = live_services(
        storage_connection_string, klaviyo_sandbox.url, key_vault, key_vault_client_kwargs
    )
    service.configure(services)
    yield services, segments, container
    service.configure(None)
    services.queue.clear_messages()


def test_the_report_says_who_started_the_run_and_the_schedule_says_schedule(live):
    services, segments, container = live
    write_small_export(segments, [("1", "ada@example.com", "Ada", "", "NL")])
    services.definitions.put(parse_definition(_definition(container, OPEN, "contributors")))
    response, body = call(
        "run_start",
        "POST",
        f"{BASE}/{OPEN}/runs",
        route={"name": OPEN},
        principal=contributor_header(),
    )
    assert response.status_code == 202
    (message,) = services.queue.receive_messages(max_messages=1)
    text = base64.b64decode(message.content).decode()
    services.queue.delete_message(message)
    assert asyncio.run(execute_run(services, text)) == "succeeded"
    _, run = call(
        "run_get",
        "GET",
        f"{BASE}/{OPEN}/runs/{body['run_id']}",
        route={"name": OPEN, "run_id": body["run_id"]},
        principal=contributor_header(),
    )
    who = {"name": "Casey Contributor", "object_id": CONTRIBUTOR_OID}
    assert run["started_by"] == who and run["report"]["started_by"] == who

    write_small_export(
        segments, [("2", "bob@example.com", "Bob", "", "NL")], stamp="2026/11/02/0900"
    )
    indexed_functions()["scheduled_exports"].get_user_function()(TimerRequest())
    (message,) = services.queue.receive_messages(max_messages=1)
    doc = json.loads(base64.b64decode(message.content))
    assert doc["trigger"] == "schedule"
    assert services.runs.get(OPEN, doc["run_id"])["started_by"] == auth.SCHEDULE
