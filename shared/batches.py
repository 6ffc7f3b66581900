"""Pack serialised profiles into Bulk Import Profiles jobs that respect Klaviyo's limits.

:class:`Packer` takes ProfileBlocks (after the dedupe, and after any stage that drops
profiles with a mask) and cuts them into :class:`Batch` es of at most 10,000 profiles and
5 MB, from the parts' byte lengths: the same greedy cut as adding them one by one, so a
resumed run packs the same jobs. A batch keeps the serialised profiles until Klaviyo
accepts the job, and, for as long as the job runs, where each profile came from (file and
line) and its e-mail key, so an import error can be traced back to its input row.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson

from shared.profileblock import ProfileBlock

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MAX_PROFILES_PER_JOB",
    "MAX_PROFILE_BYTES",
    "Batch",
    "Packer",
    "RemovedProfile",
    "envelope",
]

# Klaviyo: 10,000 profiles, 5 MB per payload, 100 KB per profile. Decimal units keep a
# margin below either reading of "MB"/"KB".
MAX_PROFILES_PER_JOB = 10_000
MAX_PAYLOAD_BYTES = 5_000_000
MAX_PROFILE_BYTES = 100_000


def envelope(list_id: str) -> tuple[bytes, bytes]:
    """The JSON before and after the comma-separated profiles of a job for ``list_id``."""
    head = b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":['
    lists = orjson.dumps({"lists": {"data": [{"type": "list", "id": list_id}]}})
    return head, b']}},"relationships":' + lists + b"}}"


@dataclass(frozen=True, slots=True)
class RemovedProfile:
    """A profile taken out of a batch, with where it came from."""

    file_index: int
    line: int
    email: str


class Batch:
    """One import job's worth of profiles.

    The serialised profiles are kept as the block's own ``bytes`` objects until the
    first :meth:`payload`, which joins them into the request body in one copy and keeps
    only that: a job waiting for the rate limiter or its response holds one copy, not
    two. (Appending each block's parts to a growing buffer, then adding the envelope,
    copied every byte three times.)
    """

    __slots__ = (
        "_body",
        "_head",
        "_parts",
        "_size",
        "_sizes",
        "_tail",
        "files",
        "hashes",
        "index",
        "lines",
    )

    def __init__(self, index: int, list_id: str) -> None:
        self.index = index
        self._head, self._tail = envelope(list_id)
        self._parts: list[bytes] | None = []
        self._sizes = array("I")  # each part's byte length
        self._size = 0  # the parts with the commas between them
        self._body: bytes | None = None
        self.files = array("H")
        self.lines = array("I")
        self.hashes = array("Q")

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def nbytes(self) -> int:
        """The size of the payload this batch serialises to."""
        return len(self._head) + self._size + len(self._tail)

    def _editable(self) -> list[bytes]:
        """The parts, cut back out of the request body if one was made."""
        if self._parts is None:
            body, at, parts = self._body or b"", len(self._head), []
            for size in self._sizes:
                parts.append(body[at : at + size])
                at += size + 1
            self._parts, self._body = parts, None
        return self._parts

    def fits(self, part_size: int) -> bool:
        """Whether one more profile of ``part_size`` bytes stays within the job limits."""
        return (
            len(self.lines) < MAX_PROFILES_PER_JOB
            and self.nbytes + part_size + 1 <= MAX_PAYLOAD_BYTES
        )

    def room(self, sizes: np.ndarray) -> int:
        """How many of the next parts (of these byte ``sizes``) fit, as :meth:`fits` would
        say adding them one by one."""
        count = min(sizes.size, MAX_PROFILES_PER_JOB - len(self.lines))
        if count <= 0:
            return 0
        # Part m fits when the payload before it, plus it and a comma, stays within the
        # limit: with c = cumsum(size + 1), that is nbytes + c[m] <= limit, one byte more
        # allowed after the first part of an empty batch (which adds no comma).
        # (The first part of an empty batch always fits: parts are at most 100 KB.)
        ends = np.cumsum(sizes[:count] + 1)
        bound = MAX_PAYLOAD_BYTES - self.nbytes + (0 if len(self) else 1)
        return int(np.searchsorted(ends, bound, side="right"))

    def extend(self, block: ProfileBlock, start: int, stop: int) -> None:
        """Add the block's profiles ``start:stop`` (they must fit, see :meth:`room`)."""
        if stop <= start:
            return
        sizes = block.sizes[start:stop]
        self._editable().extend(block.parts[start:stop])
        self._size += int(sizes.sum()) + (stop - start) - (0 if len(self) else 1)
        self._sizes.frombytes(sizes.astype(np.uint32).tobytes())
        self.files.frombytes(block.files[start:stop].astype(np.uint16).tobytes())
        self.lines.frombytes(block.lines[start:stop].astype(np.uint32).tobytes())
        self.hashes.frombytes(block.keys[start:stop].astype(np.uint64).tobytes())

    def add(self, part: bytes, file_index: int, line: int, email_hash: int) -> None:
        self._editable().append(part)
        self._size += len(part) + (1 if len(self) else 0)
        self._sizes.append(len(part))
        self.files.append(file_index)
        self.lines.append(line)
        self.hashes.append(email_hash)

    def payload(self) -> bytes:
        """The request body (made once; the parts are dropped for it)."""
        if self._body is None:
            parts = self._editable()
            if not parts:
                self._body = self._head + self._tail
            elif len(parts) == 1:
                self._body = self._head + parts[0] + self._tail
            else:
                # One join, the envelope riding on the first and last part.
                ends = [self._head + parts[0], *parts[1:-1], parts[-1] + self._tail]
                self._body = b",".join(ends)
            self._parts = None
        return self._body

    def remove(self, position: int) -> RemovedProfile:
        """Take the profile at ``position`` out (Klaviyo refused it); later ones shift down."""
        parts = self._editable()
        part = parts.pop(position)
        email = (orjson.loads(part).get("attributes") or {}).get("email") or ""
        removed = RemovedProfile(self.files[position], self.lines[position], email)
        self._size -= len(part) + (1 if parts else 0)
        del self._sizes[position]
        del self.files[position], self.lines[position], self.hashes[position]
        return removed

    def release_payload(self) -> None:
        """Drop the serialised profiles once Klaviyo holds them; keep the origins."""
        self._parts, self._body = [], None
        self._sizes = array("I")
        self._size = 0

    def position_of(self, email_hash: int) -> int | None:
        try:
            return self.hashes.index(email_hash)
        except ValueError:
            return None

    def origin(self, position: int) -> tuple[int, int]:
        return self.files[position], self.lines[position]


