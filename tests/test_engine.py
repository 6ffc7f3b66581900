"""shared.engine: handing the libraries' unused code pages back to the kernel."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from shared.engine import pl, release_code_pages


def _library_rss_kb() -> int:
    """Resident kB of this process's read-only mappings of files (the libraries' code)."""
    total, counting = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and len(head) >= 5:  # a mapping's first line
            counting = len(head) >= 6 and head[5].startswith("/") and "w" not in head[1]
        elif counting and head[0] == "Rss:":
            total += int(head[1])
    return total


def _kernel_at_least(major: int, minor: int) -> bool:
    numbers = platform.release().split("-")[0].split(".")
    return (int(numbers[0]), int(numbers[1])) >= (major, minor)


def test_code_pages_are_handed_back_and_the_engine_still_works():
    frame = pl.DataFrame({"a": ["x", " y ", None]})
    before = frame.select(pl.col("a").str.strip_chars().str.len_bytes()).to_series().to_list()
    if sys.platform != "linux" or not _kernel_at_least(5, 4):  # no MADV_PAGEOUT there
        assert release_code_pages() == 0
        return
    resident = _library_rss_kb()
    advised = release_code_pages()
    assert advised > 0
    assert _library_rss_kb() < resident
    # The pages come back when used again: the same query, the same answer.
    after = frame.select(pl.col("a").str.strip_chars().str.len_bytes()).to_series().to_list()
    assert after == before == [1, 1, None]
