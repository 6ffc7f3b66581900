"""A job's body is taken from the queue only once its rate-limit turn has come
(shared/importjobs.py, shared/ratelimit.py), through httpx.MockTransport."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from shared.batches import Batch
from shared.checkpoint import RunCheckpoint
from shared.importjobs import ImportJobs, JobOptions
from shared.klaviyo import KlaviyoClient
from shared.ratelimit import RateLimit, RateLimiter
from shared.report import RunTally

WINDOW = 0.1  # the burst window, shortened: one job per 0.1 s
LIMITS = {
    "import_jobs_create": RateLimit(burst=1, steady=10_000, margin=WINDOW - 1.0),
    "import_jobs_get": RateLimit(burst=1000, steady=100_000),
}


def _job(job_id: str, status: str) -> dict:
    attributes = {"status": status, "total_count": 1, "completed_count": 1, "failed_count": 0}
    return {"data": {"type": "profile-bulk-import-job", "id": job_id, "attributes": attributes}}


class _TimedQueue(asyncio.Queue):
    """Notes when each batch is taken."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: dict[int, float] = {}

    def _get(self):  # every get() and get_nowait() ends here
        item = super()._get()
        if item is not None:
            self.taken[item.index] = time.monotonic()
        return item


def _batch(index: int) -> Batch:
    batch = Batch(index, "L1")
    batch.add(b'{"type":"profile","attributes":{"email":"a@example.com"}}', 0, index + 1, index)
    batch.payload()
    return batch


async def _run(batches: int) -> tuple[dict[int, float], dict[int, float]]:
    sent: dict[int, float] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            index = len(sent)
            sent[index] = time.monotonic()
            return httpx.Response(202, json=_job(f"job{index}", "queued"))
        return httpx.Response(200, json=_job(request.url.path.rsplit("/", 1)[1], "complete"))

    queue = _TimedQueue()
    for i in range(batches):
        queue.put_nowait(_batch(i))
    queue.put_nowait(None)
    client = KlaviyoClient(
        "pk_x", base_url="https://a.klaviyo.com", limits=LIMITS,
        transport=httpx.MockTransport(handler),
    )  # fmt: skip
    async with client:
        jobs = ImportJobs(
            client,
            tally=RunTally(),
            reject=lambda *a, **k: None,
            checkpoint=RunCheckpoint(None, "run1", {}),
            options=JobOptions(max_in_flight=10, poll_interval=0.01, poll_max_interval=0.01),
        )
        await jobs.run(queue)
    return queue.taken, sent


async def test_bodies_wait_in_the_queue_not_in_the_rate_limiter():
    taken, sent = await _run(6)
    assert len(sent) == 6
    # One send per window, so the sixth goes ~0.5 s after the first; yet each body was
    # taken only as its turn came (before: all six at once, the last held ~0.5 s).
    assert sent[5] - sent[0] >= 5 * WINDOW - 0.01
    assert max(sent[i] - taken[i] for i in range(6)) < 2 * WINDOW


async def test_a_turn_given_back_is_not_counted():
    limiter = RateLimiter(RateLimit(burst=1, steady=100))
    stamp = await limiter.acquire()
    assert limiter.delay() > 0
    limiter.refund(stamp)
    assert limiter.delay() == 0
    limiter.refund(stamp)  # twice: nothing left to forget, and no error


@pytest.mark.parametrize("batches", [0, 1])
async def test_the_end_of_the_queue_gives_the_turn_back(batches):
    taken, sent = await _run(batches)
    assert len(sent) == batches == len(taken)
