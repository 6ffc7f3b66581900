"""The columnar engine (polars), configured for this instance before it is first imported.

Every data-plane module imports polars from here, never directly: polars fixes its thread
pool and its allocator's settings when it is imported, so they must be in the environment
first. The thread count follows the instance's CPU quota (``shared/cpu.py``); an explicit
``POLARS_MAX_THREADS`` wins.
"""

from __future__ import annotations

import os

from shared.cpu import configure_engine

__all__ = ["THREADS", "pl"]

THREADS = configure_engine()
# jemalloc, polars' allocator on Linux, keeps freed pages for 10 s by default; each block's
# working memory is freed right after the block, so hand it back sooner to keep the
# process's resident size flat (measured in devtools/benchmark.py).
os.environ.setdefault("_RJEM_MALLOC_CONF", "background_thread:true,dirty_decay_ms:1000")

import polars as pl  # noqa: E402 - must follow the settings above
