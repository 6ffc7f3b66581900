"""The sandbox's state: its accounts (see ``profiles``), and import jobs as they run.

A job holds its profiles as a few columns of identifiers (see ``prepare``), runs them in
chunks in a background task paced by ``job_delay`` and ``job_seconds_per_1000_profiles``,
and drops them once it has run, keeping only counts, import errors and profile ids.

Everything here runs on the sandbox's event loop thread; nothing is locked.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from array import array
from dataclasses import dataclass, field
from typing import Any

from .config import SandboxConfig
from .membership import ListState, iso_micros, micros
from .prepare import PreparedJob
from .profiles import Account, profile_id

__all__ = ["JOB_STATUSES", "ImportErrorRecord", "Job", "SandboxState"]

_log = logging.getLogger(__name__)

JOB_STATUSES = ("queued", "processing", "complete", "cancelled")
# Profiles handled between two yields to the event loop: small enough to keep request
# latency low while jobs run, large enough to keep the per-chunk overhead negligible.
CHUNK = 1000


@dataclass(slots=True)
class ImportErrorRecord:
    id: str
    index: int
    field: str
    detail: str
    payload: dict[str, Any]


@dataclass(slots=True, eq=False)
class Job:
    id: str
    account: Account
    list_ids: tuple[str, ...]
    total: int
    created_at: float
    created_monotonic: float
    expires_at: float
    prepared: PreparedJob | None  # dropped once the job has run
    status: str = "queued"
    completed: int = 0
    failed: int = 0
    started_at: float | None = None
    completed_at: float | None = None
    errors: list[ImportErrorRecord] = field(default_factory=list)
    profile_numbers: array = field(default_factory=lambda: array("q"))

    def snapshot(self) -> dict[str, Any]:
        """A plain summary for in-process inspection."""
        return {
            "id": self.id,
            "status": self.status,
            "total_count": self.total,
            "completed_count": self.completed,
            "failed_count": self.failed,
            "list_ids": list(self.list_ids),
            "errors": [
                {"index": e.index, "field": e.field, "detail": e.detail} for e in self.errors
            ],
        }


class SandboxState:
    """All accounts and jobs of one sandbox, and the background tasks running the jobs."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._owners = bytearray(1)  # profile number -> account ordinal (number 0 unused)
        self.accounts_by_key: dict[str, Account] = {}
        self.accounts: list[Account] = []
        self.list_owner: dict[str, Account] = {}
        self.jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._build_accounts()

    def _build_accounts(self) -> None:
        self.accounts_by_key.clear()
        self.list_owner.clear()
        self.accounts.clear()
        for ordinal, spec in enumerate(self.config.accounts, start=1):
            account = Account(
                spec.name,
                [(lst.id, lst.name) for lst in spec.lists],
                ordinal=ordinal,
                allocate=functools.partial(self._allocate, ordinal),
                store_attributes=self.config.store_attributes,
            )
            self.accounts.append(account)
            for key in spec.api_keys:
                self.accounts_by_key[key] = account
            for list_id in account.lists:
                self.list_owner[list_id] = account

    def reset(self) -> None:
        """Forget every profile, membership and job; cancel the jobs still running."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self.jobs.clear()
        self._owners = bytearray(1)
        self._build_accounts()

    def _allocate(self, ordinal: int, count: int) -> int:
        # Profile numbers are global, so one byte per profile tells which account owns it.
        first = len(self._owners)
        self._owners.extend(bytes((ordinal,)) * count)
        return first

    def owns(self, account: Account, number: int) -> bool:
        return 0 < number < len(self._owners) and self._owners[number] == account.ordinal

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- jobs -------------------------------------------------------------------------

    def create_job(self, account: Account, prepared: PreparedJob) -> Job:
        now = time.time()
        job = Job(
            id=f"01SBXJ{uuid.uuid4().hex[:20].upper()}",
            account=account,
            list_ids=prepared.list_ids,
            total=prepared.total,
            created_at=now,
            created_monotonic=time.monotonic(),
            expires_at=now + self.config.job_expiry_days * 86400,
            prepared=prepared,
        )
        self.jobs[job.id] = job
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job: Job) -> None:
        try:
            await self._run_steps(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A sandbox bug would otherwise leave the job "processing" without a trace.
            _log.exception("profile bulk import job %s failed inside the sandbox", job.id)
            raise

    async def _run_steps(self, job: Job) -> None:
        delay = job.created_monotonic + self.config.job_delay - time.monotonic()
        await asyncio.sleep(max(0.0, delay))
        job.status, job.started_at = "processing", time.time()
        for start in range(0, job.total, CHUNK):
            # Read the config each time round: a test may cancel jobs or slow them mid-run.
            if self.config.cancel_jobs:
                job.status, job.prepared = "cancelled", None
                return
            end = min(start + CHUNK, job.total)
            self._process(job, start, end)
            pace = self.config.job_seconds_per_1000_profiles * (end - start) / 1000
            await asyncio.sleep(pace)
        job.status, job.completed_at, job.prepared = "complete", time.time(), None

    def _process(self, job: Job, start: int, end: int) -> None:
        """Run profiles ``start:end``: import errors for the bad ones, upserts for the rest."""
        prepared = job.prepared
        assert prepared is not None
        columns = [
            prepared.keys[start:end],
            prepared.phones[start:end],
            prepared.external_ids[start:end],
        ]
        attributes = prepared.attributes[start:end] if prepared.attributes is not None else None
        bad = [i for i in range(start, end) if i in prepared.problems] if prepared.problems else []
        if bad:
            for i in bad:
                field_name, detail, payload = prepared.problems[i]
                job.errors.append(
                    ImportErrorRecord(str(uuid.uuid4()), i, field_name, detail, payload)
                )
            keep = [i - start for i in range(start, end) if i not in prepared.problems]
            columns = [[column[i] for i in keep] for column in columns]
            if attributes is not None:
                attributes = [attributes[i] for i in keep]
        numbers = job.account.upsert_columns(*columns, attributes)
        job.profile_numbers.extend(numbers)
        now = time.time()
        for list_id in job.list_ids:
            job.account.lists[list_id].add(numbers, now)
        job.completed += len(numbers)
        job.failed += len(bad)

    def find_job(self, account: Account, job_id: str) -> Job | None:
        """The account's job, or None: another account's job, like an expired one, is
        as invisible as a missing one (Klaviyo keeps a job until its ``expires_at``)."""
        job = self.jobs.get(job_id)
        if job is None or job.account is not account or job.expires_at <= time.time():
            return None
        return job

    # --- inspection -------------------------------------------------------------------

    def list_emails(self, list_id: str) -> list[str]:
        account, lst = self._list(list_id)
        return account.emails_of(lst.members)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.jobs[job_id].snapshot()

    def expire_job(self, job_id: str) -> None:
        """Let a job reach its ``expires_at`` now (KeyError if unknown)."""
        self.jobs[job_id].expires_at = time.time() - 1.0

    def _list(self, list_id: str) -> tuple[Account, ListState]:
        account = self.list_owner.get(list_id)
        if account is None:
            raise KeyError(list_id)
        return account, account.lists[list_id]

    def add_members(self, list_id: str, emails: list[str], joined_at: float | None) -> int:
        """Profiles by e-mail (created when new) join the list, as a sign-up form does.

        ``joined_at`` (epoch seconds) backdates their ``joined_group_at``; profiles that
        are members already keep theirs. Returns how many joined.
        """
        account, lst = self._list(list_id)
        keys = [e.strip().lower() for e in emails]
        if not all(keys):
            raise ValueError("every member needs an e-mail address")
        empty: list[str | None] = [None] * len(keys)
        attributes = [{"email": k} for k in keys] if account.store_attributes else None
        numbers = account.upsert_columns(list(keys), empty, list(empty), attributes)
        at = None if joined_at is None else micros(joined_at)
        return lst.add(numbers, time.time(), joined_at=at)

    def remove_members(self, list_id: str, emails: list[str]) -> int:
        """Take profiles out of the list by e-mail (an unsubscribe elsewhere); returns how many."""
        account, lst = self._list(list_id)
        found = (account.by_email.get(e.strip().lower()) for e in emails)
        return lst.remove([n for n in found if n is not None], time.time())

    def members(self, list_id: str) -> list[dict[str, Any]]:
        """Every member: profile id, e-mail, ``joined_group_at`` (and as epoch seconds)."""
        account, lst = self._list(list_id)
        out = [
            {
                "id": profile_id(number),
                "email": account.email_of.get(number),
                "joined_group_at": iso_micros(joined),
                "joined_at": joined / 1_000_000,
            }
            for number, joined in lst.members.items()
        ]
        out.sort(key=lambda m: (m["email"] or "", m["id"]))
        return out

    def profile(self, email: str) -> dict[str, Any] | None:
        """A profile found by e-mail in any account: id, attributes, consent, lists."""
        for account in self.accounts:
            number = account.by_email.get(email.lower())
            if number is None:
                continue
            return {
                "id": profile_id(number),
                "account": account.name,
                "attributes": account.profile_attributes((number,))[number],
                "consent": account.consent.get(number, {}),
                "lists": sorted(lid for lid, lst in account.lists.items() if number in lst.members),
            }
        return None

    def counts(self) -> dict[str, Any]:
        statuses = dict.fromkeys(JOB_STATUSES, 0)
        for job in self.jobs.values():
            statuses[job.status] += 1
        return {
            "jobs": statuses,
            "profiles": sum(a.profile_count for a in self.accounts),
            "lists": {lid: len(a.lists[lid].members) for lid, a in self.list_owner.items()},
        }
