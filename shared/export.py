"""One export run: newest segment snapshot -> profiles -> Klaviyo import jobs -> report.

Data flows one way:

    BlockReader.blocks()  (reader thread: download, blocks of records parsed by the engine)
        -> BlockMapper.map()  (profiles + rejected rows, serialised in the engine)
        -> SeenKeys           (run-wide dedupe by e-mail key)
        -> Packer             (jobs of <= 10,000 profiles / 5 MB)
        -> Batch queue (bounded)
        -> _submit()      (event loop: several jobs in flight, rate-limited, 400s trimmed)
        -> checkpoint     (after each accepted job, so a redelivered run resumes)
        -> _poll()        (oldest job first, until complete; import errors traced to rows)
        -> report + rejected-rows CSV

Every row read ends as sent, rejected (with a reason) or a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Protocol

from shared.batches import Batch, Packer
from shared.blocks import BlockReader
from shared.cdm import load_cdm
from shared.dedupe import SeenKeys, email_hash
from shared.definitions import ExportDefinition
from shared.errors import ConsentError, ExportError, KlaviyoFatalError
from shared.klaviyo import ImportJob, KlaviyoClient, error_summary
from shared.mapping.columns import BlockMapper
from shared.report import RejectsWriter, RunTally
from shared.segments import Snapshot, find_latest_snapshot

__all__ = ["ExportRun", "RunOptions", "RunStore", "new_run_id"]

logger = logging.getLogger(__name__)

_PROFILE_POINTER = re.compile(r"^/data/attributes/profiles/data/(\d+)(?:/|$)")


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique enough: 20261122T230102Z-3f9a1c."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class RunStore(Protocol):
    """Where a run keeps its checkpoint and writes its outputs."""

    def load_checkpoint(self) -> dict[str, Any] | None: ...

    def save_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...

    def save_rejects(self, data: IO[bytes]) -> str: ...

    def save_report(self, report: dict[str, Any]) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """Knobs of one run; the defaults suit Klaviyo's production limits."""

    dry_run: bool = False
    max_in_flight: int = 10
    queue_batches: int = 3
    poll_interval: float = 0.5
    poll_max_interval: float = 5.0
    job_deadline: float = 3600.0
    max_resends: int = 25
    progress_interval: float = 0.5


@dataclass(slots=True)
class _Tracked:
    batch: Batch
    job_id: str
    submitted_at: float


ProgressCallback = Callable[[dict[str, Any]], None]


