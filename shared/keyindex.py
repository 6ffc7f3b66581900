"""Finding people by key: the sync state's sorted keys, looked up a block at a time
(:class:`KeyIndex`), and merged with the joiners' into the next state (:class:`KeyMerge`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.chunked import SortedStrings, StringSlices
from shared.engine import pl

__all__ = ["KeyIndex", "KeyMerge", "MergedStrings"]

U64 = npt.NDArray[np.uint64]
Mask = npt.NDArray[np.bool_]


_COUNT_SLICE = 1 << 20  # keys counted into the directory at once
_MERGE_SLICE = 1 << 18  # kept rows copied into a merged column at once
_FEWER_BITS = 2  # buckets: 2^(bit length of n - this)


class KeyIndex:
    """Finds uint64 keys in a sorted unique array, about 5x faster than ``searchsorted``.

    The keys are hashes, so they spread evenly: a directory of the first row of each of
    2^b buckets (b two less than the bit length of n: 2-4 keys a bucket on average, a
    few dozen at most) narrows each search to a few rows, stepped through for a whole
    block at once. Measured at 1M keys, in blocks of 10,000: 55-120 ns a lookup (idle to
    busy machine) against 300-420 for ``numpy.searchsorted``. Two bits fewer than one
    bucket a key: at 10M keys the directory takes 16 MB instead of 64, for 64 ns a
    lookup instead of 45 (idle; at 1M, 1 MB and 60 ns instead of 4 MB and 40).
    """

    __slots__ = ("_keys", "_shift", "_starts")

    def __init__(self, keys: U64) -> None:
        self._keys = keys
        bits = max(1, len(keys).bit_length() - _FEWER_BITS)
        self._shift = np.uint64(64 - bits)
        self._starts = np.zeros((1 << bits) + 1, np.int32 if len(keys) < 2**31 else np.int64)
        # Counted a slice of keys at a time: the keys are sorted, so a slice's buckets
        # are one short stretch. One bincount of all of them took ~210 MB for a moment
        # at 10M keys (their buckets as intp, the counts as int64), measured.
        for at in range(0, len(keys), _COUNT_SLICE):
            bucket = (keys[at : at + _COUNT_SLICE] >> self._shift).astype(np.intp)
            low = int(bucket[0])
            counts = np.bincount(bucket - low)
            self._starts[low + 1 : low + 1 + len(counts)] += counts
        np.cumsum(self._starts, out=self._starts)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        """The directory's size (the keys belong to the state)."""
        return int(self._starts.nbytes)

    def find(self, keys: U64) -> tuple[npt.NDArray[np.integer], Mask]:
        """(row, found) for each key; the row is meaningless where not found."""
        bucket = (keys >> self._shift).astype(np.intp)
        row, end = self._starts[bucket], self._starts[bucket + 1]
        # Step each search to its key's lower bound in its bucket, keeping only the
        # searches still going: most buckets hold 0-2 keys, so the set shrinks fast.
        active = np.flatnonzero(row < end)
        while active.size:
            active = active[self._keys[row[active]] < keys[active]]
            row[active] += 1
            active = active[row[active] < end[active]]
        found = row < end
        found[found] = self._keys[row[found]] == keys[found]
        return row, found


