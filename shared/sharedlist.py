"""People another export still syncs to the same list: this export never removes them.

Two segments may share one Klaviyo list (a VIP and a churn-risk segment both into the
newsletter list). A person in both is added by whichever export runs first, so that export
owns them; when they leave its segment but stay in the other's, removing them would take
off the list someone the other export wants there, and the other's next run would not send
them again (unchanged in its state). So before removing, a run reads the keys of every
other export's sync state for the same list (the key column of the current generation
only: 8 bytes a person) and keeps those leavers on the list, counted as
``kept_not_owned``. A state whose export was deleted, or whose definition now writes to
another list, protects nobody; one whose definition cannot be read protects its people
(when in doubt, keep).
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from shared.errors import DefinitionError, NotFoundError
from shared.state import DefinitionStore
from shared.statestore import SyncStateStore

__all__ = ["kept_for_others"]

logger = logging.getLogger(__name__)


def kept_for_others(store: SyncStateStore, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    """For each of this export's leavers (``keys``): whether another export syncing to the
    same list still has them in its state. Blocking (storage reads)."""
    wanted = np.zeros(len(keys), dtype=bool)
    if not len(keys):
        return wanted
    for other in _others_on_list(store):
        theirs = other.current_keys()
        if theirs is not None and len(theirs):
            wanted |= np.isin(keys, theirs)
    return wanted


def _others_on_list(store: SyncStateStore) -> list[SyncStateStore]:
    """The other exports that keep a sync state for this list and still write to it."""
    container = store.container
    names = SyncStateStore.exports_on_list(container, store.list_id) - {store.export}
    definitions = DefinitionStore(container)
    others = []
    for name in sorted(names):
        try:
            definition = definitions.get(name)[0]
        except NotFoundError:
            continue  # the export was deleted: its old state wants nobody
        except (DefinitionError, ValueError):
            logger.warning(
                "export %s: definition of %s cannot be read; its people on list %s are kept",
                store.export,
                name,
                store.list_id,
            )
        else:
            if definition.destination.list_id != store.list_id:
                continue  # it writes to another list now
        others.append(SyncStateStore(container, name, store.list_id))
    return others
