"""The mass-removal guard: a half-written or filtered export looks exactly like mass churn.

A run is *held* (it adds and updates, removes nobody, keeps its leavers in the sync
state) when it would remove people and

- the removals exceed ``max_removal_percent`` of the people this export has on the list, or
- the snapshot has fewer than (100 - ``max_removal_percent``) % of the previous
  snapshot's people, or
- the snapshot is empty.

``allow_mass_removal`` (CLI ``--allow-mass-removal``, API ``?allow_mass_removal=true``)
lets one run remove them anyway; the verdict still records why it would have held.
A run that would remove nobody is never held. Messages hold counts only, never a person.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GuardVerdict", "check_removals"]


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """The guard's decision on one run's removals, with the figures behind it."""

    held: bool
    would_remove: int
    on_list: int
    snapshot_people: int
    previous_people: int | None
    max_removal_percent: float
    reasons: tuple[str, ...] = ()  # why it holds (or would have, when overridden)
    overridden: bool = False

    @property
    def message(self) -> str | None:
        """What the run's status and report say when the run is held (else None)."""
        if not self.held:
            return None
        return (
            f"removals held back: this run would have removed {self.would_remove:,} of the "
            f"{self.on_list:,} people this export has on the list, but "
            + "; and ".join(self.reasons)
            + ". Nobody was removed; joiners and changes were sent. If these people really "
            "left the segment, run again with --allow-mass-removal (CLI) or "
            "?allow_mass_removal=true (API), or raise sync.max_removal_percent."
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "held": self.held,
            "would_remove": self.would_remove,
            "on_list": self.on_list,
            "snapshot_people": self.snapshot_people,
            "previous_people": self.previous_people,
            "max_removal_percent": self.max_removal_percent,
            "reasons": list(self.reasons),
            "overridden": self.overridden,
            "message": self.message,
        }


def check_removals(
    would_remove: int,
    *,
    on_list: int,
    snapshot_people: int,
    previous_people: int | None,
    max_removal_percent: float,
    allow_mass_removal: bool = False,
) -> GuardVerdict:
    """Judge ``would_remove`` removals; ``previous_people`` is None on a first run."""
    if not 0 <= max_removal_percent <= 100:
        raise ValueError("max_removal_percent must be from 0 to 100")
    limit = max_removal_percent
    reasons: list[str] = []
    if would_remove > 0:
        if snapshot_people == 0:
            reasons.append("the snapshot is empty")
        # Integer-safe comparisons of "x > p % of n" written as "100 x > p n".
        if would_remove * 100 > limit * on_list:
            share = 100 * would_remove / on_list if on_list else 100.0
            reasons.append(
                f"that is {share:.1f} % of them, above sync.max_removal_percent ({limit:g} %)"
            )
        if previous_people and snapshot_people * 100 < (100 - limit) * previous_people:
            reasons.append(
                f"the snapshot has {snapshot_people:,} people, fewer than "
                f"{100 - limit:g} % of the previous snapshot's {previous_people:,}"
            )
    return GuardVerdict(
        held=bool(reasons) and not allow_mass_removal,
        would_remove=would_remove,
        on_list=on_list,
        snapshot_people=snapshot_people,
        previous_people=previous_people,
        max_removal_percent=limit,
        reasons=tuple(reasons),
        overridden=bool(reasons) and allow_mass_removal,
    )