class KeyMerge:
    """The next state's rows: the state's where ``keep``, merged with the joiners, both
    sorted by key, into key order without a sort (and without a copy on a first run,
    where the joiners' columns are the next state's). Measured on a 5 % churn run of 1M
    people: a concatenation sorted afterwards held the e-mails three times at once."""

    def __init__(self, keys: U64, keep: Mask, joined_keys: U64) -> None:
        # The state's rows left out (few: the leavers), not the many kept: each kept row's
        # place is worked out from them when it is copied (windows), so no index of
        # every kept row (8 bytes each) nor a copy of their keys is held.
        dropped = np.flatnonzero(~keep)
        self._dropped_before = dropped - np.arange(len(dropped))  # kept rows before each
        kept = len(keys) - len(dropped)
        self.size = kept + len(joined_keys)
        self.first_run = not kept
        if self.first_run:  # the joiners are the rows: no places to work out (160 MB at 10M)
            return
        # Keys are unique across the two (a joiner is not in the state). Kept rows before
        # each joiner: the state's rows before it, less the dropped ones among them.
        before = np.searchsorted(keys, joined_keys)
        before -= np.searchsorted(dropped, before)
        self.joiners_at = before + np.arange(len(joined_keys))
        self.from_state = np.ones(self.size, bool)
        self.from_state[self.joiners_at] = False

    def windows(self, rows: int) -> Iterator[tuple[int, Mask, npt.NDArray[np.int64]]]:
        """The merged rows ``rows`` at a time: each window's start, which of its rows
        come from the state, and those rows' places in the state."""
        stayed = 0  # the state's kept rows given out so far
        for start in range(0, self.size, rows):
            mine = self.from_state[start : start + rows]
            ranks = np.arange(stayed, stayed + int(np.count_nonzero(mine)))
            stayed += len(ranks)
            # A kept row's place: its rank, plus the dropped rows before it.
            if len(self._dropped_before):
                ranks += np.searchsorted(self._dropped_before, ranks, side="right")
            yield start, mine, ranks

    def __call__(self, column: npt.NDArray[Any], joined: npt.NDArray[Any]) -> Any:
        if self.first_run:
            return joined
        out = np.empty(self.size, column.dtype)
        # A window at a time: copying the kept rows all at once (column[kept] into
        # out[from_state]) made a copy of them for a moment, 76 MB a column at 10M,
        # beside an index of every kept row held through the merge and a copy of their
        # keys (76 MB each).
        for start, mine, rows in self.windows(_MERGE_SLICE):
            out[start : start + len(mine)][mine] = column[rows]
        out[self.joiners_at] = joined
        return out

    def strings(
        self, column: pl.Series, joined: pl.Series | SortedStrings
    ) -> pl.Series | StringSlices:
        """The merged string column: handed out a slice at a time as it is written
        (:class:`MergedStrings`), not gathered whole. At 10M people, a 5 % churn run
        gathered the stayers' and joiners' e-mails into a new column, beside the state's
        own and a concatenation of both: it peaked at 1,907 MB."""
        if self.first_run:
            return joined  # as it is: SortedStrings stay on disk until written
        if not len(self._dropped_before) and not len(joined):
            return column  # everyone stays, nobody joins: the same column
        return MergedStrings(column, self, joined)


class MergedStrings(StringSlices):
    """The state's strings it keeps, merged with the joiners' (both in key order) as
    the merge says, made a slice at a time."""

    __slots__ = ("_column", "_joined", "_merge", "name")

    def __init__(
        self, column: pl.Series, merge: KeyMerge, joined: pl.Series | SortedStrings
    ) -> None:
        self._column, self._merge, self._joined = column, merge, joined
        self.name = column.name

    def __len__(self) -> int:
        return self._merge.size

    @property
    def nbytes(self) -> int:
        return 0  # the columns merged, and the merge, belong to others

    def slices(self, rows: int) -> Iterator[pl.Series]:
        joined = _Taker(self._joined, rows)
        for _, mine, state_rows in self._merge.windows(rows):
            part, n_state = self._column.gather(state_rows), len(state_rows)
            if n_state == len(mine):
                yield part.alias(self.name)
                continue
            others = joined.take(len(mine) - n_state)
            order = np.empty(len(mine), np.int64)
            order[mine] = np.arange(n_state)
            order[~mine] = n_state + np.arange(len(mine) - n_state)
            yield pl.concat([part, others.cast(pl.String)]).gather(order).alias(self.name)


class _Taker:
    """The next n strings of a column, whole or handed out in slices, as a Series."""

    def __init__(self, column: pl.Series | SortedStrings, rows: int) -> None:
        self._pieces = iter([column]) if isinstance(column, pl.Series) else column.slices(rows)
        self._held: pl.Series | None = None

    def take(self, n: int) -> pl.Series:
        """``n`` strings (n > 0)."""
        out: list[pl.Series] = []
        while n:
            if self._held is None or not len(self._held):
                self._held = next(self._pieces)
            piece, self._held = self._held[:n], self._held[n:]
            out.append(piece)
            n -= len(piece)
        return out[0] if len(out) == 1 else pl.concat(out)
