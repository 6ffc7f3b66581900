"""Which e-mail addresses a run has already seen, decided a block at a time.

The keys are the ProfileBlock's ``keys``: XXH3-64 of each normalised address, stable across
processes (the sync state persists the same keys). Two different addresses share a 64-bit
key with probability ~n²/2⁶⁵ (3e-8 at a million), far below any other source of loss.

They are kept as a few sorted numpy runs (8 bytes per address, 8 MB at a million), merged
as they grow so that there are never more than about log₂(n / block) of them below
``run_cap`` keys: a block's keys are looked up in each run with ``searchsorted``, with no
Python per address. The cap bounds what a merge needs beside the keys themselves (the
merged run and half of it for the sort): without it, at 10M addresses the last big merge
needed ~100 MB for a moment on top of the 77 MB the keys take.
"""

from __future__ import annotations

import numpy as np

from shared.profileblock import email_key

__all__ = ["SeenKeys", "email_hash"]

RUN_CAP = 1 << 22  # keys in a merged run: 32 MB (lookups cost no more than one run at 10M)


def email_hash(email: str) -> int:
    """The dedupe key of a normalised address (the ProfileBlock's ``keys``)."""
    return email_key(email)


class SeenKeys:
    """Remembers keys; :meth:`first_seen` says which of a block's are new."""

    __slots__ = ("_cap", "_count", "_runs")

    def __init__(self, *, run_cap: int = RUN_CAP) -> None:
        self._runs: list[np.ndarray] = []  # sorted, unique, largest first
        self._count = 0
        self._cap = run_cap

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return sum(run.nbytes for run in self._runs)

    def first_seen(self, keys: np.ndarray) -> np.ndarray:
        """For each key (in input order): True when it was not seen before, in this call
        or an earlier one (the first occurrence wins). Records the new ones."""
        keys = np.asarray(keys, dtype=np.uint64)
        if not keys.size:
            return np.zeros(0, dtype=bool)
        unique, first = np.unique(keys, return_index=True)
        new = np.ones(unique.size, dtype=bool)
        for run in self._runs:
            at = np.searchsorted(run, unique)
            inside = at < run.size
            new[inside] &= run[at[inside]] != unique[inside]
        fresh = np.zeros(keys.size, dtype=bool)
        fresh[first[new]] = True
        self._add(unique[new])
        return fresh

    def __contains__(self, email: str) -> bool:
        key = np.uint64(email_key(email))
        for run in self._runs:
            at = int(np.searchsorted(run, key))
            if at < run.size and run[at] == key:
                return True
        return False

    def _add(self, run: np.ndarray) -> None:
        if not run.size:
            return
        self._count += run.size
        self._runs.append(run)
        # Merge while the newest run is at least half the one before it (and the two fit
        # in the cap): sizes halve down the list, so below the cap there are O(log n) runs
        # and each key is merged O(log n) times; above it, n / cap more runs to look in.
        runs = self._runs
        while (
            len(runs) > 1
            and runs[-1].size * 2 >= runs[-2].size
            and runs[-1].size + runs[-2].size <= self._cap
        ):
            newer = runs.pop()
            runs.append(_merge(runs.pop(), newer))


def _merge(older: np.ndarray, newer: np.ndarray) -> np.ndarray:
    """Two sorted runs as one (timsort merges two sorted stretches in one linear pass)."""
    merged = np.concatenate((older, newer))
    merged.sort(kind="stable")
    return merged
