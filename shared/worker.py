"""Executing a queued run (the queue-triggered worker) and giving up on a poisoned one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
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
    SnapshotChangedError,
)
from shared.export import report_of
from shared.locks import ConnectionBusyError
from shared.metrics import log_run_end
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
    full: bool = False
    allow_mass_removal: bool = False
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
        dry_run=doc.get("dry_run") is True,
        full=doc.get("full") is True,
        allow_mass_removal=doc.get("allow_mass_removal") is True,
        trigger=str(doc.get("trigger", "http")),
    )


async def execute_run(services: Services, body: bytes | str, *, attempt: int = 1) -> str:
    """Run (or resume) the queued run. Returns its final status, or ``waiting``.

    Raises for faults worth another attempt (the queue redelivers the message and the
    run resumes from its checkpoint); records a failure at once for faults that a retry
    cannot fix. A run whose export or Klaviyo connection is busy goes back to the queue
    with a visibility delay and returns normally: waiting is not a failed delivery, so it
    must not use up the message's dequeue count and end in the poison queue.

    Every storage call runs in a worker thread: the SDK clients block, and this coroutine
    shares the Functions worker's event loop.
    """
    try:
        message = parse_run_message(body)
    except ValueError as exc:
        logger.error("%s; message dropped (no retry can fix it)", exc)
        return "rejected"
    export, run_id = message.export, message.run_id
    record = await asyncio.to_thread(services.runs.get, export, run_id) or {}
    if record.get("status") in FINISHED:
        logger.info("run %s of %s already %s; message ignored", run_id, export, record["status"])
        return record["status"]
    try:
        definition = (await asyncio.to_thread(services.definitions.get, export))[0]
        async with contextlib.AsyncExitStack() as leases:
            await leases.enter_async_context(services.lock(export).hold(run_id, export))
            # A dry run sends nothing; at most it looks leavers up, 100 a call, in the
            # list-read budget (75/s), so it does not wait for the connection.
            if not message.dry_run:
                connection = services.connection_lock(definition)
                await leases.enter_async_context(connection.hold(run_id, export))
            record = await asyncio.to_thread(
                services.runs.update,
                export,
                run_id,
                status="running",
                attempts=attempt,
                started_at=record.get("started_at") or utc_now(),
                waiting_for=None,
                waiting_since=None,
            )
            report = await run_definition(
                definition,
                services.settings,
                run_id=run_id,
                provider=services.key_provider(),
                client_kwargs=services.client_kwargs,
                options=services.options(
                    dry_run=message.dry_run,
                    full=message.full,
                    allow_mass_removal=message.allow_mass_removal,
                    started_by=record.get("started_by"),
                ),
            )
    except RunConflictError as exc:
        return await _wait_in_queue(services, message, body, record, exc)
    except _FATAL as exc:
        logger.error("run %s of %s failed: %s", run_id, export, exc)
        # A failed run wrote a report of what it read and sent before it stopped.
        await _finish(
            services,
            message,
            status="failed",
            error=str(exc),
            report=report_of(exc),
            # A changed snapshot is not bad input: its next run reads it as it is then.
            input_error=isinstance(exc, InputError) and not isinstance(exc, SnapshotChangedError),
        )
        return "failed"
    except Exception as exc:
        logger.warning("run %s of %s attempt %d: %s; will resume", run_id, export, attempt, exc)
        error = f"{type(exc).__name__}: {exc}"
        await asyncio.to_thread(services.runs.update, export, run_id, last_error=error)
        raise
    status, error = report["status"], report["error"]  # succeeded, held or failed
    await _finish(services, message, status=status, error=error, report=report)
    return status


async def _finish(
    services: Services,
    message: RunMessage,
    *,
    status: str,
    error: str | None,
    report: dict[str, Any] | None = None,
    input_error: bool = False,
) -> None:
    """Record the outcome, then log the run-end metric record."""
    record = await asyncio.to_thread(
        services.runs.finish,
        message.export,
        message.run_id,
        status=status,
        error=error,
        report=report,
        input_error=input_error,
    )
    log_run_end(
        export=message.export,
        run_id=message.run_id,
        trigger=message.trigger,
        status=status,
        record=record,
        report=report,
        error=error,
    )


async def _wait_in_queue(
    services: Services,
    message: RunMessage,
    body: bytes | str,
    record: dict[str, Any],
    busy: RunConflictError,
) -> str:
    """Send the same run message again, invisible for a while, and say what it waits for."""
    export, run_id = message.export, message.run_id
    waits = int(record.get("waits") or 0)
    since = record.get("waiting_since") or utc_now()
    waiting_for = _waiting_for(busy)
    waited = (datetime.now(UTC) - datetime.fromisoformat(since)).total_seconds()
    if waited > services.max_wait_seconds:
        error = f"gave up after waiting {waited / 3600:.1f} h: {busy}"
        logger.error("run %s of %s: %s", run_id, export, error)
        await _finish(services, message, status="failed", error=error)
        return "failed"
    delay = services.wait_delay(waits)
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    await asyncio.to_thread(services.requeue, text, delay=delay)
    # The message names the connection (its secret's name) and the run holding it, no key.
    logger.info("run %s of %s waits %ds: %s", run_id, export, delay, busy)
    try:
        await asyncio.to_thread(
            services.runs.update,
            export,
            run_id,
            status="waiting",
            waiting_for=waiting_for,
            waiting_since=since,
            waits=waits + 1,
            last_waited_for=waiting_for,
            next_attempt_after_seconds=delay,
        )
    except Exception as exc:  # the message is queued again; the status is a courtesy
        logger.warning("run %s of %s: could not record the wait: %s", run_id, export, exc)
    return "waiting"


def _waiting_for(busy: RunConflictError) -> dict[str, Any]:
    """What a waiting run shows in its record: which lease, which run holds it."""
    if isinstance(busy, ConnectionBusyError):
        return {
            "lease": "connection",
            "connection": busy.connection,
            "run_id": busy.run_id,
            "export": busy.export,
            "since": utc_now(),
        }
    return {"lease": "export", "export": busy.export, "run_id": busy.run_id, "since": utc_now()}


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
    error = f"gave up{tries}: {last}"
    record = services.runs.finish(message.export, message.run_id, status="failed", error=error)
    log_run_end(
        export=message.export,
        run_id=message.run_id,
        trigger=message.trigger,
        status="failed",
        record=record,
        error=error,
    )
