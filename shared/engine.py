"""The columnar engine (polars), configured for this instance before it is first imported.

Every data-plane module imports polars from here, never directly: polars fixes its thread
pool and its allocator's settings when it is imported, so they must be in the environment
first. The thread count follows the instance's CPU quota (``shared/cpu.py``); an explicit
``POLARS_MAX_THREADS`` wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from shared.cpu import configure_engine

__all__ = ["THREADS", "pl", "release_code_pages", "release_free_memory"]

THREADS = configure_engine()
# jemalloc, polars' allocator on Linux, keeps freed pages for 10 s by default; each block's
# working memory is freed right after the block, so hand it back sooner to keep the
# process's resident size flat. Measured on 300k rows of 2 MB blocks (peak PSS / CPU per
# row): default decay 255 MB / 8.4 µs, 100 ms 211 MB / 8.8 µs, 0 ms 173 MB / 15.4 µs.
os.environ.setdefault(
    "_RJEM_MALLOC_CONF", "background_thread:true,dirty_decay_ms:100,muzzy_decay_ms:0"
)

import polars as pl  # noqa: E402 - must follow the settings above

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's mallopt() names


def _load_libc() -> ctypes.CDLL | None:
    # Once: find_library() runs ldconfig in a subprocess.
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _load_libc()


def _tune_malloc() -> None:
    """glibc's malloc (Python objects, numpy, the Azure SDK's buffers) for a run's shape.

    A run frees megabyte-sized buffers block after block from several threads (download
    chunks, block bytes, parts, payloads). By default glibc raises its mmap threshold after
    such frees (to 32 MB), so they land in per-thread arenas (up to 8 per core) that keep
    the memory: measured +76 MB of peak PSS on 500k rows. A fixed threshold and two arenas
    bound what the threads keep. The threshold is 4 MB, not less: below it every block-
    sized buffer (a 2 MB chunk, the block's bytes, each numpy temporary of the record
    scan) was a fresh mapping whose pages fault in on first touch, ~1 ms per 2 MB; at
    256 KB that cost 1.8 µs a row of CPU on 1M rows end to end (10.7 -> 8.9 µs, the
    reader thread 1.44 -> 0.81), for +14 MB of the process tree's peak (375 -> 389 MB).
    The trim threshold stays at 1 MB: at 16 MB the CPU was the same and the peak +60 MB.
    """
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None:  # not glibc (musl, macOS): nothing to tune
        return
    mallopt(_M_MMAP_THRESHOLD, 4 * 1024 * 1024)
    mallopt(_M_TRIM_THRESHOLD, 1024 * 1024)
    mallopt(_M_ARENA_MAX, 2)


_tune_malloc()


def release_free_memory() -> None:
    """Hand glibc's free heap pages back to the system (``malloc_trim``, ~0.3 ms), e.g.
    after each block and between a run's reading and its save: measured -12 MB of PSS at
    that point on 1M rows."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:  # not glibc: nothing to trim
        trim(0)


_MADV_PAGEOUT = 21  # Linux 5.4+


def release_code_pages() -> int:
    """Ask the kernel to reclaim this process's pages of mapped files that are never
    written (the libraries' code and constants: ``madvise(MADV_PAGEOUT)`` on the
    read-only file mappings); the bytes advised, 0 where this is not Linux or the kernel
    refuses. Pages still in use fault back in, from the page cache or the disk.

    Importing polars, numpy and the Azure SDK, and planning a first block, touch far more
    of their code than a block runs, and those clean pages stay mapped, counted in the
    process's RSS and PSS (~55-60 MB at the peak of a 1M run). Done once after the first
    block: reading benchmark, 1M x 3, three paired runs, peak PSS 197-207 MB against
    221-223 MB, the same CPU (~110 major faults against 4-41); end to end, five paired
    runs, 234-249 MB against 244-259 MB, the file pages at the peak 42-43 MB against 53.
    """
    madvise = getattr(_LIBC, "madvise", None)
    if madvise is None:
        return 0
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return 0
    advised = 0
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)  # range, perms, offset, device, inode, path
        if len(fields) < 6 or not fields[5].startswith("/") or "w" in fields[1]:
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_PAGEOUT) == 0:
            advised += end - start
    return advised
