"""The local stack for the demo and the benchmark: Azurite and a Klaviyo sandbox process,
plus the app settings that point the exporter at them."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil

from devtools.azurite import Azurite, stop_process

__all__ = [
    "SANDBOX_API_KEY",
    "SANDBOX_LIST_ID",
    "SandboxProcess",
    "cpu_seconds",
    "local_settings",
    "stack",
]

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_API_KEY = "pk_test_sandbox"
SANDBOX_LIST_ID = "Y6nRLr"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process and its descendants, for benchmark figures.

    The descendants count: the sandbox parses bulk import bodies in worker processes,
    which used ~8 of its ~11 CPU seconds on 1M profiles (the process alone showed 2.5).
    """
    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = process.cpu_times()  # children_*: its children that have exited
            total += t.user + t.system + t.children_user + t.children_system
    return total


class SandboxProcess:
    """``python -m devtools.klaviyo_sandbox`` in its own process (its CPU and memory are
    not the exporter's), on a free loopback port."""

    def __init__(self, args: Sequence[str] = ()) -> None:
        self.args = list(args)
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> SandboxProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.klaviyo_sandbox", "--port", "0", *self.args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        first = self._proc.stdout.readline().strip()  # "LISTENING http://127.0.0.1:PORT"
        if not first.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"Klaviyo sandbox did not start: {first!r}")
        self.url = first.split(" ", 1)[1]
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def local_settings(storage: str, klaviyo_url: str) -> dict[str, str]:
    """App settings as the functions read them, for the local stack."""
    return {
        "AzureWebJobsStorage": storage,
        "SEGMENTS_STORAGE": storage,
        "STATE_CONTAINER": "klaviyo-export",
        "KLAVIYO_BASE_URL": klaviyo_url,
        # Local runs only: no KEY_VAULT_URL, so the key comes from this explicit setting.
        "KLAVIYO_API_KEY": SANDBOX_API_KEY,
    }


@contextlib.contextmanager
def stack(
    *, sandbox_args: Sequence[str] = (), azurite_location: str | None = None
) -> Iterator[tuple[Azurite, SandboxProcess]]:
    with Azurite(location=azurite_location) as azurite, SandboxProcess(sandbox_args) as sandbox:
        yield azurite, sandbox
