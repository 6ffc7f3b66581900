"""`python -m shared`: run and validate with the settings the functions read."""

from __future__ import annotations

import json

import pytest

from shared.cli import main
from tests.exports import definition_doc, write_small_export


@pytest.fixture
def env(monkeypatch, storage_connection_string, klaviyo_sandbox):
    values = {
        "AzureWebJobsStorage": storage_connection_string,
        "SEGMENTS_STORAGE": storage_connection_string,
        "STATE_CONTAINER": "cli-state",
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
        "read": 3, "sent": 1, "rejected": 1, "duplicates": 1, "phones_dropped": 0,
    }  # fmt: skip
    assert klaviyo_sandbox.state.list_emails("Y6nRLr") == ["a@example.com"]


def test_dry_run_summary_is_human_readable(env, definition_file, capsys, klaviyo_sandbox):
    assert main(["run", str(definition_file), "--dry-run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 read = 1 sent + 1 rejected + 1 duplicates" in out
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
