"""The function app, called the way the Functions host calls it: `function_app.app` is
indexed once, and each function is invoked with real azure.functions objects against
Azurite, the Klaviyo sandbox and the Key Vault stand-in."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid
from concurrent.futures import ThreadPoolExecutor

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient

from devtools.sample_export import write_sample_export
from shared import service
from shared.keyvault import KeyVaultApiKeys
from shared.retry import RetryPolicy
from shared.service import RUN_QUEUE, Services
from shared.settings import Settings
from tests.exports import ROOT, definition_doc, write_small_export
from tests.fixtures_app import admin_header, call, indexed_functions

LIST_ID = "Y6nRLr"
FAST_RETRY = RetryPolicy(max_attempts=10, backoff=0.02, max_backoff=0.2, rng=random.Random(9))


@pytest.fixture(scope="session")
def functions():
    # get_functions() may be called once per app object: one index for every test module.
    return indexed_functions()


def bindings(fn) -> list[dict]:
    return [json.loads(b) for b in fn.get_raw_bindings()]


@pytest.fixture
def app_env(storage_connection_string, klaviyo_sandbox, key_vault, blob_service):
    container = f"ci-{uuid.uuid4().hex[:12]}"
    blob_service.create_container(container)
    env = {
        "AzureWebJobsStorage": storage_connection_string,
        "SEGMENTS_STORAGE": storage_connection_string,
        "STATE_CONTAINER": f"state-{uuid.uuid4().hex[:12]}",
        "KEY_VAULT_URL": key_vault.url,
        "KLAVIYO_BASE_URL": klaviyo_sandbox.url,
    }
    return env, container


@pytest.fixture
def services(app_env, key_vault_client_kwargs):
    env, _ = app_env
    settings = Settings.from_env(env)
    provider = KeyVaultApiKeys(settings.key_vault_url, **key_vault_client_kwargs)
    built = Services.from_settings(
        settings,
        provider=provider,
        client_kwargs={"retry": FAST_RETRY},
        run_options={"poll_interval": 0.05},
    )
    built.queue.clear_messages()
    service.configure(built)
    yield built
    service.configure(None)


@pytest.fixture
def segments(app_env, blob_service):
    return blob_service.get_container_client(app_env[1])


def call_http(functions, name, method, url, *, route=None, params=None, body=b""):
    # As an administrator: these tests are about the API's behaviour, tests/test_auth.py
    # about who may call it.
    return call(name, method, url, route=route, params=params, body=body, principal=admin_header())


def put_definition(functions, name, doc):
    if isinstance(doc, dict):
        doc = {**doc, "name": name}
    return call_http(
        functions,
        "export_put",
        "PUT",
        f"http://localhost/api/exports/{name}",
        route={"name": name},
        body=doc,
    )


def start(functions, name, **params):
    return call_http(
        functions,
        "run_start",
        "POST",
        f"http://localhost/api/exports/{name}/runs",
        route={"name": name},
        params=params,
    )


def get_run(functions, name, run_id):
    return call_http(
        functions,
        "run_get",
        "GET",
        f"http://localhost/api/exports/{name}/runs/{run_id}",
        route={"name": name, "run_id": run_id},
    )


def take_messages(services: Services) -> list[func.QueueMessage]:
    """Read the run queue raw, decode base64 as the host does, and hand back the messages
    the host would pass to the queue trigger."""
    raw = QueueClient.from_connection_string(
        services.settings.app_storage.connection_string, RUN_QUEUE
    )
    out = []
    for message in raw.receive_messages(max_messages=32):
        body = base64.b64decode(message.content, validate=True)  # fails if not base64
        out.append(func.QueueMessage(id=message.id, body=body))
        raw.delete_message(message)
    return out


def work(functions, services, messages=None) -> None:
    worker = functions["run_worker"].get_user_function()
    for message in messages if messages is not None else take_messages(services):
        asyncio.run(worker(message))


# -- indexing -------------------------------------------------------------------------------


def test_functions_and_bindings_are_declared(functions):
    assert set(functions) == {
        "scheduled_exports",
        "run_worker",
        "run_poisoned",
        "exports_list",
        "export_get",
        "export_put",
        "export_delete",
        "run_start",
        "run_get",
    }
    (timer,) = bindings(functions["scheduled_exports"])
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%EXPORT_SCHEDULE%"
    (queue,) = bindings(functions["run_worker"])
    assert queue["type"] == "queueTrigger" and queue["queueName"] == RUN_QUEUE
    assert queue["connection"] == "AzureWebJobsStorage"
    (poison,) = bindings(functions["run_poisoned"])
    assert poison["queueName"] == f"{RUN_QUEUE}-poison"
    routes = {
        name: next(b for b in bindings(fn) if b["type"] == "httpTrigger")
        for name, fn in functions.items()
        if any(b["type"] == "httpTrigger" for b in bindings(fn))
    }
    assert {(r["route"], tuple(r["methods"])) for r in routes.values()} == {
        ("exports", ("GET",)),
        ("exports/{name}", ("GET",)),
        ("exports/{name}", ("PUT",)),
        ("exports/{name}", ("DELETE",)),
        ("exports/{name}/runs", ("POST",)),
        ("exports/{name}/runs/{run_id}", ("GET",)),
    }
    assert all(r["authLevel"] == "FUNCTION" for r in routes.values())


def test_host_json_decodes_queue_messages_as_base64():
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["queues"]["messageEncoding"] == "base64"
    assert host["extensionBundle"]["version"].startswith("[4.")


# -- definitions over HTTP ---------------------------------------------------------------------


def test_definitions_are_created_read_listed_and_deleted(functions, services, app_env):
    doc = definition_doc(app_env[1])
    response, body = put_definition(functions, "vip", doc)
    assert response.status_code == 201 and body["name"] == "vip"
    response, _ = put_definition(functions, "vip", doc)
    assert response.status_code == 200
    response, body = call_http(
        functions, "export_get", "GET", "http://localhost/api/exports/vip", route={"name": "vip"}
    )
    assert response.status_code == 200 and body["destination"]["list_id"] == LIST_ID
    _, listing = call_http(functions, "exports_list", "GET", "http://localhost/api/exports")
    assert [e["name"] for e in listing["exports"]] == ["vip"]
    assert take_messages(services) == []  # saving never runs an export
    response, _ = call_http(
        functions,
        "export_delete",
        "DELETE",
        "http://localhost/api/exports/vip",
        route={"name": "vip"},
    )
    assert response.status_code == 204
    response, body = call_http(
        functions, "export_get", "GET", "http://localhost/api/exports/vip", route={"name": "vip"}
    )
    assert response.status_code == 404 and body["error"]["code"] == "not_found"
    response, _ = start(functions, "vip")
    assert response.status_code == 404  # a deleted export cannot run


def test_bad_definition_is_refused_naming_the_field(functions, services, app_env):
    doc = definition_doc(app_env[1])
    del doc["mapping"]["email"]
    response, body = put_definition(functions, "vip", doc)
    assert response.status_code == 400
    assert body["error"]["field"] == "mapping.email"
    doc = definition_doc(app_env[1], destination={"list_id": "not a list!"})
    response, body = put_definition(functions, "vip", doc)
    assert response.status_code == 400 and body["error"]["field"] == "destination.list_id"
    response, body = put_definition(functions, "vip", b"{not json")
    assert response.status_code == 400 and body["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("name", ["Bad_Name", "-x", "a" * 64, "../etc", ""])
def test_bad_names_are_400(functions, services, name):
    response, body = start(functions, name)
    assert response.status_code == 400 and body["error"]["field"] == "name"


def test_bad_run_id_and_query_are_400(functions, services, app_env):
    put_definition(functions, "vip", definition_doc(app_env[1]))
    response, body = get_run(functions, "vip", "not-a-run")
    assert response.status_code == 400 and body["error"]["field"] == "run_id"
    response, body = start(functions, "vip", dry_run="maybe")
    assert response.status_code == 400 and body["error"]["field"] == "dry_run"
    response, _ = get_run(functions, "vip", "20260101T000000Z-abcdef")
    assert response.status_code == 404


# -- runs --------------------------------------------------------------------------------------


def test_http_run_is_queued_executed_and_reported(
    functions, services, app_env, segments, klaviyo_sandbox, key_vault
):
    summary = write_sample_export(segments, folder="CI/Klaviyo", segment="Vips", rows=1200)
    put_definition(functions, "vip", definition_doc(app_env[1], folder="CI/Klaviyo"))
    response, body = start(functions, "vip")
    assert response.status_code == 202
    run_id = body["run_id"]
    assert response.headers["Location"] == f"/api/exports/vip/runs/{run_id}"  # not from Host
    _, status = get_run(functions, "vip", run_id)
    assert status["status"] == "queued"

    work(functions, services)

    response, status = get_run(functions, "vip", run_id)
    assert response.status_code == 200 and status["status"] == "succeeded"
    assert status["summary"]["rows"]["sent"] == summary.unique_valid_emails
    assert status["summary"]["accounted"] is True
    assert status["report"]["rows"]["read"] == summary.rows
    assert len(klaviyo_sandbox.state.list_emails(LIST_ID)) == summary.unique_valid_emails
    assert key_vault.request_count("klaviyo-api-key") == 1
    _, listing = call_http(functions, "exports_list", "GET", "http://localhost/api/exports")
    assert listing["exports"][0]["last_run"]["run_id"] == run_id
    assert listing["exports"][0]["last_run"]["status"] == "succeeded"


def test_dry_run_over_http_sends_nothing(functions, services, app_env, segments, klaviyo_sandbox):
    write_small_export(segments, [("1", "a@example.com", "A", "", "NL")])
    put_definition(functions, "vip", definition_doc(app_env[1]))
    _, body = start(functions, "vip", dry_run="true")
    work(functions, services)
    _, status = get_run(functions, "vip", body["run_id"])
    assert status["status"] == "succeeded" and status["report"]["dry_run"] is True
    assert klaviyo_sandbox.state.list_emails(LIST_ID) == []


def test_concurrent_posts_queue_one_run_and_409_the_others(functions, services, app_env, segments):
    write_small_export(segments, [("1", "a@example.com", "A", "", "NL")])
    put_definition(functions, "vip", definition_doc(app_env[1]))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: start(functions, "vip"), range(4)))
    codes = sorted(r.status_code for r, _ in results)
    assert codes == [202, 409, 409, 409]
    winner = next(b["run_id"] for r, b in results if r.status_code == 202)
    assert all(b["error"]["run_id"] == winner for r, b in results if r.status_code == 409)
    assert len(take_messages(services)) == 1


def test_missing_secret_fails_the_run_with_that_reason(
    functions, services, app_env, segments, key_vault
):
    write_small_export(segments, [("1", "a@example.com", "A", "", "NL")])
    doc = definition_doc(app_env[1])
    doc["connection"]["api_key_secret"] = "no-such-secret"
    put_definition(functions, "vip", doc)
    _, body = start(functions, "vip")
    work(functions, services)
    _, status = get_run(functions, "vip", body["run_id"])
    assert status["status"] == "failed"
    assert "no-such-secret" in status["error"] and "not found" in status["error"]


def test_denied_secret_fails_the_run_and_frees_the_export(
    functions, services, app_env, segments, key_vault
):
    write_small_export(segments, [("1", "a@example.com", "A", "", "NL")])
    put_definition(functions, "vip", definition_doc(app_env[1]))
    key_vault.deny("klaviyo-api-key")
    _, body = start(functions, "vip")
    work(functions, services)
    _, status = get_run(functions, "vip", body["run_id"])
    assert status["status"] == "failed" and "denied" in status["error"]
    response, _ = start(functions, "vip")
    assert response.status_code == 202  # the failed run no longer blocks the export


def test_poisoned_message_marks_the_run_failed(functions, services, app_env, segments):
    write_small_export(segments, [("1", "a@example.com", "A", "", "NL")])
    put_definition(functions, "vip", definition_doc(app_env[1]))
    _, body = start(functions, "vip")
    (message,) = take_messages(services)
    services.runs.update("vip", body["run_id"], last_error="KlaviyoRetriableError: 503")
    functions["run_poisoned"].get_user_function()(message)
    _, status = get_run(functions, "vip", body["run_id"])
    assert status["status"] == "failed"
    assert status["error"].startswith("gave up") and "503" in status["error"]


def test_schedule_tick_runs_changed_segments_only(
    functions, services, app_env, segments, klaviyo_sandbox
):
    tick = functions["scheduled_exports"].get_user_function()
    write_small_export(segments, [("1", "a@example.com", "A", "", "NL")], stamp="2026/11/01/0900")
    put_definition(functions, "vip", definition_doc(app_env[1]))
    off = definition_doc(app_env[1], enabled=False)
    put_definition(functions, "off", off)

    tick(TimerRequest())
    messages = take_messages(services)
    assert [json.loads(m.get_body())["export"] for m in messages] == ["vip"]
    assert json.loads(messages[0].get_body())["trigger"] == "schedule"
    work(functions, services, messages)
    assert klaviyo_sandbox.state.list_emails(LIST_ID) == ["a@example.com"]

    tick(TimerRequest())
    assert take_messages(services) == []  # unchanged segment: skipped

    write_small_export(segments, [("2", "b@example.com", "B", "", "NL")], stamp="2026/11/02/0900")
    tick(TimerRequest())
    work(functions, services)
    assert klaviyo_sandbox.state.list_emails(LIST_ID) == ["a@example.com", "b@example.com"]
