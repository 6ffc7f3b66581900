"""What the sandbox remembers: accounts, profiles, lists, import jobs, consent.

Memory is kept small enough for a million profiles: a profile is an int inside the
sandbox (its public id is derived from it), each account indexes profiles by e-mail,
phone and external id, a list is a dict profile -> joined-at, and attributes are kept
only when ``store_attributes`` is on. A job drops its profiles once processed.

Everything here runs on the sandbox's event loop thread; nothing is locked.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from array import array
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .config import SandboxConfig
from .identifiers import identifier_problems
from .validation import BulkImportRequest, SubscribeRequest

__all__ = [
    "JOB_STATUSES",
    "Account",
    "ImportErrorRecord",
    "Job",
    "ListState",
    "SandboxState",
    "iso",
    "parse_profile_id",
    "profile_id",
]

_log = logging.getLogger(__name__)

JOB_STATUSES = ("queued", "processing", "complete", "cancelled")
# Profiles handled between two yields to the event loop: small enough to keep request
# latency low while jobs run, large enough to keep the per-chunk overhead negligible.
CHUNK = 1000
_PROFILE_PREFIX = "01SBXP"


def iso(timestamp: float | None) -> str | None:
    """Klaviyo's timestamp format (ISO 8601, microseconds, UTC offset)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds")


def profile_id(number: int) -> str:
    """The public id of profile ``number``: 26 characters, like a Klaviyo id."""
    return f"{_PROFILE_PREFIX}{number:020d}"


def parse_profile_id(text: str) -> int | None:
    if len(text) != 26 or not text.startswith(_PROFILE_PREFIX) or not text[6:].isdigit():
        return None
    return int(text[6:])


@dataclass(slots=True)
class ListState:
    id: str
    name: str
    created: float
    updated: float
    members: dict[int, float] = field(default_factory=dict)  # profile -> joined at

    def add(self, numbers: Iterable[int], now: float) -> int:
        """Add members; one already in keeps its first joined-at. Returns how many joined."""
        fresh = dict.fromkeys(numbers, now)
        for number in fresh.keys() & self.members.keys():  # set ops in C, loop only on repeats
            del fresh[number]
        self.members.update(fresh)
        if fresh:
            self.updated = now
        return len(fresh)

    def remove(self, numbers: Iterable[int], now: float) -> int:
        removed = sum(self.members.pop(n, None) is not None for n in numbers)
        if removed:
            self.updated = now
        return removed


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
    profiles: list[dict[str, Any]] | None
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


