"""The HTTP API's input rules: names and run ids matched whole, PUT only as JSON, one BOM
rule with the CLI, URLs never built from the caller's Host, consent refused at once, and
broken definitions listed beside the good ones. The handlers are called with real
azure.functions requests against Azurite (function_app.py only forwards to them)."""

from __future__ import annotations

import json

import azure.functions as func
import pytest

from shared import api
from shared.auth import PRINCIPAL_HEADER
from shared.cli import load_definition
from tests.control_plane import queued, save
from tests.exports import definition_doc, write_small_export
from tests.fixtures_app import admin_header

JSON = {"content-type": "application/json"}


def call(handler, services, method="GET", *, route=None, params=None, body=b"", headers=None):
    # As an administrator, as App Service passes the caller: input rules come after roles.
    request = func.HttpRequest(
        method,
        "https://evil.example/api/exports",
        route_params=route or {},
        params=params or {},
        body=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={**(JSON if headers is None else headers), PRINCIPAL_HEADER: admin_header()},
    )
    response = handler(request, services)
    payload = json.loads(response.get_body()) if response.get_body() else None
    return response, payload


def put(services, name, body, headers=None):
    body = {**body, "name": name} if isinstance(body, dict) else body
    return call(api.put_export, services, "PUT", route={"name": name}, body=body, headers=headers)


# -- names and run ids ------------------------------------------------------------------------

BAD_NAMES = ["vip\n", "vip\r\n", "../etc", "vip/../x", "Vip", "", "a" * 64, "vip "]
BAD_RUN_IDS = ["20260101T000000Z-abcdef\n", "../../x", "20260101T000000Z-ABCDEF", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_every_route_refuses_a_name_that_is_not_whole(services, name):
    for handler, method in (
        (api.get_export, "GET"),
        (api.put_export, "PUT"),
        (api.delete_export, "DELETE"),
        (api.start_export_run, "POST"),
    ):
        response, body = call(handler, services, method, route={"name": name}, body={})
        assert response.status_code == 400, (handler.__name__, name)
        assert body["error"] == {
            "code": "invalid_name",
            "message": body["error"]["message"],
            "field": "name",
        }
    assert queued(services) == []


@pytest.mark.parametrize("run_id", BAD_RUN_IDS)
def test_a_run_id_with_anything_after_it_is_400(services, container, run_id):
    save(services, "vip", definition_doc(container.container_name))
    response, body = call(api.get_run, services, route={"name": "vip", "run_id": run_id})
    assert response.status_code == 400 and body["error"]["field"] == "run_id"


# -- PUT ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}],
)
def test_put_needs_a_json_content_type(services, container, headers):
    response, body = put(services, "vip", definition_doc(container.container_name), headers)
    assert response.status_code == 415
    assert body["error"]["code"] == "unsupported_media_type"
    assert services.definitions.names() == []


@pytest.mark.parametrize("media", ["application/json; charset=utf-8", "application/ld+json"])
def test_put_takes_json_with_parameters_or_a_json_suffix(services, container, media):
    response, _ = put(
        services, "vip", definition_doc(container.container_name), {"content-type": media}
    )
    assert response.status_code == 201


def test_the_api_and_the_cli_agree_on_a_utf8_bom(services, container, tmp_path):
    text = json.dumps({**definition_doc(container.container_name), "name": "vip"})
    with_bom = b"\xef\xbb\xbf" + text.encode()
    path = tmp_path / "vip.json"
    path.write_bytes(with_bom)
    from_file = load_definition(str(path), services.settings)
    response, body = put(services, "vip", with_bom)
    assert response.status_code == 201
    assert body == from_file.to_dict()
    # ... and on what is not allowed: the same key twice.
    twice = text[:-1] + ', "name": "vip"}'
    response, body = put(services, "vip", twice.encode())
    assert response.status_code == 400 and "appears twice" in body["error"]["message"]