class ExportRun:
    """Runs one export definition once. Create, then ``await run.execute()``."""

    def __init__(
        self,
        definition: ExportDefinition,
        *,
        segments: Any,
        client_factory: Callable[[str], KlaviyoClient] | None,
        api_key: Callable[[], Awaitable[str]] | None,
        run_id: str | None = None,
        store: RunStore | None = None,
        options: RunOptions | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.definition = definition
        self.run_id = run_id or new_run_id()
        self.options = options or RunOptions()
        self._segments = segments  # azure.storage.blob.ContainerClient of the source
        self._client_factory = client_factory
        self._api_key = api_key
        self._store = store
        self._on_progress = on_progress
        self.tally = RunTally()
        self._rejects = RejectsWriter()
        self._files: list[str] = []
        self._pending: deque[_Tracked] = deque()
        self._pending_changed = asyncio.Event()
        self._submitting_done = False
        self._checkpoint: dict[str, Any] = {}
        self._checkpoint_lock = asyncio.Lock()
        self._resumed: dict[int, dict[str, Any]] = {}
        self._removed: dict[int, list[list[Any]]] = {}  # 400-refused profiles, by batch
        self._client: KlaviyoClient | None = None
        self._started = time.monotonic()
        self._snapshot: Snapshot | None = None

    # -- public ---------------------------------------------------------------------

    async def execute(self) -> dict[str, Any]:
        """Run to the end and return the report (also saved to the store, if any)."""
        if not self.definition.connection.privacy_consent:
            raise ConsentError(
                f"export {self.definition.name!r}: connection "
                f"{self.definition.connection.name!r} has no privacy consent "
                "(connection.privacy_consent must be true before data is sent to Klaviyo)"
            )
        started_at = datetime.now(UTC)
        reader, mapper = await asyncio.to_thread(self._prepare)
        logger.info(
            "export %s run %s: snapshot %s (%d files)%s",
            self.definition.name,
            self.run_id,
            self._snapshot.prefix,
            len(self._snapshot.files),
            " [dry run]" if self.options.dry_run else "",
        )
        progress = asyncio.create_task(self._report_progress())
        try:
            if self.options.dry_run:
                await self._dry_run(reader, mapper)
            else:
                await self._upload(reader, mapper)
        finally:
            progress.cancel()
            reader.close()
        return await asyncio.to_thread(self._finish, started_at)

    def progress(self) -> dict[str, Any]:
        """A cheap snapshot of where the run is, for progress bars and status pages."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        sent = self.tally.profiles_submitted if not self.options.dry_run else 0
        return {
            "rows": self.tally.rows_read,
            "jobs_submitted": self.tally.jobs_submitted,
            "jobs_done": self.tally.jobs_completed + self.tally.jobs_cancelled,
            "jobs_planned": self.tally.jobs_planned,
            "profiles_submitted": sent,
            "profiles_per_second": sent / elapsed,
            "rows_per_second": self.tally.rows_read / elapsed,
            "elapsed": elapsed,
        }

    # -- preparation (reader thread) ----------------------------------------------------

    def _prepare(self) -> tuple[BlockReader, BlockMapper]:
        source = self.definition.source
        model = load_cdm(self._segments, source.folder)
        entity = model.entity(source.segment)
        snapshot = find_latest_snapshot(self._segments, source.folder, source.segment)
        self._snapshot = snapshot
        self._files = list(snapshot.files)
        saved_lanes = self._load_checkpoint(snapshot)
        if saved_lanes not in (None, 1):
            # Packed by the former multi-process reader, whose jobs were cut elsewhere:
            # resending is an upsert, so start the packing over rather than guess.
            logger.warning("run %s: checkpoint from another packing; starting over", self.run_id)
            self._resumed, self._checkpoint["jobs"] = {}, {}
        reader = BlockReader(self._segments, snapshot, entity)
        try:
            # Structure before sending: a mapped column that does not exist, or a
            # partition whose header or field count differs, fails the run here.
            mapper = BlockMapper(
                self.definition.mapping,
                reader.columns,
                default_region=self.definition.options.phone_default_region,
                region_column=self.definition.options.phone_region_column,
                source=f"{source.container}/{snapshot.prefix}",
                show_columns=not reader.columns_from_header,
            )
            reader.check_structure()
        except BaseException:
            reader.close()  # stops its download threads
            raise
        return reader, mapper

    def _load_checkpoint(self, snapshot: Snapshot) -> int | None:
        """Start a checkpoint, or take up a saved one; returns its lane count if resumed."""
        self._checkpoint = {
            "run_id": self.run_id,
            "snapshot": snapshot.prefix,
            "list_id": self.definition.destination.list_id,
            "jobs": {},
        }
        if self._store is None or self.options.dry_run:
            return None
        saved = self._store.load_checkpoint()
        if not saved:
            return None
        if saved.get("snapshot") != snapshot.prefix or saved.get("list_id") != (
            self.definition.destination.list_id
        ):
            logger.warning(
                "run %s: checkpoint is for snapshot %s, list %s; starting over on %s",
                self.run_id,
                saved.get("snapshot"),
                saved.get("list_id"),
                snapshot.prefix,
            )
            return None
        self._checkpoint["jobs"] = dict(saved.get("jobs") or {})
        self._resumed = {int(k): v for k, v in self._checkpoint["jobs"].items()}
        logger.info("run %s: resuming after %d accepted jobs", self.run_id, len(self._resumed))
        return int(saved.get("lanes") or 1)

    # -- the reader side ----------------------------------------------------------------

    def _batches(self, reader: BlockReader, mapper: BlockMapper) -> Iterator[Batch]:
        """Blocks -> profiles -> batches, in input order. Runs in a worker thread."""
        tally, seen, reject, files = self.tally, SeenKeys(), self._reject_row, self._files
        packer = Packer(self.definition.destination.list_id)
        for block in reader.blocks(mapper.positions):
            mapped = mapper.map(block)
            tally.rows_read += mapped.records
            for r in mapped.rejects:
                reject(files[r.file_index], r.line, r.code, r.detail, r.email)
            profiles = mapped.profiles
            fresh = seen.first_seen(profiles.keys)
            tally.duplicates += len(profiles) - int(fresh.sum())
            profiles = profiles.select(fresh)
            tally.phones_dropped += int(profiles.phone_dropped.sum())
            tally.profiles_packed += len(profiles)
            yield from packer.pack(profiles)
        last = packer.flush()
        if last is not None:
            yield last

    def _reject_row(
        self,
        file: str,
        line: int,
        code: str,
        reason: str,
        email: str,
        *,
        after_submit: bool = False,
    ) -> None:
        """Count a rejected row and write it to the rejected-rows CSV."""
        self.tally.reject(code, after_submit=after_submit)
        self._rejects.write(file, line, code, reason, email)

    async def _feed(self, batches: Iterator[Batch], queue: asyncio.Queue[Batch | None]) -> None:
        try:
            while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                self.tally.jobs_planned += 1
                await queue.put(batch)
        finally:
            await queue.put(None)

    # -- dry run ------------------------------------------------------------------------

    async def _dry_run(self, reader: BlockReader, mapper: BlockMapper) -> None:
        batches = self._batches(reader, mapper)
        while (batch := await asyncio.to_thread(next, batches, None)) is not None:
            self.tally.jobs_planned += 1
            batch.release_payload()

    # -- the upload side ------------------------------------------------------------------

    async def _upload(self, reader: BlockReader, mapper: BlockMapper) -> None:
        api_key = await self._api_key()
        async with self._client_factory(api_key) as client:
            self._client = client
            await client.get_list(self.definition.destination.list_id)  # fail fast: 404
            queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=self.options.queue_batches)
            slots = asyncio.Semaphore(self.options.max_in_flight)
            try:
                await self._pipeline(reader, mapper, queue, slots)
            except ExceptionGroup as group:
                # Surface the first real cause (a fatal Klaviyo answer, a bad file), not
                # the group the task group wraps it in.
                raise _first_cause(group) from None

    async def _pipeline(
        self,
        reader: BlockReader,
        mapper: BlockMapper,
        queue: asyncio.Queue[Batch | None],
        slots: asyncio.Semaphore,
    ) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._feed(self._batches(reader, mapper), queue))
            poller = group.create_task(self._poll())
            submits: set[asyncio.Task[None]] = set()
            while (batch := await queue.get()) is not None:
                await slots.acquire()
                task = group.create_task(self._submit(batch, slots))
                submits.add(task)
                task.add_done_callback(submits.discard)
            if submits:
                await asyncio.wait(submits)
            self._submitting_done = True
            self._pending_changed.set()
            await poller

    async def _submit(self, batch: Batch, slots: asyncio.Semaphore) -> None:
        try:
            resumed = self._resumed.get(batch.index)
            if resumed is not None:
                self._resume_batch(batch, resumed)
                return
            job = await self._create_job(batch)
            if job is None:
                return
            self.tally.jobs_submitted += 1
            self.tally.profiles_submitted += len(batch)
            batch.release_payload()
            await self._save_accepted(batch, job.id)
            self._track(batch, job.id)
        finally:
            slots.release()

    async def _create_job(self, batch: Batch) -> ImportJob | None:
        """Submit; when Klaviyo refuses named profiles (400), drop them and resend."""
        assert self._client is not None
        resends = 0
        while len(batch):
            try:
                return await self._client.create_import_job(batch.payload())
            except KlaviyoFatalError as exc:
                positions = _refused_positions(exc, len(batch))
                if exc.status != 400 or not positions or resends >= self.options.max_resends:
                    raise
                reason = error_summary(exc.errors)
                for position in sorted(positions, reverse=True):
                    removed = batch.remove(position)
                    self._reject_row(
                        self._files[removed.file_index],
                        removed.line,
                        "klaviyo_refused_profile",
                        reason,
                        removed.email,
                    )
                    # Kept until the job is accepted, then saved with it in the checkpoint.
                    self._removed.setdefault(batch.index, []).append(
                        [removed.file_index, removed.line, reason, removed.email]
                    )
                resends += 1
                self.tally.jobs_resent_after_400 += 1
                logger.warning(
                    "job %d: Klaviyo refused %d profile(s) (400); resending the other %d",
                    batch.index,
                    len(positions),
                    len(batch),
                )
        return None

    async def _save_accepted(self, batch: Batch, job_id: str) -> None:
        removed = self._removed.pop(batch.index, [])
        self._checkpoint["jobs"][str(batch.index)] = {
            "job_id": job_id,
            "profiles": len(batch),
            "removed": removed,
        }
        if self._store is None:
            return
        async with self._checkpoint_lock:
            await asyncio.to_thread(self._store.save_checkpoint, self._checkpoint)

    def _resume_batch(self, batch: Batch, saved: dict[str, Any]) -> None:
        """A job accepted before a restart: replay its removals, then poll it again."""
        removed = {(f, line): (reason, email) for f, line, reason, email in saved["removed"]}
        for position in range(len(batch) - 1, -1, -1):
            key = batch.origin(position)
            if key in removed:
                batch.remove(position)
                reason, email = removed[key]
                self._reject_row(
                    self._files[key[0]], key[1], "klaviyo_refused_profile", reason, email
                )
        batch.release_payload()
        self.tally.jobs_resumed += 1
        self.tally.jobs_submitted += 1
        self.tally.profiles_submitted += len(batch)
        self._checkpoint["jobs"][str(batch.index)] = saved
        self._track(batch, saved["job_id"])

    def _track(self, batch: Batch, job_id: str) -> None:
        self._pending.append(_Tracked(batch, job_id, time.monotonic()))
        self._pending_changed.set()

    # -- polling ------------------------------------------------------------------------

    async def _poll(self) -> None:
        """Poll the oldest unfinished job until none is left and submitting is over."""
        assert self._client is not None
        interval = self.options.poll_interval
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
                interval = self.options.poll_interval
                continue
            if time.monotonic() - tracked.submitted_at > self.options.job_deadline:
                raise ExportError(
                    f"Klaviyo job {job.id} still {job.status} after "
                    f"{self.options.job_deadline:.0f}s; the run stops (resume picks it up)"
                )
            await asyncio.sleep(interval)  # Klaviyo is still working; poll again later
            interval = min(interval * 1.5, self.options.poll_max_interval)

    async def _settle(self, tracked: _Tracked, job: ImportJob) -> None:
        """Book a finished job: counts, and each import error traced to its row."""
        tally, batch = self.tally, tracked.batch
        if job.status == "cancelled":
            tally.jobs_cancelled += 1
            reason = f"Klaviyo cancelled import job {job.id}"
            for position in range(len(batch)):
                file_index, line = batch.origin(position)
                self._reject_row(
                    self._files[file_index], line, "klaviyo_job_cancelled", reason, "",
                    after_submit=True,
                )  # fmt: skip
            return
        tally.jobs_completed += 1
        tally.klaviyo_completed += job.completed_count
        tally.klaviyo_failed += job.failed_count
        if job.failed_count:
            tally.jobs_with_failures += 1
            await self._book_import_errors(tracked, job)

    async def _book_import_errors(self, tracked: _Tracked, job: ImportJob) -> None:
        assert self._client is not None
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
            reason = error_summary([attrs])
            self._reject_row(
                self._files[file_index], line, "klaviyo_import_error", reason, email or "",
                after_submit=True,
            )  # fmt: skip
        unmatched = job.failed_count - len(booked)
        if unmatched > 0:
            # Klaviyo counted failures it did not describe; still account for them.
            self.tally.reject("klaviyo_import_error_untraced", after_submit=True, count=unmatched)
            logger.warning("job %s: %d failures without a traceable error", job.id, unmatched)

    # -- progress and the end -------------------------------------------------------------

    async def _report_progress(self) -> None:
        if self._on_progress is None:
            return
        while True:
            self._on_progress(self.progress())
            await asyncio.sleep(self.options.progress_interval)  # a refresh rate, not a sync

    def _finish(self, started_at: datetime) -> dict[str, Any]:
        if self._on_progress is not None:
            self._on_progress(self.progress())
        report = self.build_report(started_at)
        if self._store is not None:
            report["rejected_rows_blob"] = self._store.save_rejects(self._rejects.open_for_upload())
            report["report_blob"] = self._store.save_report(report)
        self._rejects.close()
        logger.info(
            "export %s run %s: %d rows, %d sent, %d rejected, %d duplicates in %.1fs",
            self.definition.name,
            self.run_id,
            self.tally.rows_read,
            report["rows"]["sent"],
            report["rows"]["rejected"],
            report["rows"]["duplicates"],
            report["timings"]["seconds"],
        )
        return report

    def build_report(self, started_at: datetime) -> dict[str, Any]:
        dry = self.options.dry_run
        seconds = time.monotonic() - self._started
        body = self.tally.as_dict(dry_run=dry)
        snapshot = self._snapshot
        client = self._client
        return {
            "run_id": self.run_id,
            "export": self.definition.name,
            "list_id": self.definition.destination.list_id,
            "dry_run": dry,
            "snapshot": {
                "container": self.definition.source.container,
                "path": snapshot.prefix if snapshot else None,
                "taken_at": snapshot.taken_at.isoformat() if snapshot else None,
                "files": list(snapshot.files) if snapshot else [],
            },
            **body,
            "klaviyo": {
                "completed_count": self.tally.klaviyo_completed,
                "failed_count": self.tally.klaviyo_failed,
                "retries": client.retries if client else 0,
                "throttled": client.throttled if client else 0,
                "rate_limit_wait_seconds": round(client.rate_limit_wait, 3) if client else 0,
            },
            "timings": {
                "started_at": started_at.isoformat(),
                "finished_at": datetime.now(UTC).isoformat(),
                "seconds": round(seconds, 3),
                "rows_per_second": round(self.tally.rows_read / max(seconds, 1e-9), 1),
                "profiles_per_second": round(body["rows"]["sent"] / max(seconds, 1e-9), 1),
            },
        }


def _first_cause(group: BaseExceptionGroup) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_cause(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group


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
