"""The data plane's output, pinned: the import-job payloads and the rejected rows of a run
over the golden fixture (tests/golden.py) hash to the values in tests/golden_data_plane.json.

They were recorded with the row-by-row path before the columnar rewrite, so this test is the
proof that the rewrite changed nothing but speed. Change them only in a commit that says
which behaviour changed and why: ``UPDATE_GOLDEN=1 pytest tests/test_golden.py`` rewrites
the file.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import random
from pathlib import Path

import httpx
import pytest

from shared.definitions import parse_definition
from shared.export import ExportRun, RunOptions
from shared.retry import RetryPolicy
from shared.runner import klaviyo_factory, segments_container
from shared.runs import BlobRunStore
from shared.settings import Settings
from shared.state import open_state
from tests.exports import sandbox_settings
from tests.golden import ROWS, definition_doc, write_golden_fixture

GOLDEN = Path(__file__).with_name("golden_data_plane.json")
GOLDEN_RUN_ID = "20260101T000000Z-901d00"  # a valid run id: run blobs are named by it
FAST_RETRY = RetryPolicy(max_attempts=12, backoff=0.02, max_backoff=0.2, rng=random.Random(5))


class HashingTransport(httpx.AsyncBaseTransport):
    """Forwards to the sandbox, keeping the SHA-256 of every import-job body in order."""

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.sizes: list[int] = []
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("bulk-import-jobs"):
            body = await request.aread()
            self.payloads.append(hashlib.sha256(body).hexdigest())
            self.sizes.append(len(body))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture
def settings(storage_connection_string, klaviyo_sandbox) -> Settings:
    return sandbox_settings(storage_connection_string, klaviyo_sandbox.url)


def _rejected_digest(blob_service, report, settings) -> tuple[int, str]:
    data = (
        blob_service.get_container_client(settings.state_container)
        .download_blob(report["rejected_rows_blob"])
        .readall()
        .decode("utf-8")
    )
    rows = list(csv.reader(io.StringIO(data, newline="")))[1:]
    # Import errors arrive while the reader still books its own rejects: sort for a digest
    # that does not depend on timing.
    canonical = json.dumps(sorted(rows), ensure_ascii=False).encode("utf-8")
    return len(rows), hashlib.sha256(canonical).hexdigest()


def test_the_data_plane_reproduces_the_golden_payloads_and_rejected_rows(
    container, settings, blob_service, klaviyo_sandbox
):
    summary = write_golden_fixture(container)
    definition = parse_definition(definition_doc(container.container_name))
    transport = HashingTransport()

    async def api_key() -> str:
        return "pk_test_sandbox"

    # In this process, partitions in file order, one job in flight: the payloads reach
    # the transport in the order they were packed.
    run = ExportRun(
        definition,
        segments=segments_container(definition, settings),
        client_factory=klaviyo_factory(settings, retry=FAST_RETRY, transport=transport),
        api_key=api_key,
        run_id=GOLDEN_RUN_ID,
        store=BlobRunStore(open_state(settings), definition.name, GOLDEN_RUN_ID),
        options=RunOptions(max_in_flight=1),
    )
    report = asyncio.run(run.execute())
    rejected, rejected_sha = _rejected_digest(blob_service, report, settings)
    observed = {
        "rows": report["rows"],
        "rejected_by_reason": report["rejected_by_reason"],
        "jobs_planned": report["jobs"]["planned"],
        "payload_bytes": transport.sizes,
        "payload_sha256": transport.payloads,
        "rejected_rows": rejected,
        "rejected_rows_sha256": rejected_sha,
    }
    assert report["accounted"] is True
    assert report["rows"]["read"] > ROWS
    assert summary.rows == ROWS
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(observed, indent=2) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert observed["rows"] == golden["rows"]
    assert observed["rejected_by_reason"] == golden["rejected_by_reason"]
    assert observed["payload_bytes"] == golden["payload_bytes"]
    assert observed == golden
