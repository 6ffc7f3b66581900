"""Structure before sending: every partition's header or field count is checked before the
first job, and the messages never quote a cell of a data file."""

from __future__ import annotations

import pytest

from shared.definitions import parse_definition
from shared.errors import InputError
from shared.runner import check_definition
from shared.settings import Settings
from tests.exports import definition_doc, sandbox_settings, write_partitions
from tests.exports import run as run_export

FOLDER = "CI_struct/KlaviyoExport"
SEGMENT = "Vips"
STAMP = "2026/11/01/0900"
COLUMNS = ("CustomerId", "Email", "FirstName", "Phone", "Country")


@pytest.fixture
def settings(storage_connection_string, klaviyo_sandbox) -> Settings:
    return sandbox_settings(storage_connection_string, klaviyo_sandbox.url)


def rows(first: int, count: int) -> str:
    return "".join(
        f"{i},person{i}@example.com,P{i},+3161234{i % 10000:04d},NL\r\n"
        for i in range(first, first + count)
    )


def write(container, files: list[str | bytes], *, header: bool) -> None:
    texts = [f if isinstance(f, bytes) else f.encode() for f in files]
    write_partitions(
        container,
        [b"\xef\xbb\xbf" + t for t in texts],
        header=header,
        columns=COLUMNS,
        folder=FOLDER,
        segment=SEGMENT,
        stamp=STAMP,
    )


def run(container, settings):
    doc = definition_doc(container.container_name, folder=FOLDER, segment=SEGMENT)
    doc["mapping"] = {"email": "Email", "phone_number": "Phone", "first_name": "FirstName"}
    return run_export(doc, settings)


def sent_nothing(sandbox) -> bool:
    return "bulk_import_create" not in sandbox.state.stats()["requests"]


def test_a_later_partition_whose_header_differs_fails_before_anything_is_sent(
    container, settings, klaviyo_sandbox
):
    header = ",".join(COLUMNS) + "\r\n"
    changed = header.replace("FirstName", "GivenName")
    write(
        container,
        [header + rows(1, 30_000), header + rows(30_001, 10), changed + rows(9, 9)],
        header=True,
    )
    with pytest.raises(InputError) as caught:
        run(container, settings)
    assert caught.value.file.endswith(f"{SEGMENT}_3.csv") and caught.value.line == 1
    assert "column 3 differs" in str(caught.value)
    assert "GivenName" not in str(caught.value)
    assert sent_nothing(klaviyo_sandbox)


def test_a_later_partition_with_another_field_count_fails_before_anything_is_sent(
    container, settings, klaviyo_sandbox
):
    wrong = "".join(f"{i},person{i}@example.com,+31612345678\r\n" for i in range(50))
    write(container, [rows(1, 30_000), wrong], header=False)
    with pytest.raises(InputError) as caught:
        run(container, settings)
    assert caught.value.file.endswith(f"{SEGMENT}_2.csv") and caught.value.line == 1
    assert "have 3 fields where the segment has 5 columns" in str(caught.value)
    assert "person" not in str(caught.value) and "+316" not in str(caught.value)
    assert sent_nothing(klaviyo_sandbox)


def test_a_few_malformed_rows_are_rejected_not_structural(container, settings, klaviyo_sandbox):
    text = "1,short\r\n" + rows(2, 40) + "3,too,many,fields,here,now\r\n"
    write(container, [text], header=False)
    report = run(container, settings)
    assert report["rejected_by_reason"] == {"malformed_row": 2}
    assert report["rows"]["sent"] == 40


def test_a_header_setting_on_headerless_files_quotes_no_row_value(
    container, settings, klaviyo_sandbox
):
    # The model says there is a header row; the first row is data.
    write(container, [rows(1, 20), rows(21, 20)], header=True)
    with pytest.raises(InputError) as caught:
        run(container, settings)
    message = str(caught.value)
    assert caught.value.field == "mapping.email"
    assert "person1@example.com" not in message and "+3161234" not in message
    assert "not shown: the first row may be data" in message
    assert sent_nothing(klaviyo_sandbox)


def test_damage_inside_files_rejects_rows_and_the_run_goes_on(
    container, settings, klaviyo_sandbox, blob_service
):
    # Undecodable bytes at row 20,001, a huge cell, and a quote left open near the end:
    # each damaged record is rejected with a reason, every line is accounted for, and
    # the rest is sent.
    first = (
        rows(1, 20_000).encode()
        + b"20001,bad\xff@example.com,X,,NL\r\n"
        + rows(20_002, 100).encode()
    )
    second = rows(30_001, 50) + f'30051,big@example.com,"{"z" * 140_000}",,NL\r\n'
    second += rows(30_052, 20) + '30072,open@example.com,"never closed,,NL\r\n' + rows(40_000, 3)
    write(container, [first, second], header=False)
    report = run(container, settings)
    assert report["accounted"] is True
    assert report["rejected_by_reason"] == {
        "field_too_large": 1,
        "undecodable_row": 1,
        "unterminated_quote": 4,
    }
    assert report["rows"]["read"] == 20_101 + 50 + 1 + 20 + 4
    assert report["rows"]["sent"] == 20_100 + 50 + 20
    rejected = (
        blob_service.get_container_client(settings.state_container)
        .download_blob(report["rejected_rows_blob"])
        .readall()
        .decode()
    )
    assert ",20001,undecodable_row," in rejected
    assert ",51,field_too_large," in rejected
    assert ",72,unterminated_quote," in rejected and ",75,unterminated_quote," in rejected


def test_validate_checks_the_same_structure_as_a_run(container, settings, klaviyo_sandbox):
    wrong = "".join(f"{i},person{i}@example.com,+31612345678\r\n" for i in range(50))
    write(container, [rows(1, 100), wrong], header=False)
    doc = definition_doc(container.container_name, folder=FOLDER, segment=SEGMENT)
    doc["mapping"] = {"email": "Email", "phone_number": "Phone", "first_name": "FirstName"}
    with pytest.raises(InputError) as caught:
        check_definition(parse_definition(doc), settings)
    assert caught.value.file.endswith(f"{SEGMENT}_2.csv")
    assert "person" not in str(caught.value)
    assert sent_nothing(klaviyo_sandbox)