class Packer:
    """Cuts ProfileBlocks into batches: ``pack(block)`` gives the batches it fills, and
    ``flush()`` the last one. Batch indexes count from ``first_index``.

    Each batch comes with its request body already made (:meth:`Batch.payload`): the
    packer runs in the reading thread, and the join of 5 MB is work the event loop,
    which sends and polls the jobs, should not do."""

    def __init__(self, list_id: str, *, first_index: int = 0) -> None:
        self._list_id = list_id
        self._batch = Batch(first_index, list_id)

    def pack(self, block: ProfileBlock) -> Iterator[Batch]:
        """The batches ``block`` completes, in order; the open one stays for the next."""
        sizes = block.sizes
        at = 0
        while at < len(block):
            count = self._batch.room(sizes[at:])
            if count == 0:
                if not len(self._batch):
                    raise ValueError("a profile larger than a whole job")  # rejected before
                yield self._next()
                continue
            self._batch.extend(block, at, at + count)
            at += count
            if at < len(block):
                yield self._next()

    def flush(self) -> Batch | None:
        """The last batch, if it holds any profile."""
        batch = self._batch
        if not len(batch):
            return None
        batch.payload()
        return batch

    def _next(self) -> Batch:
        full, self._batch = self._batch, Batch(self._batch.index + 1, self._list_id)
        full.payload()
        return full
