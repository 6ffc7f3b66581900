"""Helpers for mirror-sync tests: a segment of numbered people written day by day as
Customer Insights writes it (model.json + headerless partitions in a dated folder)."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from azure.storage.blob import ContainerClient

from shared.settings import Settings
from tests.exports import ROOT, sandbox_settings
from tests.exports import run as run  # the mirror-sync tests take it from here

FOLDER = "CustomerInsights_sync/KlaviyoExport"
SEGMENT = "Churners"
COLUMNS = ("CustomerId", "Email", "FirstName", "Tier")
LIST_ID = "Y6nRLr"


def email(i: int) -> str:
    return f"p{i:05d}@example.com"


def person(i: int, version: int = 0) -> tuple[str, ...]:
    """Person ``i``; another ``version`` changes an attribute (the first name)."""
    return (f"C{i}", email(i), f"Name{i}" + "v" * version, "gold" if i % 3 else "silver")


def people(ids: Iterable[int], changed: Iterable[int] = (), version: int = 1) -> list[tuple]:
    bump = set(changed)
    return [person(i, version if i in bump else 0) for i in ids]


def write_day(
    container: ContainerClient,
    rows: Sequence[tuple[str, ...]],
    stamp: str,
    *,
    partitions: int = 3,
    only: Sequence[int] | None = None,
    folder: str = FOLDER,
    segment: str = SEGMENT,
) -> str:
    """One export run: ``rows`` split over ``partitions`` files; ``only`` writes just those
    partitions (1-based), as a half-written export looks. Returns the snapshot prefix."""
    prefix = f"{folder}/{segment}/{stamp}/"
    names = [f"{prefix}{segment}_{n}.csv" for n in range(1, partitions + 1)]
    model = {
        "name": "sync-test",
        "version": "1.0",
        "entities": [
            {
                "$type": "LocalEntity",
                "name": segment,
                "attributes": [{"name": c, "dataType": "string"} for c in COLUMNS],
                "partitions": [
                    {
                        "name": name.rsplit("/", 1)[1][:-4],
                        "location": f"https://x.blob.core.windows.net/"
                        f"{container.container_name}/{name}",
                        "fileFormatSettings": {
                            "$type": "CsvFormatSettings",
                            "columnHeaders": False,
                        },
                    }
                    for name in names
                ],
            }
        ],
    }
    container.upload_blob(f"{folder}/model.json", json.dumps(model), overwrite=True)
    size = -(-len(rows) // partitions)
    for n, name in enumerate(names, start=1):
        if only is not None and n not in only:
            continue
        text = io.StringIO()
        csv.writer(text, lineterminator="\r\n").writerows(rows[(n - 1) * size : n * size])
        container.upload_blob(name, b"\xef\xbb\xbf" + text.getvalue().encode(), overwrite=True)
    return prefix


def sync_definition(container: str, **changes: Any) -> dict[str, Any]:
    doc = json.loads((ROOT / "examples" / "vip-customers.json").read_text())
    doc["name"] = "churners"
    doc["source"] = {"container": container, "folder": FOLDER, "segment": SEGMENT}
    doc["destination"] = {"list_id": LIST_ID}
    doc["mapping"] = {
        "email": "Email",
        "external_id": "CustomerId",
        "first_name": "FirstName",
        "properties": {"tier": {"column": "Tier", "type": "string"}},
    }
    doc["options"] = {}
    doc["sync"] = {"mode": "mirror", "max_removal_percent": 10}
    doc.update(changes)
    return doc


def accounted(report: dict[str, Any]) -> bool:
    rows = report["rows"]
    parts = rows["sent"] + rows["unchanged"] + rows["rejected"] + rows["duplicates"]
    return report["accounted"] is True and rows["read"] == parts


N = 2000
FORM_IN_SEGMENT = [email(i) for i in range(40)]  # signed up by a form, also in the segment
FORM_ONLY = [f"form{i}@example.com" for i in range(40)]  # signed up by a form only
REMOVE = "DELETE /api/lists/{id}/relationships/profiles"
WRITES = ("POST /api/profile-bulk-import-jobs", REMOVE)


def sync_settings(storage_connection_string: str, sandbox_url: str) -> Settings:
    """Settings for one test: the sandbox, and a state container (sync state) of its own."""
    return sandbox_settings(storage_connection_string, sandbox_url)


def on_list(sandbox: Any, list_id: str = LIST_ID) -> set[str]:
    return {m["email"] for m in sandbox.state.list_members(list_id)}


def operations(sandbox: Any) -> dict[str, int]:
    """Requests per operation that Klaviyo answered with success."""
    counts = {}
    for operation, by_status in sandbox.state.stats()["operations"].items():
        counts[operation] = sum(n for status, n in by_status.items() if str(status)[0] == "2")
    return counts


def sign_up_form(sandbox: Any) -> None:
    """Members who joined before the export existed (an hour ago)."""
    sandbox.state.add_list_members(
        LIST_ID, FORM_IN_SEGMENT + FORM_ONLY, joined_at=time.time() - 3600
    )
