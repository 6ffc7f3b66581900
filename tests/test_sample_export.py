"""The sample export generator: real layout, readable by SegmentReader, counts that add up."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime

import phonenumbers
import pytest
from emval import EmailValidator

import devtools.sample_export as sample_export
from devtools.sample_export import COLUMNS, main, write_sample_export
from shared.cdm import load_cdm
from shared.segments import SegmentReader, find_latest_snapshot

FOLDER = "CustomerInsights_5a7b/klaviyo"
TAKEN = datetime(2024, 5, 6, 7, 30, tzinfo=UTC)
PLAIN_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
EMAILS = EmailValidator(deliverable_address=False)


def read_back(container, segment: str):
    model = load_cdm(container, FOLDER)
    snapshot = find_latest_snapshot(container, FOLDER, segment)
    with SegmentReader(container, snapshot, model.entity(segment)) as reader:
        return snapshot, reader.columns, list(reader.rows())


def classify_email(raw: str) -> str:
    address = raw.strip()
    if not address:
        return "missing"
    plain = PLAIN_ADDRESS.fullmatch(address) is not None
    try:
        # emval allows a dotless domain (RFC 5321 does); Klaviyo does not.
        accepted = "." in EMAILS.validate_email(address).domain_name
    except Exception:
        accepted = False
    assert plain == accepted, f"the two validators disagree on {raw!r}"
    return "valid" if plain else "invalid"


def phone_is_valid(raw: str, country: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(raw, country))
    except phonenumbers.NumberParseException:
        return False


def test_small_export_reads_back_with_matching_counts(container):
    summary = write_sample_export(
        container, folder=FOLDER, segment="Newsletter", rows=2000, partitions=3, taken_at=TAKEN
    )
    snapshot, columns, rows = read_back(container, "Newsletter")

    assert snapshot.files == summary.files
    assert snapshot.prefix == summary.prefix == f"{FOLDER}/Newsletter/2024/05/06/0730/"
    assert snapshot.total_bytes == summary.bytes
    assert columns == tuple(name for name, _ in COLUMNS)
    assert len(rows) == summary.rows == 2000
    assert [r.error for r in rows if r.error] == []
    assert {r.file for r in rows} == set(summary.files)

    at = {name: i for i, name in enumerate(columns)}
    kinds: Counter[str] = Counter()
    seen: set[str] = set()
    phones: Counter[bool] = Counter()
    for row in rows:
        email = row.values[at["Email"]]
        kind = classify_email(email)
        if kind == "valid":
            key = email.strip().lower()
            kind = "duplicate" if key in seen else "unique"
            seen.add(key)
        kinds[kind] += 1
        phone = row.values[at["Phone"]]
        if phone:
            phones[phone_is_valid(phone, row.values[at["Country"]])] += 1

    assert kinds == {
        "unique": summary.unique_valid_emails,
        "duplicate": summary.duplicate_emails,
        "invalid": summary.invalid_emails,
        "missing": summary.missing_emails,
    }
    assert summary.duplicate_emails > 0 and summary.invalid_emails > 0
    assert phones == {True: summary.valid_phones, False: summary.invalid_phones}
    assert sum("\n" in r.values[at["City"]] for r in rows) == summary.multiline_rows


def test_dirty_data_has_what_real_exports_have(container):
    summary = write_sample_export(
        container, folder=FOLDER, segment="Big", rows=20_000, partitions=2, seed=3
    )
    _, columns, rows = read_back(container, "Big")
    values = [r.values for r in rows]
    at = {name: i for i, name in enumerate(columns)}
    emails = [v[at["Email"]] for v in values]
    names = {v[at["FirstName"]] for v in values} | {v[at["LastName"]] for v in values}
    cities = {v[at["City"]] for v in values}
    phones = [v[at["Phone"]] for v in values if v[at["Phone"]]]

    assert 0.005 < summary.invalid_emails / summary.rows < 0.02
    assert 0.01 < summary.duplicate_emails / summary.rows < 0.03
    assert any(e != e.strip() for e in emails)  # padded
    assert any(e.strip() != e.strip().lower() for e in emails)  # mixed case
    assert {"Zoë", "Ångström", "김"} <= names
    assert {"Washington, D.C.", "Den Haag\n(Zuid-Holland)"} <= cities
    assert "" in cities and "" in {v[at["FirstName"]] for v in values}
    assert any(p.startswith("+") for p in phones)  # E.164
    assert any(re.fullmatch(r"\(\d{3}\) \d{3}-\d{4}", p) for p in phones)  # US local
    assert any(p.startswith("020 ") for p in phones)  # NL / GB local
    assert 0.25 < summary.valid_phones / summary.rows < 0.35


def test_clean_export_has_nothing_to_reject(container):
    summary = write_sample_export(
        container, folder=FOLDER, segment="Clean", rows=1000, dirty=False, phone_share=0.5
    )
    assert summary.unique_valid_emails == 1000
    assert summary.invalid_emails == summary.duplicate_emails == summary.missing_emails == 0
    assert summary.invalid_phones == 0 and summary.multiline_rows == 0
    assert 400 < summary.valid_phones < 600


def test_header_and_gzip_variant(container):
    summary = write_sample_export(
        container,
        folder=FOLDER,
        segment="Zipped",
        rows=500,
        partitions=2,
        header=True,
        gzip_files=True,
    )
    assert all(name.endswith(".csv.gz") for name in summary.files)
    model = load_cdm(container, FOLDER)
    assert all(p.csv.header for p in model.entity("Zipped").partitions)
    _, columns, rows = read_back(container, "Zipped")
    assert columns[:2] == ("CustomerId", "Email")
    assert len(rows) == 500 and not any(r.error for r in rows)
    assert min(r.line for r in rows) == 2  # the header is line 1


def test_same_seed_same_bytes(container):
    first = write_sample_export(container, folder="a", segment="S", rows=300, taken_at=TAKEN)
    second = write_sample_export(container, folder="b", segment="S", rows=300, taken_at=TAKEN)
    other = write_sample_export(
        container, folder="c", segment="S", rows=300, taken_at=TAKEN, seed=8
    )

    def content(summary):
        return container.download_blob(summary.files[0]).readall()

    assert content(first) == content(second)
    assert content(first) != content(other)
    assert content(first).startswith("\ufeff".encode())


def test_model_json_points_at_the_files_and_keeps_other_segments(container):
    one = write_sample_export(container, folder=FOLDER, segment="One", rows=10, partitions=2)
    write_sample_export(container, folder=FOLDER, segment="Two", rows=10)
    model = json.loads(container.download_blob(f"{FOLDER}/model.json").readall())
    assert [e["name"] for e in model["entities"]] == ["One", "Two"]
    locations = [p["location"] for p in model["entities"][0]["partitions"]]
    account = container.account_name
    assert locations == [
        f"https://{account}.blob.core.windows.net/{container.container_name}/{name}"
        for name in one.files
    ]
    settings = model["entities"][0]["partitions"][0]["fileFormatSettings"]
    assert settings["$type"] == "CsvFormatSettings"
    assert settings["columnHeaders"] is False


def test_files_are_staged_in_blocks(container, monkeypatch):
    monkeypatch.setattr(sample_export, "BLOCK_SIZE", 16 * 1024)
    monkeypatch.setattr(sample_export, "_CHECK_EVERY", 32)
    summary = write_sample_export(container, folder=FOLDER, segment="Blocks", rows=2000)
    committed, _ = container.get_blob_client(summary.files[0]).get_block_list("committed")
    # ~270 KB in blocks of about BLOCK_SIZE: the file was never built whole.
    assert len(committed) > 10
    assert max(block.size for block in committed) < 24 * 1024
    _, _, rows = read_back(container, "Blocks")
    assert len(rows) == 2000 and not any(r.error for r in rows)


def test_bad_arguments():
    with pytest.raises(ValueError):
        write_sample_export(None, folder="f", segment="s", rows=10, partitions=0)


def test_command_line(container, storage_connection_string, capsys):
    code = main(
        [
            "--connection-string",
            storage_connection_string,
            "--container",
            container.container_name,
            "--folder",
            FOLDER,
            "--segment",
            "Cli",
            "--rows",
            "50",
            "--partitions",
            "2",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"] == 50
    assert len(printed["files"]) == 2
    _, _, rows = read_back(container, "Cli")
    assert len(rows) == 50
