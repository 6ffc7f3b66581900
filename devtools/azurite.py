"""Start and stop Azurite (Blob + Queue) on 127.0.0.1 for tests, the demo and the benchmark."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["Azurite", "connection_string", "free_port", "stop_process"]

ROOT = Path(__file__).resolve().parent.parent
ENTRY = ROOT / "node_modules" / "azurite" / "dist" / "src" / "azurite.js"

# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connection_string(blob_port: int, queue_port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob_port}/{ACCOUNT};"
        f"QueueEndpoint=http://127.0.0.1:{queue_port}/{ACCOUNT};"
    )


def stop_process(proc: subprocess.Popen | None, *, timeout: float = 10) -> None:
    """Terminate a child service, and kill it if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for_port(port: int, proc: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # polling a readiness condition, bounded by the deadline
    raise RuntimeError(f"Azurite did not listen on port {port} in time")


class Azurite:
    """An Azurite process with its own data folder; use as a context manager."""

    def __init__(self, *, location: str | None = None, startup_timeout: float = 30.0) -> None:
        self._own_location = location is None
        self.location = location or tempfile.mkdtemp(prefix="azurite-")
        self.startup_timeout = startup_timeout
        self.blob_port = free_port()
        self.queue_port = free_port()
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port)

    def start(self) -> Azurite:
        if not ENTRY.exists():
            raise RuntimeError(f"Azurite is not installed ({ENTRY}); run `npm ci` first")
        node = shutil.which("node") or "node"
        self._proc = subprocess.Popen(
            [
                node,
                str(ENTRY),
                "--silent",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--loose",
                "--location",
                self.location,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.blob_port),
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                str(self.queue_port),
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                str(free_port()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + self.startup_timeout
        _wait_for_port(self.blob_port, self._proc, deadline)
        _wait_for_port(self.queue_port, self._proc, deadline)
        return self

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None
        if self._own_location:
            shutil.rmtree(self.location, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
