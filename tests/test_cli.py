"""`python -m shared`: run and validate with the settings the functions read."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from shared.cli import main
from tests.exports import definition_doc, write_small_export


@pytest.fixture
def env(monkeypatch, storage_connection_string, klaviyo_sandbox):
    values = {
        "AzureWebJobsStorage": storage_connection_string,
        "SEGMENTS_STORAGE": storage_connection_string,
        "STATE_CONTAINER": f"state-{uuid.uuid4().hex[:12]}",  # sync state per test
        "KLAVIYO_BASE_URL": klaviyo_sandbox.url,
        "KLAVIYO_API_KEY": "pk_test_sandbox",
    }
    monkeypatch.delenv("KEY_VAULT_URL", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def definition_file(tmp_path, container):
    write_small_export(
        container,
        [("1", "a@example.com", "A", "", "NL"), ("2", "nope", "B", "", "NL"),
         ("3", " A@Example.com ", "A", "", "NL")],
    )  # fmt: skip
    path = tmp_path / "vip.json"
    path.write_text(json.dumps(definition_doc(container.container_name)))
    return path


def test_run_prints_a_report_whose_counts_add_up(env, definition_file, capsys, klaviyo_sandbox):
    assert main(["run", str(definition_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == {
        "read": 3, "sent": 1, "unchanged": 0, "rejected": 1, "duplicates": 1,
        "phones_dropped": 0,
    }  # fmt: skip
    assert klaviyo_sandbox.state.list_emails("Y6nRLr") == ["a@example.com"]


def test_dry_run_summary_is_human_readable(env, definition_file, capsys, klaviyo_sandbox):
    assert main(["run", str(definition_file), "--dry-run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 read = 1 sent + 0 unchanged + 1 rejected + 1 duplicates" in out
    assert "invalid_email" in out
    assert "a@example.com" not in out  # no e-mail address on the console
    assert klaviyo_sandbox.state.list_emails("Y6nRLr") == []


def test_validate_finds_the_snapshot_and_maps_the_columns(env, definition_file, capsys):
    assert main(["validate", str(definition_file)]) == 0
    assert "ok   vip-customers: snapshot CustomerInsights_test/KlaviyoExport/Vips/" in (
        capsys.readouterr().out
    )


def test_validate_names_the_missing_column(env, definition_file, capsys):
    doc = json.loads(definition_file.read_text())
    doc["mapping"]["first_name"] = "GivenName"
    definition_file.write_text(json.dumps(doc))
    assert main(["validate", str(definition_file)]) == 2  # an error, not "counts do not add up"
    out = capsys.readouterr().out
    assert "FAIL vip-customers" in out and "GivenName" in out and "mapping.first_name" in out


def test_invalid_definition_file_is_an_error_naming_the_field(env, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "x"}))
    assert main(["run", str(path)]) == 2
    assert "bad.json" in capsys.readouterr().err


def test_missing_setting_is_named(monkeypatch, definition_file, capsys):
    monkeypatch.delenv("SEGMENTS_STORAGE", raising=False)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    assert main(["run", str(definition_file)]) == 2
    assert "SEGMENTS_STORAGE" in capsys.readouterr().err


# -- errors a user can act on: one line, exit 2 --------------------------------------------


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in err and "RequestId" not in err
    return err


@pytest.fixture
def unreachable_storage(monkeypatch):
    """Settings whose storage nobody answers: any storage call would hang, then fail."""
    from devtools.azurite import connection_string

    nowhere = connection_string(1, 1)
    monkeypatch.setenv("AzureWebJobsStorage", nowhere)
    monkeypatch.setenv("SEGMENTS_STORAGE", nowhere)
    monkeypatch.delenv("KEY_VAULT_URL", raising=False)


@pytest.mark.parametrize("ref", ["../../x", "vip\n", "Vip Customers"])
def test_a_bad_export_name_is_refused_before_any_storage_call(unreachable_storage, capsys, ref):
    assert main(["run", ref]) == 2
    assert "export name" in _one_line_error(capsys)
    assert main(["validate", "ok-name", ref]) == 2
    assert "export name" in _one_line_error(capsys)


@pytest.mark.parametrize("run_id", ["../../x", "20260101T000000Z-abcdef\n", "latest"])
def test_a_bad_run_id_is_refused_before_any_storage_call(unreachable_storage, capsys, run_id):
    assert main(["run", "vip", "--run-id", run_id]) == 2
    assert "--run-id: run id must look like" in _one_line_error(capsys)


def test_a_missing_source_container_names_the_container_and_the_setting(env, tmp_path, capsys):
    path = tmp_path / "vip.json"
    path.write_text(json.dumps(definition_doc("no-such-container")))
    assert main(["run", str(path), "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert "container 'no-such-container' not found" in err and "SEGMENTS_STORAGE" in err


def test_a_wrong_storage_key_names_the_setting(env, definition_file, monkeypatch, capsys):
    from devtools.azurite import ACCOUNT_KEY

    wrong = env["AzureWebJobsStorage"].replace(ACCOUNT_KEY, "A" * 86 + "==")
    monkeypatch.setenv("AzureWebJobsStorage", wrong)
    monkeypatch.setenv("STATE_CONTAINER", "cli-wrong-key")  # not yet created in this process
    assert main(["run", str(definition_file), "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert "refused the credentials" in err and "AzureWebJobsStorage" in err
    assert "A" * 20 not in err  # never the key


def test_a_malformed_connection_string_names_the_setting(env, definition_file, monkeypatch, capsys):
    monkeypatch.setenv("SEGMENTS_STORAGE", "AccountName=x;AccountKey=secretvalue")
    assert main(["run", str(definition_file), "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert "SEGMENTS_STORAGE" in err and "secretvalue" not in err


def test_storage_that_cannot_be_reached_names_the_host_and_the_setting(monkeypatch):
    from azure.core.exceptions import ServiceRequestError
    from azure.storage.blob import BlobServiceClient

    from devtools.azurite import connection_string
    from shared.failures import describe_failure
    from shared.settings import Settings

    nowhere = connection_string(1, 1)
    client = BlobServiceClient.from_connection_string(nowhere, retry_total=0)
    with pytest.raises(ServiceRequestError) as caught:
        list(client.get_container_client("abc").list_blobs())
    settings = Settings.from_env(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "SEGMENTS_STORAGE": nowhere}
    )
    message = describe_failure(caught.value, settings)
    assert message.startswith("cannot reach storage at 127.0.0.1:1")
    assert message.endswith("check SEGMENTS_STORAGE") and "refused" in message.lower()


def test_validate_lists_the_good_definitions_and_reports_a_corrupt_one(
    env, container, blob_service, capsys
):
    write_small_export(container, [("1", "a@example.com", "A", "", "NL")])
    state = blob_service.get_container_client(env["STATE_CONTAINER"])
    if not state.exists():
        state.create_container()
    for blob in state.list_blobs(name_starts_with="definitions/"):
        state.delete_blob(blob.name)
    doc = {**definition_doc(container.container_name), "name": "good"}
    state.upload_blob("definitions/good.json", json.dumps(doc))
    state.upload_blob("definitions/broken.json", b"\xff not json")
    assert main(["validate"]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("FAIL broken: definitions/broken.json: not UTF-8")
    assert lines[1].startswith("ok   good: snapshot ")


# -- the job deadline -------------------------------------------------------------------------


def test_job_deadline_stops_a_run_whose_job_never_finishes(
    env, definition_file, monkeypatch, capsys, sandbox_factory
):
    stuck = sandbox_factory(job_delay=3600)  # Klaviyo accepts the job, never starts it
    monkeypatch.setenv("KLAVIYO_BASE_URL", stuck.url)
    started = time.monotonic()
    assert main(["run", str(definition_file), "--no-progress", "--job-deadline", "1"]) == 2
    assert time.monotonic() - started < 60  # not the default hour
    err = _one_line_error(capsys)
    assert "still queued after 1s" in err and "resume it with --run-id " in err


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_job_deadline_must_be_a_positive_number(env, definition_file, capsys, value):
    with pytest.raises(SystemExit) as caught:
        main(["run", str(definition_file), "--job-deadline", value])
    assert caught.value.code == 2
    assert "--job-deadline" in capsys.readouterr().err


def test_help_documents_the_job_deadline(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--job-deadline SECONDS" in capsys.readouterr().out


@pytest.mark.parametrize("held", ["export", "connection"])
def test_run_refuses_while_another_run_holds_the_export_or_the_connection(
    env, definition_file, capsys, klaviyo_sandbox, held
):
    from shared.locks import ConnectionLock, RunLock
    from shared.settings import Settings
    from shared.state import open_state

    state = open_state(Settings.from_env())
    doc = json.loads(definition_file.read_text())
    if held == "export":
        lock = RunLock(state, doc["name"])
    else:
        lock = ConnectionLock(state, doc["connection"]["api_key_secret"])
    lease = lock.acquire("20261201T000000Z-abcdef", "some-other-export")
    try:
        assert main(["run", str(definition_file), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "20261201T000000Z-abcdef" in err and "Traceback" not in err
        assert klaviyo_sandbox.state.stats()["operations"] == {}  # nothing was sent
        # A dry run sends nothing, so it does not wait for the connection.
        expected = 2 if held == "export" else 0
        assert main(["run", str(definition_file), "--dry-run", "--no-progress"]) == expected
    finally:
        lease.release()
    assert main(["run", str(definition_file), "--no-progress"]) == 0
