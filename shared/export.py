"""One export run: a short driver over the stages, data flowing one way.

    reading     shared/reading.py      snapshot -> blocks -> profiles and rejects
    plan        shared/sync.py         joiners, changed, retried sent; unchanged not
    import jobs shared/importjobs.py   batches -> Klaviyo jobs, checkpointed, polled
    removals    shared/sync.py         guard, then leavers off the list (removals.py)
    state       shared/sync.py         what Klaviyo confirmed, for the next run
    report      shared/report.py       counts, rejected rows; written for every run

Every row read ends as sent, unchanged, rejected (with a reason) or a duplicate; a run
that fails or is held still writes its report, saying what it read and sent and why it
stopped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Protocol

from shared.batches import Batch
from shared.checkpoint import RunCheckpoint
from shared.definitions import ExportDefinition
from shared.errors import ConsentError, first_cause
from shared.failures import describe_failure
from shared.fingerprint import list_snapshot_folder, listing_of, snapshot_changes
from shared.importjobs import ImportJobs, JobOptions
from shared.klaviyo import KlaviyoClient
from shared.reading import Source, batches, open_source
from shared.report import RejectsWriter, RunTally, build_report
from shared.statestore import SyncStateStore
from shared.sync import SyncOptions, SyncRun

__all__ = ["ExportRun", "RunOptions", "RunStore", "new_run_id", "report_of"]

logger = logging.getLogger(__name__)


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique enough: 20261122T230102Z-3f9a1c."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def report_of(exc: BaseException) -> dict[str, Any] | None:
    """The report a failed run wrote before ``exc`` left it, if it got that far."""
    report = getattr(exc, "report", None)
    return report if isinstance(report, dict) else None


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
    full: bool = False  # resend every profile once, changed or not
    allow_mass_removal: bool = False  # let the guard pass this run's removals
    max_in_flight: int = 10
    queue_batches: int = 3
    poll_interval: float = 0.5
    poll_max_interval: float = 5.0
    job_deadline: float = 3600.0
    max_resends: int = 25
    progress_interval: float = 0.5
    started_by: dict[str, Any] | None = None  # name and object id of who started it

    def jobs(self) -> JobOptions:
        return JobOptions(
            max_in_flight=self.max_in_flight,
            poll_interval=self.poll_interval,
            poll_max_interval=self.poll_max_interval,
            job_deadline=self.job_deadline,
            max_resends=self.max_resends,
        )


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
        sync_store: SyncStateStore | None = None,
        options: RunOptions | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.definition = definition
        self.run_id = run_id or new_run_id()
        self.options = options = options or RunOptions()
        self._segments = segments  # azure.storage.blob.ContainerClient of the source
        self._client_factory = client_factory
        self._api_key = api_key
        self._store = store
        self._on_progress = on_progress
        self.tally = RunTally()
        self._rejects = RejectsWriter()
        self._source: Source | None = None
        self._client: KlaviyoClient | None = None
        self._started = time.monotonic()
        # A dry run plans against the sync state too; SyncRun never saves it then.
        self.sync = SyncRun(
            definition,
            sync_store,
            run_id=self.run_id,
            options=SyncOptions(
                full=options.full,
                allow_mass_removal=options.allow_mass_removal,
                dry_run=options.dry_run,
            ),
        )

    # -- public ---------------------------------------------------------------------

    async def execute(self) -> dict[str, Any]:
        """Run to the end and return the report (also saved to the store, if any).

        When the run fails, its report is still written, and attached to the exception
        (see :func:`report_of`).
        """
        started_at = datetime.now(UTC)
        try:
            await self._run()
        except BaseException as exc:
            try:
                report = await asyncio.to_thread(self._finish, started_at, exc)
            except Exception as failure:  # never hide why the run stopped behind this
                logger.warning("run %s: could not write its report: %s", self.run_id, failure)
            else:
                exc.report = report  # type: ignore[attr-defined]
            raise
        return await asyncio.to_thread(self._finish, started_at, None)

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

    # -- the stages -----------------------------------------------------------------------

    async def _run(self) -> None:
        definition = self.definition
        if not definition.connection.privacy_consent:
            raise ConsentError(
                f"export {definition.name!r}: connection {definition.connection.name!r} has "
                "no privacy consent (connection.privacy_consent must be true before data is "
                "sent to Klaviyo)"
            )
        checkpoint = await asyncio.to_thread(self._open)
        assert self._source is not None
        # Progress from here: the snapshot is listed, and reading is what it reports.
        progress = asyncio.create_task(self._report_progress())
        try:
            if self.options.dry_run:
                await self._plan_only()
            else:
                await self._export(checkpoint)
        finally:
            progress.cancel()
            self._source.close()

    def _open(self) -> RunCheckpoint:
        """Reading and sync state set up; a structural problem fails here, before sending."""
        self._source = source = open_source(self._segments, self.definition)
        snapshot = source.snapshot
        logger.info(
            "export %s run %s: snapshot %s (%d files)%s",
            self.definition.name,
            self.run_id,
            snapshot.prefix,
            len(snapshot.files),
            " [dry run]" if self.options.dry_run else "",
        )
        self.sync.load()
        identity = {
            "snapshot": snapshot.prefix,
            "list_id": self.definition.destination.list_id,
            **self.sync.checkpoint_identity(),
        }
        store = None if self.options.dry_run else self._store
        checkpoint = RunCheckpoint(store, self.run_id, identity)
        checkpoint.load()
        return checkpoint

    def _batches(self) -> Any:
        assert self._source is not None
        return batches(
            self._source,
            list_id=self.definition.destination.list_id,
            tally=self.tally,
            reject=self._reject_row,
            to_send=self.sync.to_send,
        )

    async def _plan_only(self) -> None:
        """A dry run: read, plan, judge; look leavers up (a read), call no write endpoint."""
        planned = self._batches()
        while (batch := await asyncio.to_thread(next, planned, None)) is not None:
            self.tally.jobs_planned += 1
            batch.release_payload()
        self.tally.unchanged = self.sync.rows_unchanged
        if self.sync.has_leavers and self._client_factory is not None:
            async with self._connect(await self._key()) as client:
                await self.sync.remove(client)

    async def _export(self, checkpoint: RunCheckpoint) -> None:
        list_id = self.definition.destination.list_id
        async with self._connect(await self._key()) as client:
            await client.get_list(list_id)  # fail fast: 404 before anything is read
            queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=self.options.queue_batches)
            jobs = ImportJobs(
                client,
                tally=self.tally,
                reject=self._reject_row,
                checkpoint=checkpoint,
                options=self.options.jobs(),
                on_settled=self.sync.settled,
            )
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._read_then_remove(queue, client))
                    group.create_task(jobs.run(queue))
            except BaseExceptionGroup as group:
                # The first real cause (a fatal Klaviyo answer, a bad file), not the group.
                raise first_cause(group) from None
        await asyncio.to_thread(self.sync.save)

    async def _read_then_remove(
        self, queue: asyncio.Queue[Batch | None], client: KlaviyoClient
    ) -> None:
        """Feed the jobs; once the snapshot is read, judge and remove (beside the jobs)."""
        planned = self._batches()
        try:
            while (batch := await asyncio.to_thread(next, planned, None)) is not None:
                self.tally.jobs_planned += 1
                await queue.put(batch)
        finally:
            await queue.put(None)
        # Read to the end: its downloads and buffers go now, before removals and the
        # next sync state need memory of their own.
        assert self._source is not None
        self._source.close()
        # Beside the last jobs and the removals, which mostly wait for Klaviyo.
        sealed = asyncio.create_task(asyncio.to_thread(self.sync.seal))
        try:
            self.tally.unchanged = self.sync.rows_unchanged
            self.sync.judge()
            if await asyncio.to_thread(self._snapshot_changed):
                # Who "left" is judged against a snapshot that is no longer the one read
                # (a partition still being written looks like leavers): remove nobody now.
                self.sync.skip_removals("the snapshot changed while it was read")
                return
            await self.sync.remove(client)
        finally:
            await sealed

    def _snapshot_changed(self) -> bool:
        if not self.sync.has_leavers:
            return False  # nothing to remove: the run's own end check is enough
        snapshot = self._source.snapshot if self._source else None
        if snapshot is None or not snapshot.etags:
            return False
        now = list_snapshot_folder(self._segments, snapshot.prefix)
        return snapshot_changes(listing_of(snapshot), now, snapshot.prefix) is not None

    def _connect(self, api_key: str) -> KlaviyoClient:
        assert self._client_factory is not None
        self._client = self._client_factory(api_key)
        return self._client

    async def _key(self) -> str:
        assert self._api_key is not None
        return await self._api_key()

    def _reject_row(
        self, file: int, line: int, code: str, reason: str, email: str, *, after_submit: bool
    ) -> None:
        """Count a rejected row and write it to the rejected-rows CSV."""
        assert self._source is not None
        self.tally.reject(code, after_submit=after_submit)
        self._rejects.write(self._source.snapshot.files[file], line, code, reason, email)

    # -- progress and the end -------------------------------------------------------------

    async def _report_progress(self) -> None:
        if self._on_progress is None:
            return
        while True:
            self._on_progress(self.progress())
            await asyncio.sleep(self.options.progress_interval)  # a refresh rate, not a sync

    def _finish(self, started_at: datetime, error: BaseException | None) -> dict[str, Any]:
        if self._on_progress is not None:
            self._on_progress(self.progress())
        report = self.build_report(started_at, error)
        if self._store is not None:
            report["rejected_rows_blob"] = self._store.save_rejects(self._rejects.open_for_upload())
            report["report_blob"] = self._store.save_report(report)
        self._rejects.close()
        rows = report["rows"]
        logger.info(
            "export %s run %s %s: %d rows, %d sent, %d unchanged, %d rejected, %d duplicates "
            "in %.1fs",
            self.definition.name,
            self.run_id,
            report["status"],
            rows["read"],
            rows["sent"],
            rows["unchanged"],
            rows["rejected"],
            rows["duplicates"],
            report["timings"]["seconds"],
        )
        for warning in report["warnings"]:
            logger.warning("export %s run %s: %s", self.definition.name, self.run_id, warning)
        return report

    def build_report(
        self, started_at: datetime, error: BaseException | None = None
    ) -> dict[str, Any]:
        definition, source = self.definition, self._source
        return build_report(
            {
                "run_id": self.run_id,
                "export": definition.name,
                "list_id": definition.destination.list_id,
                "started_by": self.options.started_by,
            },
            tally=self.tally,
            dry_run=self.options.dry_run,
            container=definition.source.container,
            snapshot=source.snapshot if source else None,
            client=self._client,
            sync=self.sync.report(),
            outcome=self._outcome(error),
            started_at=started_at,
            seconds=time.monotonic() - self._started,
        )

    def _outcome(self, error: BaseException | None) -> dict[str, Any]:
        """status (succeeded / held / failed), the error or hold message, warnings."""
        tally, dry = self.tally, self.options.dry_run
        warnings = []
        if self._source is not None and tally.rows_read == 0 and error is None:
            warnings.append(f"the newest snapshot {self._source.snapshot.prefix} has no rows")
        status, failure, message = "succeeded", None, None
        if error is not None:
            status, failure = "failed", _describe(error)
        elif not tally.accounted(dry_run=dry):
            status, failure = "failed", "row counts do not add up; see the report"
        elif tally.jobs_submitted and tally.jobs_cancelled == tally.jobs_submitted:
            status = "failed"
            failure = f"Klaviyo cancelled every import job of the run ({tally.jobs_cancelled})"
        elif self.sync.held:
            status = "held"
            verdict = self.sync.planner.verdict if self.sync.planner else None
            message = verdict.message if verdict else None
        return {"status": status, "error": failure, "message": message, "warnings": warnings}


def _describe(error: BaseException) -> str:
    """Why the run stopped, as the report says it: one line, no secret, no row value."""
    if isinstance(error, asyncio.CancelledError):
        return "the run was cancelled"
    return describe_failure(error)
