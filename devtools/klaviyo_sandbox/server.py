"""Run the sandbox: in a background thread with its own event loop, or in the caller's loop.

The thread form serves sync tests and code running other event loops alike; every
inspection call is marshalled onto the sandbox's loop, so nothing is read mid-update.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web

from .app import create_app
from .config import SandboxConfig
from .runtime import Runtime

__all__ = ["KlaviyoSandbox", "SandboxInspector", "serve"]

T = TypeVar("T")
_CALL_TIMEOUT = 30.0


@asynccontextmanager
async def serve(config: SandboxConfig) -> AsyncIterator[tuple[Runtime, str]]:
    """Serve ``config`` in the running loop; yields the runtime and the base URL."""
    runtime = Runtime(config)
    # No access log: at 10 jobs/s of 2.5 MB each, per-request logging is pure overhead.
    runner = web.AppRunner(
        create_app(runtime), access_log=None, handle_signals=False, shutdown_timeout=5.0
    )
    try:
        await runtime.start_workers()
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
        yield runtime, f"http://{config.host}:{port}"
    finally:
        await runtime.state.close()
        await runner.cleanup()
        runtime.stop_workers()


class SandboxInspector:
    """Thread-safe views of a running sandbox's state, for tests and scripts."""

    def __init__(self, sandbox: KlaviyoSandbox) -> None:
        self._sandbox = sandbox

    def list_emails(self, list_id: str) -> list[str]:
        """Sorted e-mails of the list's members (KeyError for an unknown list)."""
        return self._sandbox.call(lambda rt: rt.state.list_emails(list_id))

    def job(self, job_id: str) -> dict[str, Any]:
        """Status, counts and import errors of a job (KeyError if unknown)."""
        return self._sandbox.call(lambda rt: rt.state.job(job_id))

    def expire_job(self, job_id: str) -> None:
        """Make a job reach its ``expires_at``: from now on it, and its profiles, are 404."""
        self._sandbox.call(lambda rt: rt.state.expire_job(job_id))

    def list_members(self, list_id: str) -> list[dict[str, Any]]:
        """Members sorted by e-mail: ``id``, ``email``, ``joined_group_at`` (Klaviyo's
        format) and ``joined_at`` (epoch seconds). KeyError for an unknown list."""
        return self._sandbox.call(lambda rt: rt.state.members(list_id))

    def add_list_members(
        self, list_id: str, emails: Iterable[str], *, joined_at: datetime | float | None = None
    ) -> int:
        """Put profiles on a list as a sign-up form would, outside any export.

        New e-mails become profiles; ``joined_at`` (a datetime or epoch seconds; default
        now) backdates their ``joined_group_at``. Members already on the list keep theirs,
        as in Klaviyo. Returns how many joined.
        """
        when = joined_at.timestamp() if isinstance(joined_at, datetime) else joined_at
        wanted = list(emails)
        return self._sandbox.call(lambda rt: rt.state.add_members(list_id, wanted, when))

    def remove_list_members(self, list_id: str, emails: Iterable[str]) -> int:
        """Take profiles off a list by e-mail, as an unsubscribe would; returns how many."""
        wanted = list(emails)
        return self._sandbox.call(lambda rt: rt.state.remove_members(list_id, wanted))

    def profile(self, email: str) -> dict[str, Any] | None:
        return self._sandbox.call(lambda rt: rt.state.profile(email))

    def stats(self) -> dict[str, Any]:
        return self._sandbox.call(lambda rt: rt.stats_dict())

    def recorded_requests(self) -> list[dict[str, Any]]:
        """Recorded /api requests, oldest first (``KlaviyoContract.validate_recorded``)."""
        return self._sandbox.call(lambda rt: rt.recorded.entries())


class KlaviyoSandbox:
    """A Klaviyo API stand-in on 127.0.0.1; use as a context manager or start()/stop()."""

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        base = config or SandboxConfig()
        self.config = replace(base, **overrides) if overrides else base
        self.state = SandboxInspector(self)
        self._runtime: Runtime | None = None
        self._url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8787`` (API paths start with /api/)."""
        if self._url is None:
            raise RuntimeError("the sandbox is not running")
        return self._url

    def start(self, timeout: float = 10.0) -> KlaviyoSandbox:
        if self._thread is not None:
            raise RuntimeError("the sandbox is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="klaviyo-sandbox", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the sandbox did not start in time")
        if failure:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"the sandbox failed to start: {failure[0]}") from failure[0]
        return self

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main(ready))
        except BaseException as exc:  # reported to start() in the caller's thread
            failure.append(exc)
            ready.set()
        finally:
            self._loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        async with serve(self.config) as (runtime, url):
            self._runtime, self._url = runtime, url
            ready.set()
            await self._stopping.wait()

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=30)
        self._thread = self._loop = self._runtime = self._url = self._stopping = None

    def call(self, fn: Callable[[Runtime], T]) -> T:
        """Run ``fn(runtime)`` on the sandbox's loop and return its result."""
        loop, runtime = self._loop, self._runtime
        if loop is None or runtime is None:
            raise RuntimeError("the sandbox is not running")
        if threading.current_thread() is self._thread:
            return fn(runtime)

        async def invoke() -> T:
            return fn(runtime)

        return asyncio.run_coroutine_threadsafe(invoke(), loop).result(_CALL_TIMEOUT)

    def configure(self, **changes: Any) -> SandboxConfig:
        """Change faults, limits or timing while running (ValueError for a bad change)."""
        if self._runtime is None:
            self.config = self.config.with_changes(changes)
            return self.config
        self.config = self.call(lambda rt: rt.configure(changes))
        return self.config

    def reset(self, *, restore_config: bool = False) -> None:
        """Forget profiles, jobs, counters and recorded requests."""
        self.call(lambda rt: rt.reset(restore_config=restore_config))
        if restore_config:
            self.config = self.call(lambda rt: rt.config)

    def __enter__(self) -> KlaviyoSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
