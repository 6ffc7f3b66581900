"""A small in-memory Klaviyo list and a run driver, for the planner's tests.

The list keeps ``joined_group_at`` per member the way Klaviyo documents it: set when a
profile joins, unchanged when it is added again while a member. The removal outcome is
decided as the removal stage does: a leaver no longer on the list is ``gone``; one who
joined before this export first added them (or whose first add is unknown) is
``kept_not_owned``; the others are removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from shared.guard import GuardVerdict
from shared.plan import Planner
from shared.syncstate import SyncState, SyncTarget, email_key

TARGET = SyncTarget("vip", "Y6nRLr", "sha256:mapping-1")


def email(name: str) -> str:
    return f"{name}@example.com"


def attr_hash(name: str, version: int) -> int:
    """The hash of person ``name``'s profile in its ``version``-th form."""
    return email_key(f"{name}|v{version}")


def block_arrays(snapshot: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    names = list(snapshot)
    emails = [email(n) for n in names]
    keys = np.array([email_key(e) for e in emails], dtype=np.uint64)
    hashes = np.array([attr_hash(n, v) for n, v in snapshot.items()], dtype=np.uint64)
    return keys, hashes, emails


@dataclass
class KlaviyoList:
    """E-mail -> joined_group_at (ms); the clock is Klaviyo's."""

    members: dict[str, int] = field(default_factory=dict)
    clock: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z

    def tick(self, ms: int = 1000) -> int:
        self.clock += ms
        return self.clock

    def add(self, emails: Iterable[str]) -> None:
        for e in emails:
            self.members.setdefault(e, self.tick(1))

    def sign_up(self, *names: str) -> None:
        """People on the list through a form, not through this export."""
        self.add(email(n) for n in names)


@dataclass
class Day:
    planner: Planner
    sent: set[str]
    verdict: GuardVerdict
    state: SyncState
    members: dict[str, int]


def run_day(
    state: SyncState | None,
    snapshot: Mapping[str, int],
    klaviyo: KlaviyoList,
    *,
    generation: str,
    target: SyncTarget = TARGET,
    mode: str = "mirror",
    full: bool = False,
    fail: Iterable[str] = (),
    lost_jobs: bool = False,
    limit: float = 10,
    allow: bool = False,
    block_size: int = 3,
    job_size: int = 4,
    seal: bool = False,
) -> Day:
    """One run: classify in blocks, send jobs to ``klaviyo``, remove, next state.

    ``fail`` names people whose import fails; ``lost_jobs`` leaves every job
    unconfirmed (the run ended before they completed).
    """
    planner = Planner(state, target=target, mode=mode, full=full)  # type: ignore[arg-type]
    keys, hashes, emails = block_arrays(snapshot)
    by_key = dict(zip(keys.tolist(), snapshot, strict=True))
    to_send: list[int] = []
    for start in range(0, len(keys), block_size):
        part = slice(start, start + block_size)
        mask = planner.classify(keys[part], hashes[part], pl.Series(emails[part]))
        to_send.extend(keys[part][mask].tolist())
    if seal:  # as a run does once it has read everything, before its jobs are done
        planner.seal()
    verdict = planner.check_guard(max_removal_percent=limit, allow_mass_removal=allow)
    failed = {email_key(email(n)) for n in fail}
    for start in range(0, len(to_send), job_size):
        job = to_send[start : start + job_size]
        created_at = klaviyo.tick()
        done = [k for k in job if k not in failed]
        if not lost_jobs:
            klaviyo.add(email(by_key[k]) for k in done)
            planner.confirm(np.array(done, dtype=np.uint64), created_at)
    if not verdict.held:
        leavers = planner.leavers()
        outcome: dict[str, list[int]] = {"removed": [], "kept_not_owned": [], "gone": []}
        for key, address, first in zip(
            leavers.keys.tolist(), leavers.emails, leavers.first_added_ms.tolist(), strict=True
        ):
            joined = klaviyo.members.get(address)
            if joined is None:
                outcome["gone"].append(key)
            elif first == 0 or joined < first:
                outcome["kept_not_owned"].append(key)
            else:
                del klaviyo.members[address]
                outcome["removed"].append(key)
        planner.record_removals(**outcome)
    return Day(
        planner=planner,
        sent={by_key[k] for k in to_send},
        verdict=verdict,
        state=planner.next_state(generation),
        members=planner.members(),
    )


def on_list(klaviyo: KlaviyoList) -> set[str]:
    return {e.split("@")[0] for e in klaviyo.members}
