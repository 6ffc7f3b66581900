"""Executing a queued run (the queue-triggered worker) and giving up on a poisoned one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from shared.errors import (
    ConsentError,
    DefinitionError,
    InputError,
    KlaviyoFatalError,
    NotFoundError,
    RunConflictError,
    SecretError,
    SettingsError,
)
from shared.names import is_export_name, is_run_id
from shared.runner import run_definition
from shared.runs import FINISHED, utc_now
from shared.service import Services

__all__ = ["RunMessage", "execute_run", "fail_poisoned_run", "parse_run_message"]

logger = logging.getLogger(__name__)

# Retrying cannot fix these: the run fails at once with the reason.
_FATAL = (
    ConsentError,
    DefinitionError,
    InputError,
    KlaviyoFatalError,
    NotFoundError,
    SecretError,
    SettingsError,
)


@dataclass(frozen=True, slots=True)
class RunMessage:
    export: str
    run_id: str
    dry_run: bool = False
    trigger: str = "http"


def parse_run_message(body: bytes | str) -> RunMessage:
    """The queue message as the app enqueues it; ValueError for anything else."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"run message is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("run message must be a JSON object")
    export, run_id = doc.get("export"), doc.get("run_id")
    if not is_export_name(export):
        raise ValueError("run message: 'export' is missing or not a valid export name")
    if not is_run_id(run_id):
        raise ValueError("run message: 'run_id' is missing or malformed")
    return RunMessage(
        export=export,
        run_id=run_id,
        dry_run=bool(doc.get("dry_run", False)),
        trigger=str(doc.get("trigger", "http")),
    )


async def execute_run(services: Services, body: bytes | str, *, attempt: int = 1) -> str:
    """Run (or resume) the queued run. Returns its final status.

    Raises for faults worth another attempt (the queue redelivers the message and the
    run resumes from its checkpoint); records a failure at once for faults that a retry
    cannot fix.
    """
    try:
        message = parse_run_message(body)
    except ValueError as exc:
        logger.error("%s; message dropped (no retry can fix it)", exc)
        return "rejected"
    export, run_id = message.export, message.run_id
    record = services.runs.get(export, run_id) or {}
    if record.get("status") in FINISHED:
        logger.info("run %s of %s already %s; message ignored", run_id, export, record["status"])
        return record["status"]
    try:
        definition = services.definitions.get(export)[0]
        async with services.lock(export).hold(run_id):
            services.runs.update(
                export,
                run_id,
                status="running",
                attempts=attempt,
                started_at=record.get("started_at") or utc_now(),
            )
            report = await run_definition(
                definition,
                services.settings,
                run_id=run_id,
                provider=services.key_provider(),
                client_kwargs=services.client_kwargs,
                options=services.options(dry_run=message.dry_run),
            )
    except RunConflictError as exc:
        services.runs.update(export, run_id, last_error=str(exc))
        raise  # another run holds the lease: try again after the visibility timeout
    except _FATAL as exc:
        logger.error("run %s of %s failed: %s", run_id, export, exc)
        services.runs.finish(export, run_id, status="failed", error=str(exc))
        return "failed"
    except Exception as exc:
        logger.warning("run %s of %s attempt %d: %s; will resume", run_id, export, attempt, exc)
        services.runs.update(export, run_id, last_error=f"{type(exc).__name__}: {exc}")
        raise
    status = "succeeded" if report["accounted"] else "failed"
    error = None if report["accounted"] else "row counts do not add up; see the report"
    services.runs.finish(export, run_id, status=status, error=error, report=report)
    return status


def fail_poisoned_run(services: Services, body: bytes | str, *, attempts: int | None) -> None:
    """The queue gave up on a message: mark its run failed with the last reason."""
    try:
        message = parse_run_message(body)
    except ValueError as exc:
        logger.error("poison message that is not a run message: %s", exc)
        return
    record: dict[str, Any] = services.runs.get(message.export, message.run_id) or {}
    if record.get("status") in FINISHED:
        return
    last = record.get("last_error") or "no error recorded"
    tries = f" after {attempts} attempts" if attempts else ""
    services.runs.finish(
        message.export, message.run_id, status="failed", error=f"gave up{tries}: {last}"
    )
