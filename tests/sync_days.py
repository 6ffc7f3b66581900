"""Helpers for mirror-sync tests: a segment of numbered people written day by day as
Customer Insights writes it (model.json + headerless partitions in a dated folder)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from azure.storage.blob import ContainerClient

from tests.exports import ROOT

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
) -> str:
    """One export run: ``rows`` split over ``partitions`` files; ``only`` writes just those
    partitions (1-based), as a half-written export looks. Returns the snapshot prefix."""
    prefix = f"{FOLDER}/{SEGMENT}/{stamp}/"
    names = [f"{prefix}{SEGMENT}_{n}.csv" for n in range(1, partitions + 1)]
    model = {
        "name": "sync-test",
        "version": "1.0",
        "entities": [
            {
                "$type": "LocalEntity",
                "name": SEGMENT,
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
    container.upload_blob(f"{FOLDER}/model.json", json.dumps(model), overwrite=True)
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
