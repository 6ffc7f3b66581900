"""Mirror sync around one run: the state it starts from, what it sends, who it removes.

    load      the export's sync state for its list (the generation a resumed run began from)
    classify  per block: joiners, changed and retried are sent; unchanged are not
    guard     once the snapshot is read: would the removals be a mass removal?
    remove    leavers this export added come off the list (shared/removals.py), but not
              those another export on the same list still syncs (shared/sharedlist.py)
    save      after the jobs and removals: the next state, only what Klaviyo confirmed

The stages themselves live in shared/plan.py, shared/guard.py, shared/removals.py,
shared/syncstate.py and shared/statestore.py; this module holds one run's use of them, so
the run stays a short driver. Completed jobs are handed to the plan as they settle (the
event loop only appends them; the reader thread that classifies never reads them), and
applied when the state is built, after the reading has finished.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.definitions import ExportDefinition
from shared.engine import release_free_memory
from shared.guard import GuardVerdict
from shared.importjobs import SettledJob
from shared.klaviyo import KlaviyoClient
from shared.plan import Leavers, Planner
from shared.profileblock import ProfileBlock
from shared.removals import RemovalResult, remove_leavers
from shared.sharedlist import kept_for_others
from shared.statestore import LoadedState, SyncStateStore
from shared.syncstate import SyncTarget

__all__ = ["SyncOptions", "SyncRun"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncOptions:
    full: bool = False  # send every profile, changed or not (leavers are still removed)
    allow_mass_removal: bool = False  # let this run remove past the guard
    dry_run: bool = False


class SyncRun:
    """One run's sync: create, ``load()`` (blocking), then feed it as the run goes."""

    def __init__(
        self,
        definition: ExportDefinition,
        store: SyncStateStore | None,
        *,
        run_id: str,
        options: SyncOptions,
    ) -> None:
        self.definition = definition
        self.run_id = run_id
        self.options = options
        self._store = store
        self._loaded: LoadedState | None = None
        self.planner: Planner | None = None
        self.removal: RemovalResult | None = None
        self.saved = False
        self.removals_skipped: str | None = None  # why leavers were kept this run
        self.kept_for_other_exports = 0  # leavers another export on the list still syncs

    @property
    def mode(self) -> str:
        return self.definition.sync.mode

    def load(self) -> None:
        """The state this run starts from (for a resumed run, the one its first attempt
        started from, so it plans the same jobs). Blocking: call in a worker thread."""
        if self._store is not None:
            self._loaded = self._store.load(run_id=self.run_id)
        state = self._loaded.state if self._loaded is not None else None
        self.planner = Planner(
            state,
            target=SyncTarget.of(self.definition),
            mode=self.mode,  # type: ignore[arg-type]  # validated by the schema
            full=self.options.full,
        )
        if self.planner.full_reason == "mapping changed":
            logger.info(
                "export %s: the mapping changed since the last sync; every profile is sent",
                self.definition.name,
            )

    def checkpoint_identity(self) -> dict[str, Any]:
        """What the run's jobs were planned from: a checkpoint of another plan is void."""
        planner = self._planner
        return {"sync_base": planner.base_generation, "sync_full": planner.full}

    @property
    def _planner(self) -> Planner:
        if self.planner is None:
            raise RuntimeError("SyncRun.load() first")
        return self.planner

    # -- while reading (reader thread) --------------------------------------------------

    def to_send(self, profiles: ProfileBlock) -> ProfileBlock:
        """The block's profiles that go to Klaviyo: joiners, changed, retried."""
        send = self._planner.classify(profiles.keys, profiles.attr_hashes, profiles.emails)
        return profiles.select(send)

    def seal(self) -> None:
        """The reading is over: sort the joiners for the next state now, while the last
        jobs run (blocking; not needed in a dry run, which saves nothing)."""
        if self.planner is not None and not self.options.dry_run:
            self.planner.seal()

    @property
    def rows_unchanged(self) -> int:
        return self._planner.rows_unchanged if self.planner is not None else 0

    # -- while the jobs run (event loop) --------------------------------------------------

    def settled(self, job: SettledJob) -> None:
        """A finished job: the keys Klaviyo took are confirmed when the state is built."""
        if job.cancelled:
            return
        keys = np.frombuffer(job.batch.hashes, dtype=np.uint64)
        if job.failed:
            keys = np.delete(keys, sorted(job.failed))
        # Klaviyo's created_at is what joined_group_at is compared with later; a job
        # whose answer lacks it falls back to when this process sent it. (The plan
        # copies the keys: the batch may be reused.)
        self._planner.confirm(keys, job.created_at_ms)

    def judge(self) -> GuardVerdict:
        """The guard's verdict, once the whole snapshot is classified."""
        verdict = self._planner.check_guard(
            max_removal_percent=self.definition.sync.max_removal_percent,
            allow_mass_removal=self.options.allow_mass_removal,
        )
        if verdict.held:
            logger.warning("export %s: %s", self.definition.name, verdict.message)
        elif verdict.overridden:
            logger.warning(
                "export %s: mass removal allowed for this run (%d people)",
                self.definition.name,
                verdict.would_remove,
            )
        return verdict

    async def remove(self, client: KlaviyoClient | None) -> None:
        """Take this export's leavers off the list (in a dry run: only look them up)."""
        planner = self._planner
        verdict = planner.verdict or self.judge()
        if verdict.held or self.mode != "mirror":
            return
        leavers = planner.leavers()
        if not len(leavers):
            return
        if client is None:
            raise RuntimeError("leavers to look up but no Klaviyo client")
        try:
            leavers, shared = await asyncio.to_thread(self._keep_shared, leavers)
        except Exception as exc:  # cannot tell who another export wants: remove nobody
            self.skip_removals(f"the other exports' sync states could not be read: {exc}")
            return
        removal = await remove_leavers(
            client,
            self.definition.destination.list_id,
            leavers,
            dry_run=self.options.dry_run,
        )
        kept = np.concatenate([removal.kept_not_owned, shared])
        self.removal = dataclasses.replace(removal, kept_not_owned=kept)
        self.kept_for_other_exports = len(shared)
        if not self.options.dry_run:
            planner.record_removals(
                removed=self.removal.removed,
                kept_not_owned=self.removal.kept_not_owned,
                gone=self.removal.gone,
            )

    def _keep_shared(self, leavers: Leavers) -> tuple[Leavers, np.ndarray]:
        """Leavers another export on the same list still syncs stay (shared/sharedlist.py)."""
        if self._store is None:
            return leavers, np.zeros(0, dtype=np.uint64)
        shared = kept_for_others(self._store, leavers.keys)
        if not shared.any():
            return leavers, np.zeros(0, dtype=np.uint64)
        logger.info(
            "export %s: %d leavers stay on list %s: another export still syncs them there",
            self.definition.name,
            int(shared.sum()),
            self.definition.destination.list_id,
        )
        own = np.flatnonzero(~shared)
        kept = Leavers(
            keys=leavers.keys[own],
            emails=[leavers.emails[i] for i in own],
            first_added_ms=leavers.first_added_ms[own],
        )
        return kept, leavers.keys[shared]

    def skip_removals(self, reason: str) -> None:
        """Remove nobody this run; the leavers stay in the state for the next one."""
        self.removals_skipped = reason
        logger.warning("export %s: removals skipped: %s", self.definition.name, reason)

    @property
    def has_leavers(self) -> bool:
        """Whether the removal stage would call Klaviyo (judges the run if not yet done)."""
        verdict = self._planner.verdict or self.judge()
        return self.mode == "mirror" and not verdict.held and verdict.would_remove > 0

    # -- at the end ---------------------------------------------------------------------

    def save(self) -> None:
        """Store the next state: what Klaviyo confirmed. Blocking; not in a dry run."""
        if self.options.dry_run or self._store is None or self._loaded is None:
            return
        # The reading's buffers are freed by now: give their pages back before the
        # next state needs memory of its own.
        release_free_memory()
        self._store.save(self._planner.next_state(self.run_id), self._loaded)
        self.saved = True

    @property
    def held(self) -> bool:
        verdict = self.planner.verdict if self.planner is not None else None
        return bool(verdict is not None and verdict.held)

    def report(self) -> dict[str, Any]:
        """The report's ``members`` counts and ``sync`` section."""
        if self.planner is None:
            return {"members": None, "sync": None}
        planner = self.planner
        summary = planner.summary()
        if self.options.dry_run:
            members = _planned_members(summary, self.removal)
        else:
            members = planner.members()
        removal = self.removal.counts if self.removal is not None else None
        return {
            "members": members,
            "sync": {
                "mode": self.mode,
                "full": planner.full,
                "full_reason": planner.full_reason,
                "base_generation": planner.base_generation,
                "state_saved": self.saved,
                "plan": {k: summary[k] for k in _PLAN_KEYS},
                "guard": summary["guard"],
                "removal": removal,
                "removals_skipped": self.removals_skipped,
                "kept_for_other_exports": self.kept_for_other_exports,
            },
        }


_PLAN_KEYS = ("joiners", "changed", "retried", "unchanged", "to_send", "leavers")


def _planned_members(summary: dict[str, Any], removal: RemovalResult | None) -> dict[str, int]:
    """A dry run's ``members``: what a real run would do, as far as it can be known."""
    guard = summary["guard"] or {}
    held = guard.get("would_remove", 0) if guard.get("held") else 0
    return {
        "added": summary["joiners"],
        "updated": summary["changed"],
        "unchanged": summary["unchanged"],
        "removed": len(removal.removed) + len(removal.gone) if removal else 0,
        "kept_not_owned": len(removal.kept_not_owned) if removal else 0,
        "held": held,
        "retried": summary["retried"],
        "failed": 0,
    }