def test_a_definition_that_holds_a_key_is_refused_without_echoing_it(services, container):
    key = "pk_" + "3f" * 17
    doc = definition_doc(container.container_name)
    doc["connection"]["api_key_secret"] = key
    response, body = put(services, "vip", doc)
    assert response.status_code == 400
    assert body["error"]["field"] == "connection.api_key_secret"
    assert key not in json.dumps(body)


# -- POST ---------------------------------------------------------------------------------------


def test_status_url_and_location_are_not_built_from_the_host_header(services, container):
    write_small_export(container, [("1", "a@example.com", "A", "", "NL")])
    save(services, "vip", definition_doc(container.container_name))
    request = func.HttpRequest(
        "POST",
        "https://evil.example/api/exports/vip/runs",
        route_params={"name": "vip"},
        params={},
        body=b"",
        headers={
            "host": "evil.example",
            "x-forwarded-host": "evil.example",
            PRINCIPAL_HEADER: admin_header(),
        },
    )
    response = api.start_export_run(request, services)
    body = json.loads(response.get_body())
    assert response.status_code == 202
    expected = f"/api/exports/vip/runs/{body['run_id']}"
    assert response.headers["Location"] == expected and body["status_url"] == expected


@pytest.mark.parametrize("dry_run", ["false", "true"])
def test_a_run_without_privacy_consent_is_refused_at_once(services, container, dry_run):
    doc = definition_doc(container.container_name)
    doc["connection"]["privacy_consent"] = False
    save(services, "vip", doc)
    response, body = call(
        api.start_export_run, services, "POST", route={"name": "vip"}, params={"dry_run": dry_run}
    )
    assert response.status_code == 422
    assert body["error"]["code"] == "privacy_consent_required"
    assert body["error"]["field"] == "connection.privacy_consent"
    assert queued(services) == []
    assert services.runs.status("vip").get("active_run_id") is None  # nothing was claimed


# -- GET /api/exports -------------------------------------------------------------------------


def test_broken_definitions_are_listed_beside_the_good_ones(services, container):
    save(services, "good", definition_doc(container.container_name))
    services.state.upload_blob("definitions/corrupt.json", b'{"name": "corrupt", "enab')
    invalid = definition_doc(container.container_name)
    invalid["destination"] = {"list_id": "not a list"}
    services.state.upload_blob("definitions/invalid.json", json.dumps(invalid).encode())
    services.state.upload_blob("definitions/Bad Name.json", b"{}")

    response, body = call(api.list_exports, services)

    assert response.status_code == 200
    assert [e["name"] for e in body["exports"]] == ["good"]
    broken = {b["name"]: b for b in body["invalid"]}
    assert set(broken) == {"Bad Name", "corrupt", "invalid"}
    assert broken["corrupt"]["error"]["code"] == "invalid_definition"
    assert "not valid JSON" in broken["corrupt"]["error"]["message"]
    assert broken["invalid"]["error"]["field"] == "destination.list_id"
    assert broken["Bad Name"]["error"]["code"] == "invalid_name"
    assert broken["corrupt"]["blob"] == "definitions/corrupt.json"


def test_a_missing_state_container_is_one_line_naming_it(services, blob_service):
    blob_service.delete_container(services.settings.state_container)
    response, body = call(api.list_exports, services)
    assert response.status_code == 503
    message = body["error"]["message"]
    assert services.settings.state_container in message and "AzureWebJobsStorage" in message
    assert "\n" not in message and "RequestId" not in message


def test_a_broken_stored_definition_is_409_not_the_callers_fault(services):
    services.state.upload_blob("definitions/corrupt.json", b'{"name": "corrupt", "enab')
    for handler, method in ((api.get_export, "GET"), (api.start_export_run, "POST")):
        response, body = call(handler, services, method, route={"name": "corrupt"})
        assert response.status_code == 409, handler.__name__
        assert body["error"]["code"] == "invalid_stored_definition"
        assert "definitions/corrupt.json" in body["error"]["message"]
    assert queued(services) == []
