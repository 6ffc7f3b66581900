"""The removal stage against the sandbox (real HTTP, Klaviyo's rate limits), and its exact
error paths through httpx.MockTransport."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import orjson
import pytest

from devtools.klaviyo_sandbox import DEFAULT_API_KEY, DEFAULT_LIST_ID
from shared.errors import KlaviyoFatalError
from shared.klaviyo import KlaviyoClient
from shared.removals import Leavers, RemovalResult, remove_leavers
from shared.retry import RetryPolicy

FAST_RETRY = RetryPolicy(max_attempts=8, backoff=0.01, max_backoff=0.05, rng=random.Random(1))


def import_body(emails: list[str]) -> bytes:
    profiles = [{"type": "profile", "attributes": {"email": e}} for e in emails]
    return orjson.dumps(
        {
            "data": {
                "type": "profile-bulk-import-job",
                "attributes": {"profiles": {"data": profiles}},
                "relationships": {"lists": {"data": [{"type": "list", "id": DEFAULT_LIST_ID}]}},
            }
        }
    )


async def export_adds(sandbox, client: KlaviyoClient, emails: list[str]) -> int:
    """Add ``emails`` to the list through an import job; its created_at in epoch ms."""
    job = await client.create_import_job(import_body(emails))
    deadline = time.monotonic() + 10
    while sandbox.state.job(job.id)["status"] != "complete":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    return (await client.get_import_job(job.id)).created_at_ms


def leavers_of(emails: list[str], first_added_ms: list[int]) -> Leavers:
    return Leavers(
        emails=emails,
        keys=np.arange(1, len(emails) + 1, dtype=np.uint64) * np.uint64(1_000_003),
        first_added_ms=np.asarray(first_added_ms, dtype=np.int64),
    )


def keys_of(leavers: Leavers, emails: set[str]) -> set[int]:
    return {int(k) for e, k in zip(leavers.emails, leavers.keys, strict=True) if e in emails}


def sandbox_client(sandbox) -> KlaviyoClient:
    return KlaviyoClient(DEFAULT_API_KEY, base_url=sandbox.url, retry=FAST_RETRY)


async def test_removes_what_the_export_added_and_keeps_the_rest(klaviyo_sandbox):
    form_past = datetime.now(UTC) - timedelta(days=10)
    klaviyo_sandbox.state.add_list_members(
        DEFAULT_LIST_ID, ["form0@x.io", "form1@x.io", "both@x.io"], joined_at=form_past
    )
    owned = [f"seg{i}@x.io" for i in range(1_150)]
    staying = [f"stay{i}@x.io" for i in range(30)]
    async with sandbox_client(klaviyo_sandbox) as client:
        first_added = await export_adds(klaviyo_sandbox, client, owned + staying + ["both@x.io"])
        # "late" (re)joined the list after this export's first add, another way: the list
        # keeps only the latest join, so it reads as the export's and goes.
        klaviyo_sandbox.state.add_list_members(DEFAULT_LIST_ID, ["late@x.io"])
        emails = [*owned, "both@x.io", "form0@x.io", "never@x.io", "late@x.io", "unknown@x.io"]
        firsts = [first_added] * (len(emails) - 1) + [0]
        klaviyo_sandbox.state.add_list_members(DEFAULT_LIST_ID, ["unknown@x.io"])
        leavers = leavers_of(emails, firsts)
        result = await remove_leavers(client, DEFAULT_LIST_ID, leavers)

    assert keys_of(leavers, {*owned, "late@x.io"}) == set(result.removed.tolist())
    assert keys_of(leavers, {"both@x.io", "form0@x.io", "unknown@x.io"}) == set(
        result.kept_not_owned.tolist()
    )
    assert keys_of(leavers, {"never@x.io"}) == set(result.gone.tolist())
    assert result.removed.dtype == np.uint64
    assert result.lookup_calls == 12  # 1,155 leavers, 100 a call
    assert result.removal_calls == 2  # 1,151 owned, 1,000 a call
    assert not result.dry_run
    assert klaviyo_sandbox.state.list_emails(DEFAULT_LIST_ID) == sorted(
        [*staying, "both@x.io", "form0@x.io", "form1@x.io", "unknown@x.io"]
    )
    operations = klaviyo_sandbox.state.stats()["operations"]
    assert operations["DELETE /api/lists/{id}/relationships/profiles"] == {"204": 2}
    assert operations["GET /api/lists/{id}/profiles"] == {"200": 12}


async def test_a_second_run_removes_nothing_more(klaviyo_sandbox):
    async with sandbox_client(klaviyo_sandbox) as client:
        first_added = await export_adds(klaviyo_sandbox, client, [f"p{i}@x.io" for i in range(5)])
        klaviyo_sandbox.state.add_list_members(
            DEFAULT_LIST_ID, ["form@x.io"], joined_at=datetime.now(UTC) - timedelta(days=1)
        )
        leavers = leavers_of(["p0@x.io", "p1@x.io", "form@x.io"], [first_added] * 3)
        first = await remove_leavers(client, DEFAULT_LIST_ID, leavers)
        second = await remove_leavers(client, DEFAULT_LIST_ID, leavers)
    assert len(first.removed) == 2 and len(first.kept_not_owned) == 1
    assert len(second.removed) == 0 and second.removal_calls == 0
    assert set(second.gone.tolist()) == set(first.removed.tolist())
    assert set(second.kept_not_owned.tolist()) == set(first.kept_not_owned.tolist())
    assert klaviyo_sandbox.state.list_emails(DEFAULT_LIST_ID) == [
        "form@x.io", "p2@x.io", "p3@x.io", "p4@x.io",
    ]  # fmt: skip


async def test_dry_run_looks_up_and_decides_but_writes_nothing(klaviyo_sandbox):
    async with sandbox_client(klaviyo_sandbox) as client:
        first_added = await export_adds(klaviyo_sandbox, client, ["a@x.io", "b@x.io"])
        leavers = leavers_of(["a@x.io", "b@x.io", "c@x.io"], [first_added] * 3)
        result = await remove_leavers(client, DEFAULT_LIST_ID, leavers, dry_run=True)
    assert result.dry_run and result.counts == {
        "removed": 2, "kept_not_owned": 0, "gone": 1, "lookup_calls": 1, "removal_calls": 0,
    }  # fmt: skip
    assert klaviyo_sandbox.state.list_emails(DEFAULT_LIST_ID) == ["a@x.io", "b@x.io"]
    operations = klaviyo_sandbox.state.stats()["operations"]
    assert not any(op.startswith(("DELETE", "POST /api/lists")) for op in operations)


async def test_joined_times_are_compared_at_whole_seconds(klaviyo_sandbox):
    first_added_s = 1_760_000_000.900
    klaviyo_sandbox.state.add_list_members(
        DEFAULT_LIST_ID, ["same-second@x.io"], joined_at=first_added_s - 0.8
    )
    klaviyo_sandbox.state.add_list_members(
        DEFAULT_LIST_ID, ["second-before@x.io"], joined_at=first_added_s - 0.901
    )
    leavers = leavers_of(
        ["same-second@x.io", "second-before@x.io"], [int(first_added_s * 1000)] * 2
    )
    async with sandbox_client(klaviyo_sandbox) as client:
        result = await remove_leavers(client, DEFAULT_LIST_ID, leavers)
    assert set(result.removed.tolist()) == keys_of(leavers, {"same-second@x.io"})
    assert set(result.kept_not_owned.tolist()) == keys_of(leavers, {"second-before@x.io"})


async def test_server_faults_are_retried_and_nothing_is_lost(sandbox_factory):
    sandbox = sandbox_factory(
        seed=5, fault_families=frozenset({"lists_read", "list_relationships"})
    )
    async with sandbox_client(sandbox) as client:
        first_added = await export_adds(sandbox, client, [f"f{i}@x.io" for i in range(1_500)])
        # One attempt in four fails (5xx or a dropped connection); eight attempts a call.
        sandbox.configure(error_rate=0.2, drop_rate=0.05)
        leavers = leavers_of([f"f{i}@x.io" for i in range(1_200)], [first_added] * 1_200)
        result = await remove_leavers(client, DEFAULT_LIST_ID, leavers)
        assert client.retries > 0
    assert len(result.removed) == 1_200 and len(result.gone) == len(result.kept_not_owned) == 0
    expected = sorted(f"f{i}@x.io" for i in range(1_200, 1_500))
    assert sandbox.state.list_emails(DEFAULT_LIST_ID) == expected


async def test_long_addresses_are_looked_up_in_smaller_batches(klaviyo_sandbox):
    # 100 valid addresses of ~200 characters would make a ~21 KB URL, over a server's 8 KB.
    long = [f"{'x' * 57}{i:03d}@{'d' * 60}.{'e' * 60}.example.com" for i in range(100)]
    async with sandbox_client(klaviyo_sandbox) as client:
        first_added = await export_adds(klaviyo_sandbox, client, long)
        result = await remove_leavers(
            client, DEFAULT_LIST_ID, leavers_of(long, [first_added] * 100)
        )
    assert len(result.removed) == 100
    assert result.lookup_calls == 4  # 29 addresses a call within the 6,000-byte budget
    assert klaviyo_sandbox.state.list_emails(DEFAULT_LIST_ID) == []


async def test_no_leavers_costs_no_call(klaviyo_sandbox):
    async with sandbox_client(klaviyo_sandbox) as client:
        result = await remove_leavers(client, DEFAULT_LIST_ID, leavers_of([], []))
    assert isinstance(result, RemovalResult) and result.counts == dict.fromkeys(
        ("removed", "kept_not_owned", "gone", "lookup_calls", "removal_calls"), 0
    )
    assert klaviyo_sandbox.state.stats()["requests"] == {}


def test_leaver_columns_must_line_up():
    with pytest.raises(ValueError, match="differ in length"):
        Leavers(
            emails=["a@x.io"], keys=np.zeros(2, np.uint64), first_added_ms=np.zeros(1, np.int64)
        )


# --- exact error paths (MockTransport) ---------------------------------------------------


def _mock_client(handler) -> KlaviyoClient:
    return KlaviyoClient(
        "pk_x",
        base_url="https://a.klaviyo.com",
        retry=FAST_RETRY,
        transport=httpx.MockTransport(handler),
    )


def _member(pid: str, email: str) -> dict:
    return {
        "type": "profile",
        "id": pid,
        "attributes": {"email": email, "joined_group_at": "2026-01-02T00:00:00Z"},
    }


async def test_a_profile_deleted_before_its_removal_counts_as_gone():
    deletes = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            data = [_member("P1", "a@x.io"), _member("P2", "b@x.io")]
            return httpx.Response(
                200, content=orjson.dumps({"data": data, "links": {"next": None}})
            )
        deletes.append(orjson.loads(request.content)["data"])
        if len(deletes) == 1:
            error = {
                "status": 404,
                "detail": "A profile with id 'P1' does not exist.",
                "source": {"pointer": "/data/0/id"},
            }
            return httpx.Response(404, content=orjson.dumps({"errors": [error]}))
        return httpx.Response(204)

    jan_1 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    leavers = leavers_of(["a@x.io", "b@x.io"], [jan_1, jan_1])
    async with _mock_client(handler) as client:
        result = await remove_leavers(client, "L1", leavers)
    assert [[d["id"] for d in batch] for batch in deletes] == [["P1", "P2"], ["P2"]]
    assert set(result.gone.tolist()) == keys_of(leavers, {"a@x.io"})
    assert set(result.removed.tolist()) == keys_of(leavers, {"b@x.io"})
    assert result.removal_calls == 2


async def test_a_fatal_error_stops_the_stage_without_naming_anyone():
    def handler(request: httpx.Request) -> httpx.Response:
        error = {
            "status": 404,
            "title": "Not found.",
            "detail": "A list with id 'L1' does not exist.",
        }
        return httpx.Response(404, content=orjson.dumps({"errors": [error]}))

    async with _mock_client(handler) as client:
        with pytest.raises(KlaviyoFatalError) as info:
            await remove_leavers(client, "L1", leavers_of(["secret.person@x.io"], [1]))
    assert info.value.status == 404
    assert "secret" not in str(info.value) and "secret" not in (info.value.url or "")
