"""Pack serialised profiles into Bulk Import Profiles jobs that respect Klaviyo's limits.

A batch keeps the serialised profiles until Klaviyo accepts the job, and, for as long as
the job runs, where each profile came from (file and line) and its e-mail hash, so an
import error can be traced back to its input row.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import orjson

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MAX_PROFILES_PER_JOB",
    "MAX_PROFILE_BYTES",
    "Batch",
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
    offsets: a million small ``bytes`` objects would cost more memory than the data.
    """

    __slots__ = ("_buffer", "_head", "_tail", "files", "hashes", "index", "lines", "starts")

    def __init__(self, index: int, list_id: str) -> None:
        self.index = index
        self._head, self._tail = envelope(list_id)
        self._buffer = bytearray()
        self.starts = array("I")
        self.files = array("H")
        self.lines = array("I")
        self.hashes = array("Q")

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def nbytes(self) -> int:
        """The size of the payload this batch serialises to."""
        return len(self._head) + len(self._buffer) + len(self._tail)

    def fits(self, part_size: int) -> bool:
        """Whether one more profile of ``part_size`` bytes stays within the job limits."""
        return (
            len(self.lines) < MAX_PROFILES_PER_JOB
            and self.nbytes + part_size + 1 <= MAX_PAYLOAD_BYTES
        )

    def add(self, part: bytes, file_index: int, line: int, email_hash: int) -> None:
        if self._buffer:
            self._buffer += b","
        self.starts.append(len(self._buffer))
        self._buffer += part
        self.files.append(file_index)
        self.lines.append(line)
        self.hashes.append(email_hash)

    def payload(self) -> bytes:
        return b"".join((self._head, self._buffer, self._tail))

    def _span(self, position: int) -> tuple[int, int]:
        start = self.starts[position]
        end = self.starts[position + 1] - 1 if position + 1 < len(self.starts) else None
        return start, len(self._buffer) if end is None else end

    def remove(self, position: int) -> RemovedProfile:
        """Take the profile at ``position`` out (Klaviyo refused it); later ones shift down."""
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
        self.starts = array("I")

    def position_of(self, email_hash: int) -> int | None:
        try:
            return self.hashes.index(email_hash)
        except ValueError:
            return None

    def origin(self, position: int) -> tuple[int, int]:
        return self.files[position], self.lines[position]