class Account:
    """Profiles, lists and consent of one Klaviyo account."""

    def __init__(
        self,
        name: str,
        lists: Iterable[tuple[str, str]],
        *,
        ordinal: int,
        allocate: Callable[[int], int],
        store_attributes: bool,
    ) -> None:
        now = time.time()
        self.name = name
        self.ordinal = ordinal
        self.lists = {lid: ListState(lid, lname, now, now) for lid, lname in lists}
        self._allocate = allocate  # n -> first of n new consecutive profile numbers
        self.store_attributes = store_attributes
        self.by_email: dict[str, int] = {}
        self.by_phone: dict[str, int] = {}
        self.by_external_id: dict[str, int] = {}
        self.attributes: dict[int, dict[str, Any]] = {}
        self.consent: dict[int, dict[str, Any]] = {}
        self.profile_count = 0

    def _find_by_other_ids(self, attributes: dict[str, Any]) -> int | None:
        phone, external_id = attributes.get("phone_number"), attributes.get("external_id")
        number = self.by_phone.get(phone) if phone else None
        if number is None and external_id:
            number = self.by_external_id.get(external_id)
        return number

    def upsert(self, attributes: dict[str, Any]) -> int:
        """Create or update a profile found by e-mail, else phone, else external id."""
        email = attributes.get("email")
        email = email.lower() if email else None
        phone = attributes.get("phone_number") or None
        external_id = attributes.get("external_id") or None
        number = self.by_email.get(email) if email else None
        if number is None:
            number = self._find_by_other_ids(attributes)
        if number is None:
            number = self._allocate(1)
            self.profile_count += 1
        if email:
            self.by_email[email] = number
        if phone:
            self.by_phone[phone] = number
        if external_id:
            self.by_external_id[external_id] = number
        if self.store_attributes:
            self.attributes[number] = _merge(self.attributes.get(number), attributes)
        return number

    def upsert_many(self, attributes: list[dict[str, Any]]) -> list[int]:
        """``upsert`` for a chunk, in order, with whole-chunk dict operations.

        The benchmark sends a million new profiles: per-profile Python calls would make
        the sandbox, not the rate limit, the bottleneck. Each step has a fast path for
        the usual chunk (everyone has an e-mail; all new or all known) and a general one.
        """
        emails = [a.get("email") for a in attributes]
        keys = "\n".join(emails).lower().split("\n") if None not in emails else []
        if len(keys) != len(attributes):  # someone without an e-mail (or with a newline)
            return [self.upsert(a) for a in attributes]
        others = {
            "phone_number": ([a.get("phone_number") for a in attributes], self.by_phone),
            "external_id": ([a.get("external_id") for a in attributes], self.by_external_id),
        }
        numbers = list(map(self.by_email.get, keys))
        if None in numbers:
            numbers = self._create(keys, numbers, others)
        for values, index in others.values():
            if None not in values and "" not in values:
                index.update(zip(values, numbers, strict=True))
            elif any(values):
                index.update((v, n) for v, n in zip(values, numbers, strict=True) if v)
        if self.store_attributes:
            for number, item in zip(numbers, attributes, strict=True):
                self.attributes[number] = _merge(self.attributes.get(number), item)
        return numbers

    def _create(
        self,
        keys: list[str],
        numbers: list[int | None],
        others: dict[str, tuple[list[Any], dict[str, int]]],
    ) -> list[int]:
        """Numbers for every key: found by phone or external id, else newly allocated."""
        if numbers.count(None) == len(numbers):
            missing: Sequence[int] = range(len(numbers))
        else:
            missing = [i for i, n in enumerate(numbers) if n is None]
        for values, index in others.values():
            wanted = values if len(missing) == len(values) else [values[i] for i in missing]
            if index and not index.keys().isdisjoint(wanted):  # known by another identifier
                for i in missing:
                    if values[i] and (number := index.get(values[i])) is not None:
                        self.by_email.setdefault(keys[i], number)
        candidates = keys if len(missing) == len(keys) else [keys[i] for i in missing]
        # dict.fromkeys also merges repeats of one new address within the chunk.
        new = dict.fromkeys(candidates)
        if len(new) and not self.by_email.keys().isdisjoint(new):
            new = {k: None for k in new if k not in self.by_email}
        first = self._allocate(len(new))
        fresh = range(first, first + len(new))
        self.by_email.update(zip(new, fresh, strict=True))
        self.profile_count += len(new)
        if len(new) == len(keys):  # all new and distinct: the numbers are the new range
            return list(fresh)
        return list(map(self.by_email.get, keys))

    def profile_attributes(self, numbers: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Attributes of a few profiles; identifiers only when attributes are not kept."""
        if self.store_attributes:
            return {n: self.attributes.get(n, {}) for n in numbers}
        # Without stored attributes the indexes are the only record: scan them once
        # (O(profiles); pages of list members read that way, never the bulk path).
        out: dict[int, dict[str, Any]] = {n: {} for n in numbers}
        for key, index in (
            ("email", self.by_email),
            ("phone_number", self.by_phone),
            ("external_id", self.by_external_id),
        ):
            for value, number in index.items():
                if number in out:
                    out[number][key] = value
        return out

    def emails_of(self, members: Container[int]) -> list[str]:
        return sorted(email for email, n in self.by_email.items() if n in members)

    def subscribe(self, request: SubscribeRequest, now: float) -> None:
        for item in request.profiles:
            attributes = {"email": item.email, "phone_number": item.phone_number}
            number = self.upsert({k: v for k, v in attributes.items() if v})
            record = self.consent.setdefault(number, {})
            for channel, params in item.channels.items():
                if params is not None:
                    record[channel] = {
                        "parameters": params,
                        "consented_at": iso(now),
                        "custom_source": request.custom_source,
                    }
            if request.list_id is not None:
                self.lists[request.list_id].add((number,), now)


def _merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if old is None:
        return dict(new)
    merged = dict(old)
    for key, value in new.items():
        # Klaviyo merges custom properties and location key by key; other fields replace.
        if key in ("properties", "location") and isinstance(value, dict):
            merged[key] = {**(old.get(key) or {}), **value}
        else:
            merged[key] = value
    return merged


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

    def create_job(self, account: Account, request: BulkImportRequest) -> Job:
        now = time.time()
        job = Job(
            id=f"01SBXJ{uuid.uuid4().hex[:20].upper()}",
            account=account,
            list_ids=request.list_ids,
            total=len(request.profiles),
            created_at=now,
            created_monotonic=time.monotonic(),
            expires_at=now + self.config.job_expiry_days * 86400,
            profiles=request.profiles,
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
                job.status, job.profiles = "cancelled", None
                return
            end = min(start + CHUNK, job.total)
            self._process(job, start, end)
            pace = self.config.job_seconds_per_1000_profiles * (end - start) / 1000
            await asyncio.sleep(pace)
        job.status, job.completed_at, job.profiles = "complete", time.time(), None

    def _process(self, job: Job, start: int, end: int) -> None:
        # The hot path of the benchmark (a million profiles): chunk-wide checks and upserts,
        # so that the per-profile work happens inside C wherever it can.
        assert job.profiles is not None
        attributes = [p["attributes"] for p in job.profiles[start:end]]
        problems = identifier_problems(attributes)
        if problems:
            for i, (field_name, detail) in sorted(problems.items()):
                job.errors.append(
                    ImportErrorRecord(
                        str(uuid.uuid4()), start + i, field_name, detail, attributes[i]
                    )
                )
            attributes = [a for i, a in enumerate(attributes) if i not in problems]
        numbers = job.account.upsert_many(attributes)
        job.profile_numbers.extend(numbers)
        now = time.time()
        for list_id in job.list_ids:
            job.account.lists[list_id].add(numbers, now)
        job.completed += len(numbers)
        job.failed += len(problems)

    def find_job(self, account: Account, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        # Another account's job is as invisible as a missing one.
        return job if job is not None and job.account is account else None

    # --- inspection -------------------------------------------------------------------

    def list_emails(self, list_id: str) -> list[str]:
        account = self.list_owner.get(list_id)
        if account is None:
            raise KeyError(list_id)
        return account.emails_of(account.lists[list_id].members)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.jobs[job_id].snapshot()

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
