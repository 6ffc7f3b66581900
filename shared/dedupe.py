"""Which e-mail addresses a run has already seen, decided a block at a time.

The keys are the ProfileBlock's ``keys``: XXH3-64 of each normalised address, stable across
processes (the sync state persists the same keys). Two different addresses share a 64-bit
key with probability ~n²/2⁶⁵ (3e-8 at a million), far below any other source of loss.

They are kept as a few sorted numpy runs (8 bytes per address, 8 MB at a million), merged
as they grow so that there are never more than about log₂(n / block) of them: a block's
keys are looked up in each run with ``searchsorted``, with no Python per address.
"""

from __future__ import annotations

import numpy as np

from shared.profileblock import email_key

__all__ = ["SeenKeys", "email_hash"]


def email_hash(email: str) -> int:
    """The dedupe key of a normalised address (the ProfileBlock's ``keys``)."""
    return email_key(email)


class SeenKeys:
    """Remembers keys; :meth:`first_seen` says which of a block's are new."""

    __slots__ = ("_count", "_runs")

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []  # sorted, unique, largest first
        self._count = 0

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
        # Merge while the newest run is at least half the one before it: sizes halve
        # down the list, so there are O(log n) runs and each key is merged O(log n) times.
        while len(self._runs) > 1 and self._runs[-1].size * 2 >= self._runs[-2].size:
            newer = self._runs.pop()
            older = self._runs.pop()
            merged = np.concatenate((older, newer))
            merged.sort(kind="stable")
            self._runs.append(merged)
