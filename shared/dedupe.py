"""Which normalised e-mail addresses a run has already seen, in little memory.

A Python ``set`` of strings costs ~100 bytes per address (the string and a table slot);
at millions of rows that dominates a run's memory. This table keeps only a 64-bit hash per
address in one flat ``array`` (16 bytes per address at most), with linear probing. Two
different addresses share a 64-bit hash with probability ~n²/2⁶⁵ (3e-8 at a million),
which is far below any other source of loss.
"""

from __future__ import annotations

from array import array

__all__ = ["SeenEmails", "email_hash"]

_MASK = (1 << 64) - 1


def email_hash(email: str) -> int:
    """A non-zero 64-bit hash of a normalised address, stable within one process."""
    return (hash(email) & _MASK) or 1


class SeenEmails:
    """Remembers hashes of addresses; ``add`` says whether one is new."""

    __slots__ = ("_count", "_mask", "_table")

    def __init__(self, capacity: int = 1 << 16) -> None:
        size = 1 << max(4, (capacity * 2 - 1).bit_length())
        self._table = array("Q", bytes(8 * size))
        self._mask = size - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return self._table.itemsize * len(self._table)

    def add(self, email: str) -> bool:
        """Record ``email``; True when it had not been seen before."""
        return self.add_hash(email_hash(email))

    def add_hash(self, h: int) -> bool:
        table, mask = self._table, self._mask
        i = h & mask
        while True:
            slot = table[i]
            if slot == 0:
                table[i] = h
                self._count += 1
                if self._count * 2 > len(table):
                    self._grow()
                return True
            if slot == h:
                return False
            i = (i + 1) & mask

    def __contains__(self, email: str) -> bool:
        h = email_hash(email)
        table, mask = self._table, self._mask
        i = h & mask
        while (slot := table[i]) != 0:
            if slot == h:
                return True
            i = (i + 1) & mask
        return False

    def _grow(self) -> None:
        old = self._table
        size = len(old) * 2
        self._table = array("Q", bytes(8 * size))
        self._mask = size - 1
        self._count = 0
        for h in old:
            if h:
                self._reinsert(h)

    def _reinsert(self, h: int) -> None:
        table, mask = self._table, self._mask
        i = h & mask
        while table[i] != 0:
            i = (i + 1) & mask
        table[i] = h
        self._count += 1
