"""The schedule tick: queue a run for each enabled export whose segment has a snapshot
newer than its last successful run (the seed: "runs with each scheduled refresh")."""

from __future__ import annotations

import logging

from shared.errors import ExportError
from shared.runner import segments_container
from shared.segments import find_latest_snapshot
from shared.service import Services, start_run

__all__ = ["queue_due_runs"]

logger = logging.getLogger(__name__)


def queue_due_runs(services: Services) -> dict[str, str]:
    """One tick. Returns what happened to each export, e.g. ``{"vip": "queued <run id>"}``."""
    outcome: dict[str, str] = {}
    for name in services.definitions.names():
        try:
            outcome[name] = _tick_one(services, name)
        except ExportError as exc:
            outcome[name] = f"error: {exc}"
            logger.error("schedule: export %s: %s", name, exc)
    return outcome


def _tick_one(services: Services, name: str) -> str:
    definition = services.definitions.get(name)[0]
    if not definition.enabled:
        logger.info("schedule: export %s is disabled; skipped", name)
        return "disabled"
    if not definition.connection.privacy_consent:
        logger.warning("schedule: export %s has no privacy consent; skipped", name)
        return "no consent"
    source = definition.source
    container = segments_container(definition, services.settings)
    snapshot = find_latest_snapshot(container, source.folder, source.segment)
    last = (services.runs.status(name).get("last_success") or {}).get("snapshot")
    if last and last >= snapshot.prefix:
        logger.info("schedule: export %s unchanged since %s; skipped", name, last)
        return "unchanged"
    run_id, queued = start_run(services, name, trigger="schedule")
    if not queued:
        logger.info("schedule: export %s has run %s in progress; skipped", name, run_id)
        return f"in progress {run_id}"
    return f"queued {run_id}"
