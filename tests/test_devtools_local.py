"""The benchmarks' own tools: CPU of a process with its workers, the memory sampler, and
the exporter run as deployed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata

import psutil
import pytest

from devtools import benchmark
from devtools.deployed import DEV_ONLY
from devtools.local import ROOT, cpu_seconds

# Spins ~0.3 s of CPU, prints the CPU it used, then waits for stdin to close.
_BURN = """
import sys, time
start = time.process_time()
while time.process_time() - start < 0.3:
    pass
print(time.process_time(), flush=True)
sys.stdin.read()
"""
# Starts two burners: one it waits for (exited), one left running; prints their CPU.
_PARENT = f"""
import subprocess, sys
burn = [sys.executable, "-c", {_BURN!r}]
exited = subprocess.Popen(burn, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
used = float(exited.stdout.readline())
exited.stdin.close(); exited.wait()
live = subprocess.Popen(burn, stdin=sys.stdin, stdout=subprocess.PIPE, text=True)
used += float(live.stdout.readline())
print(used, flush=True)
live.wait()
"""


def test_cpu_seconds_counts_exited_and_live_descendants():
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        children_used = float(parent.stdout.readline())
        alone = psutil.Process(parent.pid).cpu_times()
        total = cpu_seconds(parent.pid)
        assert total >= alone.user + alone.system + children_used * 0.9
        assert children_used >= 0.6
    finally:
        assert parent.stdin is not None
        parent.stdin.close()
        parent.wait(timeout=30)


# Holds ~120 MB while its first line of stdin is unread, then ~0; prints at each step.
_BALLOON = """
import sys
ballast = b"x" * (120 * 2**20)
print("full", flush=True)
sys.stdin.readline()
del ballast
print("empty", flush=True)
sys.stdin.read()
"""


def test_tree_memory_keeps_the_peak_and_reads_pss_only_near_it(monkeypatch):
    balloon = subprocess.Popen(
        [sys.executable, "-c", _BALLOON], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert balloon.stdin is not None and balloon.stdout is not None
    monkeypatch.setattr(benchmark, "_PSS_EVERY_SECONDS", 3600.0)
    try:
        memory = benchmark.TreeMemory(balloon.pid)
        reads = []
        real_sum = memory._sum
        monkeypatch.setattr(
            memory, "_sum", lambda p, *, pss: reads.append(pss) or real_sum(p, pss=pss)
        )
        assert balloon.stdout.readline() == "full\n"
        memory._sample()
        assert memory.peak_mb >= 120
        assert reads == [False, True]  # the first sample is the highest yet: PSS read
        # The interpreter's own mapped files, not the anonymous ballast.
        assert 0 < memory.peak_file_mb < memory.peak_mb - 100
        balloon.stdin.write("\n")
        balloon.stdin.flush()
        assert balloon.stdout.readline() == "empty\n"
        memory._sample()
        assert reads == [False, True, False]  # far below the peak: RSS only
        assert memory.peak_mb >= 120  # the peak is kept
    finally:
        balloon.stdin.close()
        balloon.wait(timeout=30)


# Holds an unlinked 3 MiB file open (twice: one file, two descriptors) until stdin closes.
_SPILLER = """
import os, sys, tempfile
spill = tempfile.TemporaryFile()
spill.write(b"x" * (3 * 2**20))
spill.flush()
again = os.dup(spill.fileno())
print("written", flush=True)
sys.stdin.read()
"""


def test_tree_memory_keeps_the_most_disk_unlinked_files_took():
    child = subprocess.Popen(
        [sys.executable, "-c", _SPILLER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        memory = benchmark.TreeMemory(child.pid)
        assert memory.peak_temp_mb == 0.0
        assert child.stdout.readline() == "written\n"
        memory._sample()
        assert memory.peak_temp_mb == 3.0  # the file once, not once per descriptor
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    memory._sample()  # the process is gone: the peak is kept
    assert memory.peak_temp_mb == 3.0


def test_tree_memory_counts_a_process_that_ends_between_samples_as_gone():
    # A zombie (ended, not yet waited for) still has its /proc entry, and reading its
    # smaps_rollup fails with ESRCH: the sampler must skip it, not stop.
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, ended.pid, os.WEXITED | os.WNOWAIT)  # ended, left unreaped
        with pytest.raises(psutil.NoSuchProcess):
            benchmark._rollup(ended.pid)
        memory = benchmark.TreeMemory(os.getpid(), tree=False)
        assert memory._sum([psutil.Process(os.getpid()), psutil.Process(ended.pid)], pss=True)
    finally:
        ended.wait(timeout=30)
    with pytest.raises(psutil.NoSuchProcess):  # reaped: no /proc entry at all
        benchmark._rollup(ended.pid)


def test_deployed_requirements_never_bring_the_dev_only_packages():
    # What requirements.txt installs, with everything it depends on (not extras).
    names = [
        line.split("==")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    closure: set[str] = set()
    while names:
        name = re.sub(r"[-_.]+", "-", names.pop()).lower()
        if name in closure:
            continue
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:  # its marker leaves it out on this Python
            continue
        closure.add(name)
        for requirement in requires:
            if "extra ==" not in requirement:
                names.append(re.split(r"[\s;<>=!\[(~]", requirement)[0])
    assert {"polars", "azure-storage-blob", "httpx"} <= closure
    assert not closure & set(DEV_ONLY)


def test_a_module_run_as_deployed_cannot_import_the_dev_only_packages(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import sys\n"
        "try:\n"
        "    import aiohttp\n"
        "except ImportError:\n"
        "    print('hidden', sys.argv[1:])\n"
        "import azure.storage.blob  # imports aiohttp when it can\n"
        "print('blob without aiohttp')\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "devtools.deployed", "probe", "--flag"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == ["hidden ['--flag']", "blob without aiohttp"]
