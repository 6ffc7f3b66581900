"""Bad input, end to end through the function app, leaks no row value.

Each case saves a definition through the HTTP functions, runs it through the queue worker
and reads the run, the export and the list back through the API, as the Functions host
would. Every log line (DEBUG and up), run record, status blob, report and API response is
then searched for the e-mail addresses and phone numbers planted in the data: messages
must name files, lines and column positions, never values.
"""

from __future__ import annotations

import asyncio
import json
import logging

import azure.functions as func
import pytest

from shared.auth import PRINCIPAL_HEADER
from tests import test_function_app as function_app_tests
from tests.exports import MAPPING, OPTIONS, definition_doc, write_partitions
from tests.fixtures_app import admin_header

# The function app's fixtures (settings, Azurite, sandbox, Key Vault stand-in), by name.
app_env = function_app_tests.app_env
services = function_app_tests.services
take_messages = function_app_tests.take_messages

FOLDER = "CI_leak/KlaviyoExport"
SEGMENT = "Vips"
STAMP = "2026/11/01/0900"
COLUMNS = ("CustomerId", "Email", "FirstName", "Phone", "Country")
PLANTED_EMAILS = [f"planted.person{i}@leak-check.example" for i in range(6)]
PLANTED_PHONES = ["+31 6 1111 2222", "+31611112222", "0611112222", "+44 7400 999888"]
_OWN_LOGGERS = ("aiohttp", "devtools")  # the Klaviyo stand-in's own logs, not the app's


@pytest.fixture(scope="session")
def entry_points():
    """The functions' user code, called as the host calls it (indexed without
    ``get_functions``, which test_function_app's session fixture calls once)."""
    import function_app

    names = ["export_put", "export_get", "exports_list", "run_start", "run_get", "run_worker"]
    return {name: getattr(function_app, name)._function.get_user_function() for name in names}


def http(entry_points, name, method, route, *, body=None):
    request = func.HttpRequest(
        method,
        f"http://localhost/api/{'/'.join(route.values()) if route else 'exports'}",
        route_params=route,
        params={},
        body=json.dumps(body).encode() if body is not None else b"",
        headers={"content-type": "application/json", PRINCIPAL_HEADER: admin_header()},
    )
    response = entry_points[name](request)
    return response.status_code, response.get_body().decode()


def planted_row(i: int) -> str:
    return f"C-{i},{PLANTED_EMAILS[i % len(PLANTED_EMAILS)]},Zoë,{PLANTED_PHONES[i % 4]},NL"


def write(segments, files: list[bytes], *, header: bool, attributes=COLUMNS) -> None:
    write_partitions(
        segments,
        files,
        header=header,
        columns=tuple(attributes),
        folder=FOLDER,
        segment=SEGMENT,
        stamp=STAMP,
    )


def lines(*rows: str) -> bytes:
    return ("\r\n".join(rows) + "\r\n").encode()


HEADER = ",".join(COLUMNS)
CASES = {
    # The model says there is a header row; there is none: the "header" is data.
    "header-is-data": (
        {"header": True},
        [lines(planted_row(0), planted_row(1), planted_row(2))],
    ),
    # A later partition has no header although the first has one.
    "later-header-is-data": (
        {"header": True},
        [lines(HEADER, planted_row(0)), lines(planted_row(1), planted_row(2))],
    ),
    # No header and no attributes in the model: no column names at all.
    "no-column-names": (
        {"header": False, "attributes": ()},
        [lines(planted_row(0), planted_row(1))],
    ),
    # A later headerless partition whose records have another field count.
    "later-field-count": (
        {"header": False},
        [lines(planted_row(0)), lines(*(planted_row(i)[:-3] for i in range(5)))],
    ),
    # Damage inside a file: rejected rows, the run succeeds.
    "damaged-rows": (
        {"header": False},
        [
            lines(planted_row(0), planted_row(1))
            + b"C-2,planted.person2@leak-check.example\xff,X,+31611112222,NL\r\n"
            + lines(
                planted_row(3) + ",extra",
                "C-4,planted.person4@@leak-check.example,Zoe,+31 6 1111 2222,NL",
                f'C-5,planted.person5@leak-check.example,"{"z" * 140_000}",0611112222,NL',
                'C-6,planted.person0@leak-check.example,"open quote,+44 7400 999888,NL',
                planted_row(1),
            )
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_end_to_end_quotes_no_row_value(
    case, entry_points, services, app_env, blob_service, caplog
):
    options, files = CASES[case]
    segments = blob_service.get_container_client(app_env[1])
    write(segments, files, header=options["header"], attributes=options.get("attributes", COLUMNS))
    doc = definition_doc(
        app_env[1], folder=FOLDER, segment=SEGMENT, mapping=dict(MAPPING), options=dict(OPTIONS)
    )
    name = "leak-" + case
    caplog.set_level(logging.DEBUG)

    seen = [http(entry_points, "export_put", "PUT", {"name": name}, body={**doc, "name": name})]
    status, body = http(entry_points, "run_start", "POST", {"name": name})
    seen.append((status, body))
    run_id = json.loads(body)["run_id"]
    for message in take_messages(services):
        asyncio.run(entry_points["run_worker"](message))
    run = http(entry_points, "run_get", "GET", {"name": name, "run_id": run_id})
    seen += [
        run,
        http(entry_points, "export_get", "GET", {"name": name}),
        http(entry_points, "exports_list", "GET", {}),
    ]
    state = blob_service.get_container_client(services.settings.state_container)
    stored = [
        state.download_blob(blob.name).readall().decode("utf-8", "replace")
        for blob in state.list_blobs()
        if blob.name.endswith(".json") and (name in blob.name)
    ]
    logged = [
        record.getMessage() for record in caplog.records if not record.name.startswith(_OWN_LOGGERS)
    ]
    outcome = json.loads(run[1])
    if case == "damaged-rows":
        assert outcome["status"] == "succeeded"
        assert outcome["summary"]["accounted"] is True
        assert set(outcome["summary"]["rejected_by_reason"]) >= {
            "undecodable_row",
            "malformed_row",
            "invalid_email",
            "field_too_large",
            "unterminated_quote",
        }
    else:
        assert outcome["status"] == "failed" and outcome["error"]
    assert len(stored) >= 2 and logged  # the run wrote its records and logged its way
    everything = [text for _, text in seen] + stored + logged
    for text in everything:
        for planted in PLANTED_EMAILS + PLANTED_PHONES + ["planted.person", "leak-check"]:
            assert planted not in text, (planted, text[:300])
