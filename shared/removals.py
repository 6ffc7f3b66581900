"""The removal stage of a mirror sync: where leavers are taken off the Klaviyo list.

Klaviyo removes list members by profile id only, and a run knows its leavers by e-mail.
So the stage looks them up on the list, 100 e-mails a call, and decides per person:

    on the list, joined_group_at >= when this export first added them  -> removed
    on the list, joined earlier (or first add unknown)                  -> kept_not_owned
    not on the list any more                                            -> gone

``joined_group_at`` is "when this profile most recently joined the list"; adding a
member again leaves it alone. A person who was on the list before this export's first
add (a sign-up form, another tool, another segment) therefore shows an earlier time and
stays. Both times are Klaviyo's clock (``first_added_ms`` is the ``created_at`` of the
import job that first added the person) and are compared at whole seconds, as the two
may be written with different precision.

The owned ones go 1,000 ids per DELETE. Lookups (75/s, 750/min) and removals (10/s,
150/min) are separate rate-limit families, so removals start as soon as 1,000 owned ids
are known and overlap the remaining lookups. Faults are retried by the client; removing
a profile that is no longer a member is a no-op, so the stage is idempotent: run again,
it finds the removed people gone and removes nothing more. ``dry_run`` looks up and
decides, and calls no write endpoint.

No e-mail address reaches a log line or an exception raised here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from shared.errors import KlaviyoFatalError
from shared.klaviyo import MAX_LOOKUP_EMAILS, MAX_REMOVAL_IDS, KlaviyoClient, ListMember

__all__ = ["LeaverSet", "Leavers", "RemovalResult", "remove_leavers"]

logger = logging.getLogger(__name__)

# Enough lookups in flight that round trips never hold the rate below 75/s, and enough
# removals that a slow DELETE does not hold them below 10/s; the client's rate limiter,
# not these numbers, sets the pace.
LOOKUP_CONCURRENCY = 16
REMOVAL_CONCURRENCY = 4
# The e-mails of a lookup travel in its URL, and servers cap a request line at ~8 KB
# (aiohttp at 8,190 bytes). Quoted, comma-separated and with '@' percent-encoded, an
# address costs its length plus ~8: a hundred typical ones take ~3.5 KB, and a batch of
# unusually long ones is cut short of a hundred to stay within this budget.
LOOKUP_URL_BUDGET = 6_000

_PENDING, _OWNED, _REMOVED, _KEPT, _GONE = range(5)


class LeaverSet(Protocol):
    """What the plan hands over: three aligned columns, one row per leaver."""

    @property
    def emails(self) -> Sequence[str]: ...  # normalised (trimmed, lower-case)

    @property
    def keys(self) -> npt.NDArray[np.uint64]: ...

    @property
    def first_added_ms(self) -> npt.NDArray[np.int64]: ...  # Klaviyo's clock; 0 unknown


@dataclass(frozen=True, slots=True)
class Leavers:
    """A ``LeaverSet`` built by hand (tests, tools); checks the columns line up."""

    emails: Sequence[str]
    keys: npt.NDArray[np.uint64]
    first_added_ms: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        if not len(self.emails) == len(self.keys) == len(self.first_added_ms):
            raise ValueError(
                f"leaver columns differ in length: {len(self.emails)} e-mails, "
                f"{len(self.keys)} keys, {len(self.first_added_ms)} first-added times"
            )


@dataclass(frozen=True, slots=True)
class RemovalResult:
    """Who the stage removed, kept and found gone (their keys), and what it cost.

    In a dry run ``removed`` holds the people it would have removed.
    """

    removed: npt.NDArray[np.uint64]
    kept_not_owned: npt.NDArray[np.uint64]
    gone: npt.NDArray[np.uint64]
    lookup_calls: int
    removal_calls: int
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "removed": len(self.removed),
            "kept_not_owned": len(self.kept_not_owned),
            "gone": len(self.gone),
            "lookup_calls": self.lookup_calls,
            "removal_calls": self.removal_calls,
        }


async def remove_leavers(
    client: KlaviyoClient, list_id: str, leavers: LeaverSet, *, dry_run: bool = False
) -> RemovalResult:
    """Look the leavers up on ``list_id``, and remove the ones this export added."""
    stage = _RemovalStage(client, list_id, leavers, dry_run=dry_run)
    started = time.perf_counter()
    await stage.run()
    result = stage.result(time.perf_counter() - started)
    logger.info(
        "removals on list %s%s: %d removed, %d kept (not added by this export), %d gone; "
        "%d lookups, %d removal calls, %.1fs",
        list_id,
        " (dry run)" if dry_run else "",
        len(result.removed),
        len(result.kept_not_owned),
        len(result.gone),
        result.lookup_calls,
        result.removal_calls,
        result.seconds,
    )
    return result


class _RemovalStage:
    """One run of the stage: lookup workers feed batches of owned ids to removal workers."""

    def __init__(
        self, client: KlaviyoClient, list_id: str, leavers: LeaverSet, *, dry_run: bool
    ) -> None:
        self.client, self.list_id, self.dry_run = client, list_id, dry_run
        self.emails = list(leavers.emails)
        self.keys = np.asarray(leavers.keys, dtype=np.uint64)
        first_added = np.asarray(leavers.first_added_ms, dtype=np.int64)
        if not len(self.emails) == len(self.keys) == len(first_added):
            raise ValueError("leaver columns differ in length")
        self.first_added = first_added
        self.status = np.full(len(self.emails), _PENDING, dtype=np.int8)
        self.lookup_calls = self.removal_calls = 0
        self._next = 0  # the first leaver no lookup has taken yet
        self._owned_ids: list[str] = []
        self._owned_rows: list[int] = []
        self._batches: asyncio.Queue[tuple[list[str], list[int]] | None] = asyncio.Queue(
            maxsize=2 * REMOVAL_CONCURRENCY
        )

    async def run(self) -> None:
        if not self.emails:
            return
        try:
            async with asyncio.TaskGroup() as group:
                lookups = [
                    group.create_task(self._look_up_all()) for _ in range(LOOKUP_CONCURRENCY)
                ]
                removers = 0 if self.dry_run else REMOVAL_CONCURRENCY
                for _ in range(removers):
                    group.create_task(self._remove_all())
                await asyncio.gather(*lookups)
                await self._flush()
                for _ in range(removers):
                    await self._batches.put(None)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        if self.dry_run:
            self.status[self.status == _OWNED] = _REMOVED

    def result(self, seconds: float) -> RemovalResult:
        return RemovalResult(
            removed=self.keys[self.status == _REMOVED],
            kept_not_owned=self.keys[self.status == _KEPT],
            gone=self.keys[self.status == _GONE],
            lookup_calls=self.lookup_calls,
            removal_calls=self.removal_calls,
            dry_run=self.dry_run,
            seconds=seconds,
        )

    # --- lookups ---------------------------------------------------------------------

    async def _look_up_all(self) -> None:
        while self._next < len(self.emails):
            start = self._next
            self._next = end = self._batch_end(start)
            members = await self.client.get_list_members_by_email(
                self.list_id, self.emails[start:end]
            )
            self.lookup_calls += 1
            self._decide(start, end, members)
            while len(self._owned_ids) >= MAX_REMOVAL_IDS:
                await self._flush(MAX_REMOVAL_IDS)

    def _batch_end(self, start: int) -> int:
        """Where the lookup starting at ``start`` ends: 100 e-mails, or the URL budget."""
        end, budget = start, LOOKUP_URL_BUDGET
        limit = min(start + MAX_LOOKUP_EMAILS, len(self.emails))
        while end < limit:
            budget -= len(self.emails[end]) + 8
            if budget < 0 and end > start:
                break
            end += 1
        return end

    def _decide(self, start: int, end: int, members: list[ListMember]) -> None:
        rows: dict[str, list[int]] = {}
        for row in range(start, end):
            rows.setdefault(self.emails[row], []).append(row)
        self.status[start:end] = _GONE  # unless the list says otherwise, below
        for member in members:
            for row in rows.get(member.email or "", ()):
                if self.status[row] != _GONE:
                    continue  # the same person twice in one answer
                if self._owned(row, member.joined_group_at_ms):
                    self.status[row] = _OWNED
                    self._owned_ids.append(member.profile_id)
                    self._owned_rows.append(row)
                else:
                    self.status[row] = _KEPT

    def _owned(self, row: int, joined_ms: int) -> bool:
        first_added = int(self.first_added[row])
        # Unknown on either side: ownership cannot be shown, so the person stays.
        return first_added > 0 and joined_ms > 0 and joined_ms // 1000 >= first_added // 1000

    async def _flush(self, size: int | None = None) -> None:
        """Hand owned ids to the removal workers (``size`` at most), if there are any."""
        take = len(self._owned_ids) if size is None else size
        if take == 0:
            return
        ids, rows = self._owned_ids[:take], self._owned_rows[:take]
        del self._owned_ids[:take], self._owned_rows[:take]
        if not self.dry_run:
            await self._batches.put((ids, rows))

    # --- removals --------------------------------------------------------------------

    async def _remove_all(self) -> None:
        while (batch := await self._batches.get()) is not None:
            await self._remove(*batch)

    async def _remove(self, ids: list[str], rows: list[int]) -> None:
        while ids:
            try:
                await self.client.remove_list_members(self.list_id, ids)
            except KlaviyoFatalError as exc:
                self.removal_calls += 1
                refused = _refused_position(exc, len(ids))
                if refused is None:
                    raise
                # The profile went (deleted in Klaviyo) between lookup and removal.
                self.status[rows[refused]] = _GONE
                del ids[refused], rows[refused]
                continue
            self.removal_calls += 1
            self.status[rows] = _REMOVED
            return


def _refused_position(exc: KlaviyoFatalError, count: int) -> int | None:
    """The position of the one profile id a 404/400 points at, if it points at one."""
    if exc.status not in (400, 404):
        return None
    for error in exc.errors:
        pointer = ((error.get("source") or {}).get("pointer") or "").strip("/").split("/")
        shaped = len(pointer) == 3 and pointer[0] == "data" and pointer[2] == "id"
        if shaped and pointer[1].isdigit() and int(pointer[1]) < count:
            return int(pointer[1])
    return None


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The first real error of a task group (what the caller handles), not the group."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
