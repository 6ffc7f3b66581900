"""The clients one function-app worker shares across invocations, and starting a run.

Created lazily on first use (nothing connects at import time) and reused afterwards.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from shared.export import RunOptions, new_run_id
from shared.keyvault import ApiKeyProvider, api_key_provider
from shared.locks import RunLock
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

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Services:
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

    def options(self, *, dry_run: bool) -> RunOptions:
        return RunOptions(dry_run=dry_run, **self.run_options)


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
    services: Services, export: str, *, dry_run: bool = False, trigger: str = "http"
) -> tuple[str, bool]:
    """Queue a run of ``export``. Returns (run id, True), or (active run id, False) when
    one is already in progress. Saving a definition never calls this: only a schedule
    tick or an explicit request does."""
    services.definitions.get(export)  # NotFoundError for an unknown export
    run_id = new_run_id()
    claimed = services.runs.claim(
        export,
        run_id,
        is_active=lambda other: is_run_active(services, export, other),
        dry_run=dry_run,
        trigger=trigger,
    )
    if claimed != run_id:
        return claimed, False
    message = {"export": export, "run_id": run_id, "dry_run": dry_run, "trigger": trigger}
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
