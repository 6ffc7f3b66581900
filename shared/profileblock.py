"""What the data plane hands on for each block: the profiles that survived mapping.

A :class:`ProfileBlock` is the contract between mapping, the run-wide dedupe, the mirror
sync's plan and batching: per profile its normalised e-mail, a stable 64-bit key of it, a
hash of its exact JSON, where it came from and whether its phone was dropped, and the JSON
itself. Every stage after the mapper narrows a block with a boolean mask
(:meth:`ProfileBlock.select`) and never edits one in place.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

from shared.engine import pl

__all__ = ["ProfileBlock", "email_key", "email_keys", "part_hashes"]

_xxh3 = xxhash.xxh3_64_intdigest


def email_key(email: str) -> int:
    """The key of a normalised e-mail address: XXH3-64 of its UTF-8 bytes.

    Stable across processes, machines and versions (the sync state persists it); not
    Python's ``hash`` and not polars' (neither is stable).
    """
    return _xxh3(email.encode("utf-8"))


def email_keys(emails: pl.Series) -> np.ndarray:
    """:func:`email_key` of each address, as uint64."""
    return np.fromiter(map(_xxh3, emails.cast(pl.Binary).to_list()), np.uint64, emails.len())


def part_hashes(parts: Sequence[bytes]) -> np.ndarray:
    """XXH3-64 of each profile's JSON bytes, as uint64."""
    return np.fromiter(map(_xxh3, parts), np.uint64, len(parts))


@dataclass(frozen=True, slots=True, eq=False)
class ProfileBlock:
    """Profiles of one block, in input order; every array has one entry per profile.

    - ``emails``: normalised addresses (polars String Series);
    - ``keys``: ``email_key`` of each address (uint64), the dedupe and sync-state key;
    - ``attr_hashes``: XXH3-64 of each part (uint64): changes exactly when what would be
      sent for the profile changes;
    - ``files``: index of the file in the snapshot (uint32); ``lines``: the line the
      profile's record starts on (int64);
    - ``phone_dropped``: the row had a phone number that was not valid (bool);
    - ``parts``: the JSON sent for each profile, ``{"type":"profile","attributes":{...}}``,
      as bytes (Batch joins them with commas into a job's payload).
    """

    emails: pl.Series
    keys: np.ndarray
    attr_hashes: np.ndarray
    files: np.ndarray
    lines: np.ndarray
    phone_dropped: np.ndarray
    parts: list[bytes]
    part_sizes: np.ndarray | None = None  # the parts' byte lengths, when already known

    def __len__(self) -> int:
        return len(self.parts)

    @property
    def sizes(self) -> np.ndarray:
        """Byte length of each part (int64)."""
        if self.part_sizes is not None:
            return self.part_sizes
        return np.fromiter(map(len, self.parts), np.int64, len(self.parts))

    def select(self, keep: np.ndarray) -> ProfileBlock:
        """The profiles where ``keep`` (bool, one per profile) is True, in order."""
        keep = np.asarray(keep, dtype=bool)
        if keep.all():
            return self
        return ProfileBlock(
            emails=self.emails.filter(pl.Series(keep)),
            keys=self.keys[keep],
            attr_hashes=self.attr_hashes[keep],
            files=self.files[keep],
            lines=self.lines[keep],
            phone_dropped=self.phone_dropped[keep],
            parts=list(itertools.compress(self.parts, keep.tolist())),
            part_sizes=None if self.part_sizes is None else self.part_sizes[keep],
        )

    @classmethod
    def empty(cls) -> ProfileBlock:
        return cls(
            emails=pl.Series("email", [], dtype=pl.String),
            keys=np.empty(0, np.uint64),
            attr_hashes=np.empty(0, np.uint64),
            files=np.empty(0, np.uint32),
            lines=np.empty(0, np.int64),
            phone_dropped=np.empty(0, bool),
            parts=[],
        )
