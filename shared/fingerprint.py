"""What a run would read and where it would write, as one stable string.

The schedule queues an export when this fingerprint differs from the one its last
successful run recorded, never from folder names alone: a partition written into the
newest folder after a run read it, a 0-byte partition overwritten later, ``source.folder``
moved to a path that sorts lower, a new list or a new mapping all change it.

    v1:<definition digest>:<files digest>

- definition: everything in the definition that changes what is read or sent (source,
  list, mapping, options, the Key Vault secret, and any field added later), but not its
  name, ``enabled`` or the connection's labels;
- files: the snapshot's data files as listed (name, size, ETag), in name order.

Each digest is the first 128 bits of a SHA-256 over canonical JSON, so the two halves say
which side changed. A run compares the listing it read with a new listing of the same
folder when it ends (:func:`snapshot_changes`): files added, rewritten or removed meanwhile.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from azure.storage.blob import ContainerClient

from shared.definitions import ExportDefinition
from shared.segments import Snapshot

__all__ = [
    "Listing",
    "SnapshotChange",
    "definition_digest",
    "fingerprint",
    "list_snapshot_folder",
    "listing_of",
    "snapshot_changes",
    "what_changed",
]

_VERSION = "v1"
# The data files of a snapshot folder, as segments.find_latest_snapshot picks them.
_DATA_SUFFIXES = (".csv", ".csv.gz")

#: (blob name, size in bytes, ETag) per data file, sorted by name.
Listing = tuple[tuple[str, int, str], ...]


def listing_of(snapshot: Snapshot) -> Listing:
    """The files of a snapshot as its listing gave them."""
    return tuple(sorted(zip(snapshot.files, snapshot.sizes, snapshot.etags, strict=True)))


def list_snapshot_folder(container: ContainerClient, prefix: str) -> Listing:
    """List one snapshot folder again (the data files right inside ``prefix``)."""
    found = []
    for blob in container.list_blobs(name_starts_with=prefix):
        rest = blob.name[len(prefix) :]
        if "/" not in rest and rest.lower().endswith(_DATA_SUFFIXES):
            found.append((blob.name, blob.size or 0, blob.etag))
    return tuple(sorted(found))


def definition_digest(definition: ExportDefinition) -> str:
    """The part of a definition that decides what a run reads and what it sends where."""
    doc = definition.to_dict()
    for label in ("name", "enabled"):
        doc.pop(label, None)
    # The connection's name, display name, access and consent change nothing that is sent;
    # its secret may point at another Klaviyo account, where the same list id is another list.
    doc["connection"] = {"api_key_secret": definition.connection.api_key_secret}
    return _digest(doc)


def fingerprint(definition: ExportDefinition, listing: Listing) -> str:
    """The fingerprint of running ``definition`` over the files in ``listing``."""
    files = [[name, size, etag] for name, size, etag in sorted(listing)]
    return f"{_VERSION}:{definition_digest(definition)}:{_digest(files)}"


def what_changed(previous: str | None, current: str) -> str:
    """Why ``current`` differs from ``previous``, in words for the schedule's log."""
    if not previous:
        return "no successful run recorded a fingerprint yet"
    if previous == current:
        return "unchanged"
    old, new = previous.split(":"), current.split(":")
    if len(old) != 3 or old[0] != new[0]:
        return "the fingerprint format changed"
    parts = [
        label
        for label, before, after in (("definition", old[1], new[1]), ("snapshot", old[2], new[2]))
        if before != after
    ]
    return " and ".join(parts) + " changed"


@dataclass(frozen=True, slots=True)
class SnapshotChange:
    """Files of one snapshot folder that differ between two listings (base names)."""

    prefix: str
    added: tuple[str, ...]
    rewritten: tuple[str, ...]
    removed: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.prefix,
            "added": list(self.added),
            "rewritten": list(self.rewritten),
            "removed": list(self.removed),
        }

    def describe(self) -> str:
        parts = [
            f"{len(names)} {verb} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
            for verb, names in (
                ("added", self.added),
                ("rewritten", self.rewritten),
                ("removed", self.removed),
            )
            if names
        ]
        return "; ".join(parts)


def snapshot_changes(read: Listing, now: Listing, prefix: str) -> SnapshotChange | None:
    """What changed in the folder between the listing a run read and a new one; None if
    nothing did."""
    before = {name: (size, etag) for name, size, etag in read}
    after = {name: (size, etag) for name, size, etag in now}
    if before == after:
        return None

    def short(names: set[str]) -> tuple[str, ...]:
        return tuple(sorted(name.rsplit("/", 1)[-1] for name in names))

    return SnapshotChange(
        prefix=prefix,
        added=short(after.keys() - before.keys()),
        rewritten=short({n for n in before.keys() & after.keys() if before[n] != after[n]}),
        removed=short(before.keys() - after.keys()),
    )


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
