"""The clients one function-app worker shares across invocations, and starting a run.

Created lazily on first use (nothing connects at import time) and reused afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from shared.auth import SCHEDULE
from shared.definitions import ExportDefinition
from shared.export import RunOptions, new_run_id
from shared.keyvault import ApiKeyProvider, api_key_provider
from shared.locks import ConnectionLock, RunLock
from shared.runs import ACTIVE, RunRecords
from shared.settings import Settings
from shared.state import DefinitionStore, open_state
from shared.storage import queue_service

__all__ = [
    "RUN_QUEUE",
    "Services",
    "configure",
    "get_services",
    "is_run_active",
    "start_run",
]

logger = logging.getLogger(__name__)

# Queue names are fixed: the queue trigger's binding names the same ones.
RUN_QUEUE = "export-runs"
STALE_SECONDS = 2 * 3600  # an active run untouched this long, without its lease, is dead


@dataclass
class Services:
    """What the functions need, built once from settings."""

    settings: Settings
    state: ContainerClient
    definitions: DefinitionStore
    runs: RunRecords
    queue: QueueClient
    provider: ApiKeyProvider | None = None
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    run_options: dict[str, Any] = field(default_factory=dict)
    lock_seconds: int = 60  # blob lease length; a crashed run's lease frees after this
    # A run whose connection (or export) is busy goes back to the queue, invisible for
    # wait_seconds, doubling per wait up to max_wait_delay; after max_wait_seconds of
    # waiting it fails.
    wait_seconds: float = 30.0
    max_wait_delay: float = 300.0
    max_wait_seconds: float = 12 * 3600.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Services:
        if settings.api_auth_disabled:
            logger.warning(
                "API_AUTH_DISABLED is set: the HTTP API checks no app roles and treats every "
                "caller as an administrator; for local runs only, never in Azure"
            )
        state = open_state(settings)
        # The host decodes queue-trigger messages as base64 (host.json leaves the default
        # messageEncoding), so what we enqueue must be base64 too.
        queue = queue_service(settings.app_storage).get_queue_client(
            RUN_QUEUE, message_encode_policy=TextBase64EncodePolicy()
        )
        with contextlib.suppress(ResourceExistsError):
            queue.create_queue()
        return cls(
            settings=settings,
            state=state,
            definitions=DefinitionStore(state),
            runs=RunRecords(state),
            queue=queue,
            **overrides,
        )

    def key_provider(self) -> ApiKeyProvider:
        if self.provider is None:
            self.provider = api_key_provider(self.settings)
        return self.provider

    def lock(self, export: str) -> RunLock:
        return RunLock(self.state, export, duration=self.lock_seconds)

    def connection_lock(self, definition: ExportDefinition) -> ConnectionLock:
        """The lease shared by every export that uses the same Klaviyo key."""
        secret = definition.connection.api_key_secret
        return ConnectionLock(self.state, secret, duration=self.lock_seconds)

    def options(
        self,
        *,
        dry_run: bool,
        full: bool = False,
        allow_mass_removal: bool = False,
        started_by: dict[str, Any] | None = None,
    ) -> RunOptions:
        return RunOptions(
            dry_run=dry_run,
            full=full,
            allow_mass_removal=allow_mass_removal,
            started_by=started_by,
            **self.run_options,
        )

    def wait_delay(self, waits: int) -> int:
        """Seconds a busy run stays invisible in the queue before it tries again: doubling,
        capped, with jitter so that runs waiting for one connection do not wake together."""
        delay = min(self.wait_seconds * 2 ** min(waits, 16), self.max_wait_delay)
        return max(1, round(delay * random.uniform(0.8, 1.0)))

    def requeue(self, body: str, *, delay: int) -> None:
        """Put a run message back in the queue, invisible for ``delay`` seconds."""
        self.queue.send_message(body, visibility_timeout=delay)


_services: Services | None = None


def get_services() -> Services:
    """This worker's services, built from the app settings on first use."""
    global _services
    if _services is None:
        _services = Services.from_settings(Settings.from_env())
    return _services


def configure(services: Services | None) -> None:
    """Replace this worker's services (tests, or a host that builds them itself)."""
    global _services
    _services = services


def is_run_active(services: Services, export: str, run_id: str) -> bool:
    """Queued or running, and alive: its lease is held or it changed recently."""
    record = services.runs.get(export, run_id)
    if not record or record.get("status") not in ACTIVE:
        return False
    if services.lock(export).is_held():
        return True
    touched = record.get("updated_at") or record.get("queued_at")
    if not touched:
        return False
    age = (datetime.now(UTC) - datetime.fromisoformat(touched)).total_seconds()
    return age < STALE_SECONDS


def start_run(
    services: Services,
    export: str,
    *,
    dry_run: bool = False,
    full: bool = False,
    allow_mass_removal: bool = False,
    trigger: str = "http",
    started_by: dict[str, Any] | None = None,
    fingerprint: str | None = None,
) -> tuple[str, bool]:
    """Queue a run of ``export``. Returns (run id, True), or (active run id, False) when
    one is already in progress. Saving a definition never calls this: only a schedule
    tick or an explicit request does. ``started_by``: who asked (name and object id);
    scheduled runs record ``schedule``. ``full`` resends every profile once;
    ``allow_mass_removal`` lets the run's removals past the guard. ``fingerprint``: what
    the schedule found due (see scheduler.py), kept on the run record."""
    services.definitions.get(export)  # NotFoundError for an unknown export
    if started_by is None and trigger == "schedule":
        started_by = dict(SCHEDULE)
    run_id = new_run_id()
    claimed = services.runs.claim(
        export,
        run_id,
        is_active=lambda other: is_run_active(services, export, other),
        dry_run=dry_run,
        full=full,
        allow_mass_removal=allow_mass_removal,
        trigger=trigger,
        started_by=started_by,
        **({"fingerprint": fingerprint} if fingerprint else {}),
    )
    if claimed != run_id:
        return claimed, False
    message = {
        "export": export,
        "run_id": run_id,
        "dry_run": dry_run,
        "full": full,
        "allow_mass_removal": allow_mass_removal,
        "trigger": trigger,
    }
    try:
        services.queue.send_message(orjson.dumps(message).decode())
    except Exception as exc:
        # Without its message the run would never start; free the export at once.
        services.runs.finish(export, run_id, status="failed", error=f"could not queue: {exc}")
        raise
    logger.info(
        "export %s: queued run %s (%s%s)", export, run_id, trigger, ", dry run" if dry_run else ""
    )
    return run_id, True
