"""The plan of a sync: who is sent, who left, and what the sync state becomes.

One planner per run, fed in the order the run works::

    planner = Planner(loaded.state, target=SyncTarget.of(definition), mode=..., full=...)
    for block in blocks:                                  # from the data plane
        send = planner.classify(block.keys, block.attr_hashes, block.emails)
        ...pack only block[send]...                       # joiners, changed, retried
    verdict = planner.check_guard(max_removal_percent=..., allow_mass_removal=...)
    planner.confirm(job_keys_without_failures, job_created_at_ms)   # per completed job
    if not verdict.held:
        outcome = removals(planner.leavers())             # shared/removals.py
        planner.record_removals(removed=..., kept_not_owned=..., gone=...)
    store.save(planner.next_state(run_id), loaded)
    members, rows_unchanged = planner.members(), planner.rows_unchanged

Every step is vectorised over numpy arrays: the state is sorted by key, so a block is
looked up with one ``searchsorted``; nothing loops over people in Python except turning
the leavers' e-mails into the list the removal stage takes.

Classes of a person in the snapshot (exactly one each):

- *joiner*: not in the state, sent;
- *retried*: in the state but its last send failed or its add was never confirmed, sent;
- *changed*: in the state with another attribute hash, sent;
- *unchanged*: the same hash, not sent (sent anyway when the run is full).

A person in the state but not in the snapshot is a *leaver*: removed (``mirror``) if this
export's add of them was confirmed, dropped silently if it never was, kept as they are in
``add`` mode, when the guard holds, or when their removal did not happen this run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from shared.chunked import ChunkedArray, ChunkedStrings, SortedStrings
from shared.engine import pl
from shared.guard import GuardVerdict, check_removals
from shared.keyindex import KeyIndex, KeyMerge
from shared.settlement import Sends, Settled, key_order
from shared.syncstate import CONFIRMED, RETRY, StateMeta, SyncState, SyncTarget

__all__ = ["MODES", "KeyIndex", "Leavers", "Planner"]

Mode = Literal["mirror", "add"]
MODES: Final = ("mirror", "add")

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

# What an in-state send was (for the members' counts): changed, retried, or unchanged
# and resent only because the run is full.
_CHANGED: Final = np.uint8(1)
_RETRIED: Final = np.uint8(2)
_RESENT: Final = np.uint8(3)


@dataclass(frozen=True, slots=True, eq=False)
class Leavers:
    """People to remove, aligned: key, normalised e-mail, when this export first added
    them (epoch ms in Klaviyo's clock, 0 = unknown)."""

    keys: U64
    emails: list[str]
    first_added_ms: I64

    def __len__(self) -> int:
        return len(self.keys)


class Planner:
    """Classifies a run's profiles against the sync state and builds the next state."""

    def __init__(
        self,
        state: SyncState | None,
        *,
        target: SyncTarget,
        mode: Mode = "mirror",
        full: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if state is not None and (state.meta.export, state.meta.list_id) != (
            target.export,
            target.list_id,
        ):
            raise ValueError(f"the state of {state.meta.export}/{state.meta.list_id} is not ours")
        self.target = target
        self.mode: Mode = mode
        self._base = state
        self._state = state if state is not None else SyncState.empty(_meta(target, "-", 0, None))
        #: Why every profile is sent this run: "requested" (``--full``), "mapping
        #: changed" (the fingerprint differs from the state's), or None.
        self.full_reason: str | None = None
        if full:
            self.full_reason = "requested"
        elif state is not None and state.meta.mapping_fingerprint != target.mapping_fingerprint:
            self.full_reason = "mapping changed"
        self._index = KeyIndex(self._state.keys)
        self._seen = np.zeros(len(self._state), bool)
        self._counts = dict.fromkeys(("joiners", "changed", "retried", "unchanged", "resent"), 0)
        # Sends of people in the state (row index, new hash, kind) and of joiners, and
        # the completed jobs' keys: appended block by block into big chunks (see
        # shared/chunked.py for why not one array or Series per block), full ones spilled
        # to temporary files until the reading is over.
        self._sent = Sends(np.intp, np.uint64, np.uint8)
        self._joined = Sends(np.uint64, np.uint64)
        self._joined_emails = ChunkedStrings(spill=True)
        self._sealed: tuple[U64, U64, SortedStrings] | None = None  # the joiners, by key
        self._confirmed = ChunkedArray(np.uint64, spill=True)
        self._jobs: list[tuple[int, int]] = []  # each completed job: (keys, created_at_ms)
        self._settled: Settled | None = None
        # classify() runs in the reader thread and confirm() on the event loop; a report
        # of a failed run may settle the plan while the reader finishes its last block.
        self._lock = threading.Lock()
        # Sorting the joiners takes seconds at 10M; the event loop's confirm() must not
        # wait for it, so it has a lock of its own (taken after _lock when both are).
        self._seal_lock = threading.Lock()
        self.verdict: GuardVerdict | None = None
        self._resolved: dict[str, U64] = {}

    @property
    def full(self) -> bool:
        return self.full_reason is not None

    @property
    def nbytes(self) -> int:
        """Memory the planner holds besides the state: the key directory, who was seen,
        the sends awaiting confirmation (the joiners' e-mails among them); chunks
        spilled to their temporary files are not counted."""
        sealed = self._sealed
        return sum(
            (
                self._index.nbytes,
                self._seen.nbytes,
                self._sent.nbytes,
                self._joined.nbytes,
                self._joined_emails.nbytes,
                self._confirmed.nbytes,
                0 if sealed is None else sealed[0].nbytes * 2 + sealed[2].nbytes,
            )
        )

    @property
    def base_generation(self) -> str | None:
        return self._base.meta.generation if self._base is not None else None

    # -- reading -----------------------------------------------------------------------

    def classify(
        self, keys: npt.ArrayLike, attr_hashes: npt.ArrayLike, emails: pl.Series | list[str]
    ) -> Mask:
        """The profiles of one block to send (a bool mask aligned with ``keys``).

        ``keys`` and ``attr_hashes`` are uint64 (the data plane's contract); ``emails``
        the normalised addresses. Keys must be unique across the run (the run-wide
        dedupe sees to it).
        """
        keys_ = np.asarray(keys, dtype=np.uint64)
        hashes = np.asarray(attr_hashes, dtype=np.uint64)
        if not len(keys_) == len(hashes) == len(emails):
            raise ValueError(
                f"block columns differ in length: keys {len(keys_)}, "
                f"attr_hashes {len(hashes)}, emails {len(emails)}"
            )
        with self._lock:
            return self._classify(keys_, hashes, emails)

    def _classify(self, keys_: U64, hashes: U64, emails: pl.Series | list[str]) -> Mask:
        state = self._state
        index, found = self._index.find(keys_)
        at = index[found]
        self._seen[at] = True
        old_flags = state.flags[at]
        retried = ((old_flags & RETRY) != 0) | ((old_flags & CONFIRMED) == 0)
        changed = ~retried & (state.attr_hashes[at] != hashes[found])
        unchanged = ~(retried | changed)
        n_retried, n_changed = int(np.count_nonzero(retried)), int(np.count_nonzero(changed))
        c = self._counts
        c["joiners"] += len(keys_) - len(at)
        c["retried"] += n_retried
        c["changed"] += n_changed
        c["unchanged"] += len(at) - n_retried - n_changed
        resend = unchanged if self.full else np.zeros(len(at), bool)
        c["resent"] += int(np.count_nonzero(resend))

        in_state_sent = retried | changed | resend
        kind = np.where(retried, _RETRIED, np.where(changed, _CHANGED, _RESENT)).astype(np.uint8)
        if in_state_sent.any():
            self._sent.append(at[in_state_sent], hashes[found][in_state_sent], kind[in_state_sent])
        joiners = ~found
        if joiners.any():
            if self._sealed is not None:
                raise RuntimeError("classify() after the plan was settled")
            self._joined.append(keys_[joiners], hashes[joiners])
            self._joined_emails.append(_pick(emails, joiners))
        send = joiners
        send[found] = in_state_sent  # ``joiners`` is not used again: reuse its memory
        self._settled = None
        return send

    @property
    def seen(self) -> int:
        """People classified so far (the snapshot's size for the guard)."""
        return sum(v for k, v in self._counts.items() if k != "resent")

    def _leaver_mask(self) -> Mask:
        return ~self._seen & self._state.confirmed

    def _removable(self) -> Mask:
        """The leavers this run may remove: none in ``add`` mode."""
        return self._leaver_mask() if self.mode == "mirror" else np.zeros(len(self._seen), bool)

    def check_guard(
        self, *, max_removal_percent: float, allow_mass_removal: bool = False
    ) -> GuardVerdict:
        """Judge this run's removals once the whole snapshot is classified (see
        :mod:`shared.guard`). In ``add`` mode nobody is removed, so nothing is held."""
        would_remove = int(np.count_nonzero(self._removable()))
        base = self._base
        self.verdict = check_removals(
            would_remove,
            on_list=self._state.on_list,
            snapshot_people=self.seen,
            previous_people=base.meta.snapshot_people if base is not None else None,
            max_removal_percent=max_removal_percent,
            allow_mass_removal=allow_mass_removal,
        )
        return self.verdict

    def leavers(self) -> Leavers:
        """The people to remove: confirmed by an earlier run, not in this snapshot.

        Only handed out once the guard let them through (``add`` mode: nobody), so that
        no caller can remove people by skipping it.
        """
        if self.verdict is None:
            raise RuntimeError("check_guard() before leavers(): removals must pass the guard")
        if self.verdict.held:
            raise RuntimeError("the guard held this run's removals")
        state = self._state
        at = np.flatnonzero(self._removable())
        return Leavers(
            keys=state.keys[at],
            emails=state.emails.gather(at).to_list(),
            first_added_ms=state.first_added_ms[at],
        )

    # -- outcomes ----------------------------------------------------------------------

    def confirm(self, keys: npt.ArrayLike, created_at_ms: int) -> None:
        """One completed job: the keys it added (its failures left out), and Klaviyo's
        ``created_at`` of the job in epoch ms. Sends never confirmed count as failed."""
        keys_ = np.asarray(keys, dtype=np.uint64)
        with self._lock:
            self._confirmed.append(keys_)
            self._jobs.append((len(keys_), int(created_at_ms)))
            self._settled = None

    def record_removals(
        self, *, removed: npt.ArrayLike, kept_not_owned: npt.ArrayLike, gone: npt.ArrayLike
    ) -> None:
        """What the removal stage did with the leavers, as keys: removed from the list,
        kept because they were on it before this export added them, already gone."""
        if self.verdict is None or self.verdict.held:
            raise RuntimeError("removals recorded without the guard's permission")
        leaving = self._state.keys[self._removable()]
        for name, keys in (
            ("removed", removed),
            ("kept_not_owned", kept_not_owned),
            ("gone", gone),
        ):
            self._resolved[name] = np.intersect1d(np.asarray(keys, dtype=np.uint64), leaving)

    # -- results -----------------------------------------------------------------------

    def seal(self) -> None:
        """Sort the joiners now that the reading is over (they are sorted at the save
        otherwise): the run calls it while its last jobs are still with Klaviyo, so the
        sort (~0.5 s at 1M joiners, most of it the e-mails' gather) is not added to the
        run's end."""
        self._joiners()

    def _settle(self) -> Settled:
        with self._lock:
            if self._settled is None:
                self._settled = Settled.of(
                    self._index, self._sent, self._joiners(), (self._confirmed, self._jobs)
                )
            return self._settled

    def _joiners(self) -> tuple[U64, U64, SortedStrings]:
        """The joiners sorted by key (keys, hashes, e-mails), made once the reading is
        over; the chunks they were gathered in are freed. The e-mails go to a temporary
        file in key order, read back as the next state is written."""
        with self._seal_lock:
            if self._sealed is None:
                # Column by column, each chunked column freed once it is placed, and
                # each put in key order a chunk at a time by its place: besides the
                # sorted keys, only 4 bytes a joiner (their places) are held for it.
                key_chunks, hash_chunks = self._joined.columns
                keys, places = key_order(key_chunks)
                hashes = hash_chunks.placed(places, len(keys))
                hash_chunks.clear()
                emails = self._joined_emails.drain_to(places, len(keys), "email")
                self._sealed = (keys, hashes, emails)
            return self._sealed

    @property
    def rows_unchanged(self) -> int:
        """Rows not sent because the person is unchanged (the report's ``rows.unchanged``)."""
        return self._counts["unchanged"] - self._counts["resent"]

    def members(self) -> dict[str, int]:
        """The report's ``members`` counts.

        ``added`` + ``updated`` + ``unchanged`` + ``failed`` = the people classified;
        ``retried`` counts those of them resent because their last send had failed;
        the leavers end ``removed`` (``gone`` ones too: they are off the list),
        ``kept_not_owned`` or ``held``.
        """
        s = self._settle()
        was_confirmed = (self._state.flags[s.index] & CONFIRMED) != 0
        resent = s.kind == _RESENT
        held = self.verdict.would_remove if self.verdict is not None and self.verdict.held else 0
        r = self._resolved
        return {
            "added": int(np.count_nonzero(s.joined_ok) + np.count_nonzero(s.ok & ~was_confirmed)),
            "updated": int(np.count_nonzero(s.ok & was_confirmed & ~resent)),
            "unchanged": self.rows_unchanged + int(np.count_nonzero(s.ok & resent)),
            "removed": len(r.get("removed", ())) + len(r.get("gone", ())),
            "kept_not_owned": len(r.get("kept_not_owned", ())),
            "held": held,
            "retried": self._counts["retried"],
            "failed": int(np.count_nonzero(~s.ok) + np.count_nonzero(~s.joined_ok)),
        }

    def summary(self) -> dict[str, Any]:
        """The plan as read (for a dry run's output and the report): classes, leavers."""
        leaving = int(np.count_nonzero(self._leaver_mask()))
        never_added = int(np.count_nonzero(~self._seen & ~self._state.confirmed))
        return {
            "mode": self.mode,
            "full": self.full,
            "full_reason": self.full_reason,
            "base_generation": self.base_generation,
            **{k: v for k, v in self._counts.items() if k != "resent"},
            "to_send": self._counts["joiners"]
            + self._counts["changed"]
            + self._counts["retried"]
            + self._counts["resent"],
            "leavers": leaving,
            "never_added_leavers": never_added,
            "guard": self.verdict.to_dict() if self.verdict is not None else None,
        }

    def next_state(self, generation: str, *, saved_at: str | None = None) -> SyncState:
        """The state this run leaves, as generation ``generation`` (its run id)."""
        state, s = self._state, self._settle()
        hashes = state.attr_hashes.copy()
        first = state.first_added_ms.copy()
        flags = state.flags.copy()
        # Sends of people in the state: confirmed ones take the new hash (and, if their
        # add had not been confirmed, the job's time as first add); failed ones keep
        # what Klaviyo last accepted and are resent next run.
        was_confirmed = (state.flags[s.index] & CONFIRMED) != 0
        ok, bad = s.index[s.ok], s.index[~s.ok]
        hashes[ok] = s.hashes[s.ok]
        first[ok] = np.where(was_confirmed[s.ok], state.first_added_ms[ok], s.created[s.ok])
        flags[ok] = CONFIRMED
        flags[bad] |= RETRY
        hashes[bad] = np.where(was_confirmed[~s.ok], state.attr_hashes[bad], s.hashes[~s.ok])
        # Leavers never added go; removed, kept_not_owned and gone ones go; the rest stay.
        keep = self._seen | state.confirmed
        if self._resolved:
            index, found = self._index.find(np.concatenate(list(self._resolved.values())))
            keep[index[found]] = False
        joined_ok = s.joined_ok
        merge = KeyMerge(state.keys, keep, s.joined_keys)
        return SyncState(
            self._next_meta(generation, saved_at),
            keys=merge(state.keys, s.joined_keys),
            emails=merge.strings(state.emails, s.joined_emails),
            attr_hashes=merge(hashes, s.joined_hashes),
            first_added_ms=merge(first, s.joined_created),  # 0 where not confirmed
            flags=merge(flags, np.where(joined_ok, CONFIRMED, RETRY).astype(np.uint8)),
            copy=False,  # all made here, or the settled joiners' (read-only from now)
        )

    def _next_meta(self, generation: str, saved_at: str | None) -> StateMeta:
        people = self.seen
        if self.verdict is not None and self.verdict.held and self._base is not None:
            # A held snapshot is not trusted: the next run compares with the last one
            # that was.
            people = self._base.meta.snapshot_people
        return _meta(self.target, generation, people, self.base_generation, saved_at)


def _meta(
    target: SyncTarget, generation: str, people: int, base: str | None, saved_at: str | None = None
) -> StateMeta:
    return StateMeta(
        export=target.export,
        list_id=target.list_id,
        mapping_fingerprint=target.mapping_fingerprint,
        snapshot_people=people,
        generation=generation,
        base_generation=base,
        saved_at=saved_at or datetime.now(UTC).isoformat(timespec="milliseconds"),
    )


def _pick(emails: pl.Series | list[str], mask: Mask) -> pl.Series:
    if isinstance(emails, pl.Series):
        return emails.filter(pl.Series(mask)).cast(pl.String)
    at = np.flatnonzero(mask)
    if len(at) * 8 < len(emails):  # few joiners: cheaper than converting the whole block
        return pl.Series([emails[i] for i in at], dtype=pl.String)
    return pl.Series(emails, dtype=pl.String).filter(pl.Series(mask))
