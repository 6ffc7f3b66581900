"""One Klaviyo rate-limit budget per account: runs that share a connection take turns.

Three exports, two on one Klaviyo connection (account A, two lists) and one on another
(account B), are queued at once and executed by three emulated Flex instances that take
messages from the real queue in Azurite and call ``run_worker`` as the host does. The
sandbox enforces a tight polling limit per account, so two runs in account A at once
would trip it; the client's own limiter keeps one run inside it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient

from devtools.klaviyo_sandbox import AccountSpec, ListSpec, RateLimit
from shared import service
from shared.definitions import parse_definition
from shared.ratelimit import KLAVIYO_LIMITS
from shared.ratelimit import RateLimit as ClientRateLimit
from shared.retry import RetryPolicy
from shared.runs import FINISHED
from shared.service import RUN_QUEUE, Services, start_run
from tests.exports import definition_doc, write_small_export
from tests.fixtures_app import admin_header, call, indexed_functions, live_services

# export -> (Key Vault secret of its connection, Klaviyo list)
EXPORTS = {
    "shop-a-vip": ("klaviyo-account-a", "ListA1"),
    "shop-a-news": ("klaviyo-account-a", "ListA2"),
    "shop-b-vip": ("klaviyo-account-b", "ListB1"),
}
KEYS = {"klaviyo-account-a": "pk_account_a", "klaviyo-account-b": "pk_account_b"}
POLL_LIMIT = 2  # job polls per second per account, in the sandbox and in the client
DEADLINE = 120.0


@pytest.fixture
def two_accounts(sandbox_factory):
    return sandbox_factory(
        accounts=(
            AccountSpec(
                name="a",
                api_keys=(KEYS["klaviyo-account-a"],),
                lists=(ListSpec(id="ListA1"), ListSpec(id="ListA2")),
            ),
            AccountSpec(
                name="b", api_keys=(KEYS["klaviyo-account-b"],), lists=(ListSpec(id="ListB1"),)
            ),
        ),
        rate_limit_overrides={"bulk_import_get": RateLimit(burst=POLL_LIMIT, steady=120)},
        job_delay=1.0,  # each job takes a second: a run polls it a few times
    )


@pytest.fixture
def lease_services(
    storage_connection_string, two_accounts, key_vault, key_vault_client_kwargs, blob_service
):
    for secret, key in KEYS.items():
        key_vault.set_secret(secret, key)
    container = f"ci-{uuid.uuid4().hex[:12]}"
    segments = blob_service.create_container(container)
    limits = {**KLAVIYO_LIMITS, "import_jobs_get": ClientRateLimit(burst=POLL_LIMIT, steady=120)}
    services = live_services(
        storage_connection_string,
        two_accounts.url,
        key_vault,
        key_vault_client_kwargs,
        client_kwargs={
            "limits": limits,
            "retry": RetryPolicy(backoff=0.02, max_backoff=0.2, rng=random.Random(3)),
        },
        wait_seconds=1,  # a busy run is back in the queue after a second
        max_wait_delay=1,
    )
    service.configure(services)
    mapping = definition_doc(container)["mapping"]  # the columns write_small_export writes
    for number, (name, (secret, list_id)) in enumerate(EXPORTS.items()):
        folder = f"CustomerInsights_test/Export{number}"
        rows = [(str(i), f"p{number}-{i}@example.com", "P", "", "NL") for i in range(40)]
        write_small_export(segments, rows, folder=folder)
        doc = definition_doc(container, folder=folder, name=name, mapping=mapping)
        doc["connection"] = {**doc["connection"], "name": secret, "api_key_secret": secret}
        doc["destination"] = {"list_id": list_id}
        services.definitions.put(parse_definition(doc))
    yield services
    service.configure(None)
    services.queue.clear_messages()


class Host:
    """Flex Consumption in miniature: ``instances`` workers, each taking one message at a
    time from the queue (batchSize 1), deleting it when the function returns and leaving it
    to reappear when the function raises."""

    def __init__(self, services: Services, *, instances: int) -> None:
        self.services = services
        self.instances = instances
        self.queue = QueueClient.from_connection_string(
            services.settings.app_storage.connection_string, RUN_QUEUE
        )
        self.worker = indexed_functions()["run_worker"].get_user_function()
        self.deliveries: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []

    def _receive(self) -> Any:
        return next(iter(self.queue.receive_messages(max_messages=1, visibility_timeout=300)), None)

    async def _instance(self, done: Callable[[], bool], delivered: Callable) -> None:
        while not await asyncio.to_thread(done):
            message = await asyncio.to_thread(self._receive)
            if message is None:
                await asyncio.sleep(0.1)  # an idle instance polling its queue, not a sync point
                continue
            body = base64.b64decode(message.content)
            try:
                await self.worker(func.QueueMessage(id=message.id, body=body))
            except Exception as exc:  # the host would let the message reappear
                self.errors.append(exc)
                continue
            await asyncio.to_thread(self.queue.delete_message, message)
            self.deliveries.append({"body": body, "dequeue_count": message.dequeue_count})
            await asyncio.to_thread(delivered, body)

    def run(self, done: Callable[[], bool], delivered: Callable) -> None:
        async def main() -> None:
            tasks = [self._instance(done, delivered) for _ in range(self.instances)]
            await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)

        asyncio.run(main())


def _list_of(request: dict[str, Any], job_lists: Callable[[str], list[str]]) -> str | None:
    """Which list a recorded Klaviyo request was about."""
    path = request["path"]
    if path.startswith("/api/lists/"):
        return path.split("/")[3]
    if path.startswith("/api/profile-bulk-import-jobs"):
        if request["method"] == "POST":
            return request["body"]["data"]["relationships"]["lists"]["data"][0]["id"]
        return job_lists(path.split("/")[3])[0]
    return None


def _span(times: list[float]) -> tuple[float, float]:
    return min(times), max(times)


def _get_run(name: str, run_id: str) -> dict[str, Any]:
    response, body = call(
        "run_get",
        "GET",
        f"http://localhost/api/exports/{name}/runs/{run_id}",
        route={"name": name, "run_id": run_id},
        principal=admin_header(),
    )
    assert response.status_code == 200, body
    return body


def _interval(run: dict[str, Any]) -> tuple[datetime, datetime]:
    timings = run["report"]["timings"]
    return datetime.fromisoformat(timings["started_at"]), datetime.fromisoformat(
        timings["finished_at"]
    )


def test_runs_on_one_connection_take_turns_and_the_other_runs_beside_them(
    lease_services, two_accounts
):
    services = lease_services
    runs = {name: start_run(services, name)[0] for name in EXPORTS}
    seen_waiting: list[dict[str, Any]] = []

    def done() -> bool:
        return all(
            (services.runs.get(name, run_id) or {}).get("status") in FINISHED
            for name, run_id in runs.items()
        )

    def delivered(body: bytes) -> None:
        # What the API shows right after the function returned.
        doc = json.loads(body)
        run = _get_run(doc["export"], doc["run_id"])
        if run["status"] == "waiting":
            seen_waiting.append(run)

    host = Host(services, instances=3)
    host.run(done, delivered)

    # Waiting never counted as a failed delivery: every message was taken once, returned
    # normally and was deleted, so none can reach the poison queue.
    assert host.errors == []
    assert host.deliveries and all(d["dequeue_count"] == 1 for d in host.deliveries)
    done_runs = {name: _get_run(name, run_id) for name, run_id in runs.items()}
    assert {r["status"] for r in done_runs.values()} == {"succeeded"}, done_runs

    # The two runs in account A: one waited in the queue for the other, and said so.
    a_runs = ["shop-a-vip", "shop-a-news"]
    waited = [name for name in a_runs if done_runs[name].get("waits")]
    assert len(waited) == 1, done_runs
    second = waited[0]
    first = next(name for name in a_runs if name != second)
    holder = done_runs[second]["last_waited_for"]
    assert holder["lease"] == "connection" and holder["connection"] == "klaviyo-account-a"
    assert holder["run_id"] == runs[first] and holder["export"] == first
    assert not done_runs["shop-b-vip"].get("waits")
    assert seen_waiting and all(s["status"] == "waiting" for s in seen_waiting)
    assert seen_waiting[0]["run_id"] == runs[second]
    assert seen_waiting[0]["waiting_for"]["run_id"] == runs[first]

    # The reports' clocks: first A, then second A; B beside the first.
    first_span, second_span = _interval(done_runs[first]), _interval(done_runs[second])
    b_span = _interval(done_runs["shop-b-vip"])
    assert first_span[1] <= second_span[0], (first_span, second_span)
    assert b_span[0] < first_span[1] and first_span[0] < b_span[1], (b_span, first_span)

    # What Klaviyo saw: account A's two lists never in flight together, B's beside A's.
    by_list: dict[str, list[float]] = {}
    for request in two_accounts.state.recorded_requests():
        list_id = _list_of(request, lambda job: two_accounts.state.job(job)["list_ids"])
        if list_id:
            by_list.setdefault(list_id, []).append(request["time"])
    list_of = {name: list_id for name, (_, list_id) in EXPORTS.items()}
    a_first, a_second = _span(by_list[list_of[first]]), _span(by_list[list_of[second]])
    b = _span(by_list["ListB1"])
    assert a_first[1] < a_second[0], (a_first, a_second)
    assert b[0] < a_first[1] and a_first[0] < b[1], (b, a_first)

    # And no 429 storm: the account's budget was never shared.
    assert two_accounts.state.stats()["throttled"] == 0
    assert sum(r["report"]["klaviyo"]["throttled"] for r in done_runs.values()) == 0
