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

    The serialised profiles live in one growing buffer, comma-separated, with their start
    offsets: a million small ``bytes`` objects would cost more memory than the data. The
    first :meth:`payload` turns the buffer into the request body and keeps only that: a
    job waiting for the rate limiter or its response holds one copy, not two.
    """

    __slots__ = (
        "_body",
        "_buffer",
        "_head",
        "_tail",
        "files",
        "hashes",
        "index",
        "lines",
        "starts",
    )

    def __init__(self, index: int, list_id: str) -> None:
        self.index = index
        self._head, self._tail = envelope(list_id)
        self._buffer = bytearray()
        self._body: bytes | None = None
        self.starts = array("I")
        self.files = array("H")
        self.lines = array("I")
        self.hashes = array("Q")

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def nbytes(self) -> int:
        """The size of the payload this batch serialises to."""
        if self._body is not None:
            return len(self._body)
        return len(self._head) + len(self._buffer) + len(self._tail)

    def _editable(self) -> bytearray:
        """The buffer, taken back from the request body if one was made."""
        if self._body is not None:
            self._buffer = bytearray(
                self._body[len(self._head) : len(self._body) - len(self._tail)]
            )
            self._body = None
        return self._buffer

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
        parts = block.parts[start:stop]
        if not parts:
            return
        buffer = self._editable()
        if buffer:
            buffer += b","
        base = len(buffer)
        sizes = block.sizes[start:stop] + 1
        self.starts.frombytes(
            (base + np.concatenate(([0], np.cumsum(sizes[:-1])))).astype(np.uint32).tobytes()
        )
        buffer += b",".join(parts)
        self.files.frombytes(block.files[start:stop].astype(np.uint16).tobytes())
        self.lines.frombytes(block.lines[start:stop].astype(np.uint32).tobytes())
        self.hashes.frombytes(block.keys[start:stop].astype(np.uint64).tobytes())

    def add(self, part: bytes, file_index: int, line: int, email_hash: int) -> None:
        buffer = self._editable()
        if buffer:
            buffer += b","
        self.starts.append(len(buffer))
        buffer += part
        self.files.append(file_index)
        self.lines.append(line)
        self.hashes.append(email_hash)

    def payload(self) -> bytes:
        """The request body (made once; the buffer is dropped for it)."""
        if self._body is None:
            self._body = b"".join((self._head, self._buffer, self._tail))
            self._buffer = bytearray()
        return self._body

    def _span(self, position: int) -> tuple[int, int]:
        start = self.starts[position]
        end = self.starts[position + 1] - 1 if position + 1 < len(self.starts) else None
        return start, len(self._buffer) if end is None else end

    def remove(self, position: int) -> RemovedProfile:
        """Take the profile at ``position`` out (Klaviyo refused it); later ones shift down."""
        self._editable()
        start, end = self._span(position)
        part = bytes(self._buffer[start:end])
        email = (orjson.loads(part).get("attributes") or {}).get("email") or ""
        removed = RemovedProfile(self.files[position], self.lines[position], email)
        # Cut the part and one neighbouring comma (the following one, or for the last part
        # the preceding one).
        if end < len(self._buffer):
            cut_from, cut_to = start, end + 1
        else:
            cut_from, cut_to = max(0, start - 1), end
        del self._buffer[cut_from:cut_to]
        shift = cut_to - cut_from
        del self.starts[position]
        for i in range(position, len(self.starts)):
            self.starts[i] -= shift
        del self.files[position], self.lines[position], self.hashes[position]
        return removed

    def release_payload(self) -> None:
        """Drop the serialised profiles once Klaviyo holds them; keep the origins."""
        self._buffer = bytearray()
        self._body = None
        self.starts = array("I")

    def position_of(self, email_hash: int) -> int | None:
        try:
            return self.hashes.index(email_hash)
        except ValueError:
            return None

    def origin(self, position: int) -> tuple[int, int]:
        return self.files[position], self.lines[position]


class Packer:
    """Cuts ProfileBlocks into batches: ``pack(block)`` gives the batches it fills, and
    ``flush()`` the last one. Batch indexes count from ``first_index``."""

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
        return batch if len(batch) else None

    def _next(self) -> Batch:
        full, self._batch = self._batch, Batch(self._batch.index + 1, self._list_id)
        return full
