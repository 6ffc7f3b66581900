"""The schedule tick: queue a run for each enabled export whose fingerprint (what a run
would read and where it would write, see fingerprint.py) differs from the one its last
successful run recorded (the seed: "runs with each scheduled refresh"). A run that failed
on its input (a corrupt file, a header that does not match) is not queued again for the
same fingerprint: only a new snapshot or a changed definition can make it pass.

Each export is judged on its own: whatever goes wrong with one (a corrupt definition, a
missing or unreadable container, storage errors of any kind) is logged as one line and
recorded on that export's status, and the tick goes on with the others.
"""

from __future__ import annotations

import logging

from shared.failures import describe_failure
from shared.fingerprint import fingerprint, listing_of, what_changed
from shared.names import is_export_name
from shared.runner import segments_container
from shared.segments import find_latest_snapshot
from shared.service import Services, start_run

__all__ = ["queue_due_runs"]

logger = logging.getLogger(__name__)


def queue_due_runs(services: Services) -> dict[str, str]:
    """One tick. Returns what happened to each export, e.g. ``{"vip": "queued <run id>"}``."""
    outcome: dict[str, str] = {}
    for name in services.definitions.names():
        if not is_export_name(name):
            outcome[name] = "error: the definition's blob name is not a valid export name"
            logger.error("schedule: definitions/%s.json: not a valid export name; skipped", name)
            continue
        try:
            outcome[name] = _tick_one(services, name)
        except Exception as exc:  # one broken export must not stop the others
            message = describe_failure(exc, services.settings)
            outcome[name] = f"error: {message}"
            logger.error("schedule: export %s: %s", name, message)
            _note(services, name, message)
        else:
            _note(services, name, None)
    errors = sum(v.startswith("error") for v in outcome.values())
    queued = sum(v.startswith("queued") for v in outcome.values())
    logger.info("schedule: %d exports, %d queued, %d with errors", len(outcome), queued, errors)
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
    current = fingerprint(definition, listing_of(snapshot))
    status = services.runs.status(name)
    last = (status.get("last_success") or {}).get("fingerprint")
    why = what_changed(last, current)
    if last == current:
        logger.info("schedule: export %s unchanged (snapshot %s); skipped", name, snapshot.prefix)
        return "unchanged"
    failed = status.get("last_run") or {}
    if failed.get("status") == "failed" and failed.get("failed_on_fingerprint") == current:
        # The same files and definition would fail the same way: running them again each
        # tick would only repeat whatever the run sent before it stopped.
        logger.warning(
            "schedule: export %s: run %s failed on this snapshot's input; not retried until "
            "the snapshot or the definition changes (start a run by hand to retry)",
            name,
            failed.get("run_id"),
        )
        return f"failed on this snapshot (run {failed.get('run_id')})"
    run_id, queued = start_run(services, name, trigger="schedule", fingerprint=current)
    if not queued:
        logger.info("schedule: export %s has run %s in progress; skipped", name, run_id)
        return f"in progress {run_id}"
    logger.info("schedule: export %s queued run %s: %s", name, run_id, why)
    return f"queued {run_id} ({why})"


def _note(services: Services, name: str, error: str | None) -> None:
    """Record (or clear) the tick's error on the export's status; never fail the tick."""
    try:
        services.runs.note_schedule(name, error=error)
    except Exception as exc:
        logger.warning(
            "schedule: export %s: could not record on its status: %s",
            name,
            describe_failure(exc, services.settings),
        )
