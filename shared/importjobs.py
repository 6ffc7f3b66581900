"""The import-jobs stage: batches -> Klaviyo Bulk Import Profiles jobs, polled to the end.

    batches (bounded queue)
        -> submit: up to ``max_in_flight`` at once, paced by the client's rate limiter
           (a batch is taken from the queue once its turn has come, so bodies do not
           wait in the limiter); a 400 naming profiles drops them (rejected rows) and
           resends the rest
        -> checkpoint: each accepted job, coalesced (shared/checkpoint.py)
        -> poll: the oldest unfinished job first, until complete or cancelled
        -> settle: counts; a cancelled job's rows and each import error traced back to
           its file and line; ``on_settled`` learns which keys Klaviyo took

A job accepted before a restart (in the checkpoint) is not sent again: its batch replays
the saved 400 removals and is polled like the others.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.batches import Batch
from shared.checkpoint import RunCheckpoint
from shared.dedupe import email_hash
from shared.errors import ExportError, KlaviyoFatalError
from shared.klaviyo import ImportJob, KlaviyoClient, error_summary
from shared.report import RunTally

__all__ = ["ImportJobs", "JobOptions", "RejectRow", "SettledJob"]

logger = logging.getLogger(__name__)

_PROFILE_POINTER = re.compile(r"^/data/attributes/profiles/data/(\d+)(?:/|$)")


class RejectRow(Protocol):
    """Books one rejected row (the run's tally and rejected-rows file)."""

    def __call__(
        self, file: int, line: int, code: str, reason: str, email: str, *, after_submit: bool
    ) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOptions:
    max_in_flight: int = 10
    poll_interval: float = 0.5
    poll_max_interval: float = 5.0
    job_deadline: float = 3600.0  # seconds a job may stay unfinished before the run stops
    max_resends: int = 25  # 400 trims of one batch before its error stops the run


@dataclass(slots=True)
class SettledJob:
    """A finished job: its batch (positions as sent), and which positions failed."""

    batch: Batch
    job: ImportJob
    failed: set[int] = field(default_factory=set)
    submitted_ms: int = 0  # this process's clock when it sent the job (0: an earlier attempt)

    @property
    def cancelled(self) -> bool:
        return self.job.status == "cancelled"

    @property
    def created_at_ms(self) -> int:
        """When Klaviyo created the job (its clock), else when it was sent, else 0."""
        return self.job.created_at_ms or self.submitted_ms


@dataclass(slots=True)
class _Tracked:
    batch: Batch
    job_id: str
    submitted_at: float  # monotonic, for the job deadline
    submitted_ms: int = 0  # wall clock, epoch ms


class ImportJobs:
    """Submits the batches it is fed and polls them until every one is finished."""

    def __init__(
        self,
        client: KlaviyoClient,
        *,
        tally: RunTally,
        reject: RejectRow,
        checkpoint: RunCheckpoint,
        options: JobOptions,
        on_settled: Callable[[SettledJob], None] | None = None,
    ) -> None:
        self._client = client
        self._tally = tally
        self._reject = reject
        self._checkpoint = checkpoint
        self._options = options
        self._on_settled = on_settled
        self._pending: deque[_Tracked] = deque()
        self._pending_changed = asyncio.Event()
        self._submitting_done = False

    async def run(self, batches: asyncio.Queue[Batch | None]) -> None:
        """Take batches until a None, then wait until every job has finished."""
        slots = asyncio.Semaphore(self._options.max_in_flight)
        async with asyncio.TaskGroup() as group:
            poller = group.create_task(self._poll())
            submits: set[asyncio.Task[None]] = set()
            while (taken := await self._next(batches, slots)) is not None:
                task = group.create_task(self._submit(*taken, slots))
                submits.add(task)
                task.add_done_callback(submits.discard)
            if submits:
                await asyncio.wait(submits)
            self._submitting_done = True
            self._pending_changed.set()
            await poller

    # -- submitting ---------------------------------------------------------------------

    async def _next(
        self, batches: asyncio.Queue[Batch | None], slots: asyncio.Semaphore
    ) -> tuple[Batch, float | None] | None:
        """The next batch with a free slot and, when one was ready, its rate-limit turn.

        The turn comes first: a batch waits in the queue, which holds the reader back,
        not in the limiter holding its 3.5 MB body. At 1M rows, where the limit sets the
        pace, 3-7 jobs were sampled waiting there, and 24-34 MB of bodies held at the
        peaks; 13-17 MB since. A turn that waited for a batch is given back: the limiter
        counted it when it was given, so it must not be used later."""
        await slots.acquire()
        turn: float | None = await self._client.import_job_turn()
        try:
            batch = batches.get_nowait()
        except asyncio.QueueEmpty:
            self._client.give_back_turn(turn)
            turn, batch = None, await batches.get()
        if batch is None:
            if turn is not None:
                self._client.give_back_turn(turn)
            slots.release()
            return None
        return batch, turn

    async def _submit(self, batch: Batch, turn: float | None, slots: asyncio.Semaphore) -> None:
        try:
            saved = self._checkpoint.accepted_job(batch.index)
            if saved is not None:
                if turn is not None:
                    self._client.give_back_turn(turn)
                self._resume(batch, saved)
                return
            removed: list[list[Any]] = []
            sent_ms = int(time.time() * 1000)
            job = await self._create(batch, removed, turn)
            if job is None:
                return
            self._tally.jobs_submitted += 1
            self._tally.profiles_submitted += len(batch)
            batch.release_payload()
            # Polled from now on; the checkpoint write may wait for its turn (see
            # shared/checkpoint.py), and the slot stays taken until it is stored.
            self._track(batch, job.id, sent_ms)
            await self._checkpoint.accept(batch.index, job.id, len(batch), removed)
        finally:
            slots.release()

    async def _create(
        self, batch: Batch, removed: list[list[Any]], turn: float | None
    ) -> ImportJob | None:
        """Submit; when Klaviyo refuses named profiles (400), drop them and resend."""
        resends = 0
        while len(batch):
            first, turn = turn, None  # a resend waits for a turn of its own
            try:
                return await self._client.create_import_job(batch.payload(), turn=first)
            except KlaviyoFatalError as exc:
                positions = _refused_positions(exc, len(batch))
                if exc.status != 400 or not positions or resends >= self._options.max_resends:
                    raise
                reason = error_summary(exc.errors)
                for position in sorted(positions, reverse=True):
                    profile = batch.remove(position)
                    self._reject(
                        profile.file_index,
                        profile.line,
                        "klaviyo_refused_profile",
                        reason,
                        profile.email,
                        after_submit=False,
                    )
                    # Saved with the job once it is accepted, so a resume replays it.
                    removed.append([profile.file_index, profile.line, reason, profile.email])
                resends += 1
                self._tally.jobs_resent_after_400 += 1
                logger.warning(
                    "job %d: Klaviyo refused %d profile(s) (400); resending the other %d",
                    batch.index,
                    len(positions),
                    len(batch),
                )
        return None

    def _resume(self, batch: Batch, saved: dict[str, Any]) -> None:
        """A job accepted before a restart: replay its removals, then poll it again."""
        removed = {(f, line): (reason, email) for f, line, reason, email in saved["removed"]}
        for position in range(len(batch) - 1, -1, -1):
            key = batch.origin(position)
            if key in removed:
                batch.remove(position)
                reason, email = removed[key]
                self._reject(
                    key[0], key[1], "klaviyo_refused_profile", reason, email, after_submit=False
                )
        batch.release_payload()
        self._tally.jobs_resumed += 1
        self._tally.jobs_submitted += 1
        self._tally.profiles_submitted += len(batch)
        self._track(batch, saved["job_id"])

    def _track(self, batch: Batch, job_id: str, sent_ms: int = 0) -> None:
        self._pending.append(_Tracked(batch, job_id, time.monotonic(), sent_ms))
        self._pending_changed.set()

    # -- polling ------------------------------------------------------------------------

    async def _poll(self) -> None:
        """Poll the oldest unfinished job until none is left and submitting is over."""
        interval = self._options.poll_interval
        while True:
            if not self._pending:
                if self._submitting_done:
                    return
                self._pending_changed.clear()
                await self._pending_changed.wait()
                continue
            tracked = self._pending[0]
            job = await self._client.get_import_job(tracked.job_id)
            if job.done:
                self._pending.popleft()
                await self._settle(tracked, job)
                interval = self._options.poll_interval
                continue
            if time.monotonic() - tracked.submitted_at > self._options.job_deadline:
                raise ExportError(
                    f"Klaviyo job {job.id} still {job.status} after "
                    f"{self._options.job_deadline:.0f}s; the run stops (resume picks it up)"
                )
            await asyncio.sleep(interval)  # Klaviyo is still working; poll again later
            interval = min(interval * 1.5, self._options.poll_max_interval)

    async def _settle(self, tracked: _Tracked, job: ImportJob) -> None:
        """Book a finished job: counts, and each failed profile traced to its row."""
        tally, batch = self._tally, tracked.batch
        settled = SettledJob(batch, job, submitted_ms=tracked.submitted_ms)
        if settled.cancelled:
            tally.jobs_cancelled += 1
            reason = f"Klaviyo cancelled import job {job.id}"
            for position in range(len(batch)):
                file_index, line = batch.origin(position)
                self._reject(
                    file_index, line, "klaviyo_job_cancelled", reason, "", after_submit=True
                )
            settled.failed = set(range(len(batch)))
        else:
            tally.jobs_completed += 1
            tally.klaviyo_completed += job.completed_count
            tally.klaviyo_failed += job.failed_count
            if job.failed_count:
                tally.jobs_with_failures += 1
                settled.failed = await self._book_import_errors(tracked, job)
        if self._on_settled is not None:
            self._on_settled(settled)

    async def _book_import_errors(self, tracked: _Tracked, job: ImportJob) -> set[int]:
        batch, booked = tracked.batch, set()
        async for error in self._client.iter_import_errors(job.id):
            attrs = error.get("attributes") or {}
            position = _error_position(attrs, batch)
            if position is None or position in booked:
                continue
            booked.add(position)
            file_index, line = batch.origin(position)
            payload = attrs.get("original_payload") or {}
            email = payload.get("email") if isinstance(payload, dict) else ""
            self._reject(
                file_index,
                line,
                "klaviyo_import_error",
                error_summary([attrs]),
                email or "",
                after_submit=True,
            )
        unmatched = job.failed_count - len(booked)
        if unmatched > 0:
            # Klaviyo counted failures it did not describe; still account for them.
            self._tally.reject("klaviyo_import_error_untraced", after_submit=True, count=unmatched)
            logger.warning("job %s: %d failures without a traceable error", job.id, unmatched)
            # Which profiles they were is unknown: none of the job's are confirmed.
            return set(range(len(batch)))
        return booked


def _refused_positions(exc: KlaviyoFatalError, size: int) -> set[int]:
    """Indexes of profiles a 400 names in ``source.pointer`` (…/profiles/data/N)."""
    positions = set()
    for error in exc.errors:
        pointer = ((error.get("source") or {}).get("pointer")) or ""
        match = _PROFILE_POINTER.match(pointer)
        if match and int(match.group(1)) < size:
            positions.add(int(match.group(1)))
    return positions


def _error_position(attrs: dict[str, Any], batch: Batch) -> int | None:
    """Which profile of the job an import error is about: by pointer, else by e-mail."""
    pointer = ((attrs.get("source") or {}).get("pointer")) or ""
    match = _PROFILE_POINTER.match(pointer)
    if match and int(match.group(1)) < len(batch):
        return int(match.group(1))
    payload = attrs.get("original_payload")
    email = payload.get("email") if isinstance(payload, dict) else None
    if isinstance(email, str) and email:
        return batch.position_of(email_hash(email.strip().lower()))
    return None
