"""Run a module with only what the deployed app can import: the development-only
packages hidden, as if they were not installed.

    python -m devtools.deployed devtools.benchmark --child DEFINITION.json

aiohttp is the sandbox's web server (requirements-dev.txt) and is not among the deployed
requirements or their dependencies (tests/test_devtools_local.py checks that), but
azure-storage-blob imports it whenever it is importable: in the development venv the
exporter would carry ~6.8 MB (measured) that it never has once deployed. The benchmarks
run the exporter through this, so that their memory figures are the deployed app's.
"""

from __future__ import annotations

import runpy
import sys

__all__ = ["DEV_ONLY", "main"]

DEV_ONLY = ("aiohttp",)  # importable here, never deployed


def main() -> None:
    for name in DEV_ONLY:
        sys.modules[name] = None  # "import aiohttp" now raises ImportError
    module = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
