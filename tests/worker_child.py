"""Runs one queued export run in a child process, so a test can kill it mid-way."""

from __future__ import annotations

import asyncio
import sys

from shared.service import Services
from shared.settings import Settings
from shared.worker import execute_run

if __name__ == "__main__":
    services = Services.from_settings(Settings.from_env(), lock_seconds=15)
    print(asyncio.run(execute_run(services, sys.argv[1], attempt=1)))
