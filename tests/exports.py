"""Helpers for tests that run exports: small hand-written segments and definitions."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import uuid
from pathlib import Path
from typing import Any

from azure.storage.blob import ContainerClient

from shared.definitions import parse_definition
from shared.export import RunOptions
from shared.keyvault import LocalApiKey
from shared.retry import RetryPolicy
from shared.runner import run_definition
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("CustomerId", "Email", "FirstName", "Phone", "Country")
FOLDER = "CustomerInsights_test/KlaviyoExport"
SEGMENT = "Vips"
# How the example definition maps COLUMNS.
MAPPING = {
    "email": "Email",
    "phone_number": "Phone",
    "external_id": "CustomerId",
    "first_name": "FirstName",
}
OPTIONS = {"phone_default_region": "NL", "phone_region_column": "Country"}
FAST_RETRY = RetryPolicy(max_attempts=12, backoff=0.02, max_backoff=0.2, rng=random.Random(3))


def write_small_export(
    container: ContainerClient,
    rows: list[tuple[str, ...]],
    *,
    folder: str = FOLDER,
    segment: str = SEGMENT,
    columns: tuple[str, ...] = COLUMNS,
    stamp: str = "2026/11/01/0900",
) -> str:
    """model.json + one headerless partition; returns the snapshot prefix."""
    prefix = f"{folder}/{segment}/{stamp}/"
    data_file = f"{prefix}{segment}_1.csv"
    model = {
        "name": "test",
        "version": "1.0",
        "entities": [
            {
                "$type": "LocalEntity",
                "name": segment,
                "attributes": [{"name": c, "dataType": "string"} for c in columns],
                "partitions": [
                    {
                        "name": f"{segment}_1",
                        "location": f"https://x.blob.core.windows.net/{container.container_name}/{data_file}",
                        "fileFormatSettings": {
                            "$type": "CsvFormatSettings",
                            "columnHeaders": False,
                        },
                    }
                ],
            }
        ],
    }
    container.upload_blob(f"{folder}/model.json", json.dumps(model), overwrite=True)
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerows(rows)
    container.upload_blob(data_file, b"\xef\xbb\xbf" + text.getvalue().encode(), overwrite=True)
    return prefix


def definition_doc(
    container: str, *, folder: str = FOLDER, segment: str = SEGMENT, **changes: Any
) -> dict[str, Any]:
    """The example definition pointed at a test export."""
    doc = json.loads((ROOT / "examples" / "vip-customers.json").read_text())
    doc["source"] = {"container": container, "folder": folder, "segment": segment}
    if segment == SEGMENT and folder == FOLDER:
        doc["mapping"], doc["options"] = dict(MAPPING), dict(OPTIONS)
    for key, value in changes.items():
        doc[key] = value
    return doc


def sandbox_settings(storage: str, klaviyo_url: str, *, state: str | None = None) -> Settings:
    """App settings for a run against Azurite and a Klaviyo sandbox. The state container
    is a new one unless named: it holds the sync state, which remembers what was sent."""
    return Settings.from_env(
        {
            "AzureWebJobsStorage": storage,
            "SEGMENTS_STORAGE": storage,
            "STATE_CONTAINER": state or f"state-{uuid.uuid4().hex[:12]}",
            "KLAVIYO_BASE_URL": klaviyo_url,
        }
    )


def write_partitions(
    container: ContainerClient,
    files: list[str | bytes],
    *,
    header: bool,
    columns: tuple[str, ...] = COLUMNS,
    folder: str = FOLDER,
    segment: str = SEGMENT,
    stamp: str = "2026/11/01/0900",
) -> list[str]:
    """model.json + partitions ``<segment>_<n>.csv`` (text gets a BOM, bytes go as they
    are); returns the blob names."""
    prefix = f"{folder}/{segment}/{stamp}/"
    names = [f"{prefix}{segment}_{n}.csv" for n in range(1, len(files) + 1)]
    settings = {"$type": "CsvFormatSettings", "columnHeaders": header}
    entity = {
        "$type": "LocalEntity",
        "name": segment,
        "attributes": [{"name": c, "dataType": "string"} for c in columns],
        "partitions": [
            {
                "name": name.rsplit("/", 1)[1],
                "location": f"https://x.blob.core.windows.net/{container.container_name}/{name}",
                "fileFormatSettings": settings,
            }
            for name in names
        ],
    }
    model = {"name": "test", "version": "1.0", "entities": [entity]}
    container.upload_blob(f"{folder}/model.json", json.dumps(model), overwrite=True)
    for name, content in zip(names, files, strict=True):
        data = content if isinstance(content, bytes) else b"\xef\xbb\xbf" + content.encode()
        container.upload_blob(name, data, overwrite=True)
    return names


def run(definition: dict[str, Any], settings: Settings, **options: Any) -> dict[str, Any]:
    """One run of ``definition`` (a document), as the functions run it; its report."""
    return asyncio.run(
        run_definition(
            parse_definition(definition),
            settings,
            provider=LocalApiKey("pk_test_sandbox"),
            client_kwargs={"retry": FAST_RETRY},
            options=RunOptions(poll_interval=0.05, **options),
        )
    )
