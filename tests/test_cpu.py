"""The CPU quota the engine's threads are sized by, read from fake cgroup trees."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.cpu import cgroup_cpu_limit, configure_engine, usable_cpus
from tests.exports import ROOT


def tree(tmp_path, cgroup: str, files: dict[str, str]):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for path, text in files.items():
        target = tmp_path / "sys/fs/cgroup" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return tmp_path


def test_cgroup_v2_quota_of_this_cgroup_or_a_parent_the_tightest_wins(tmp_path):
    root = tree(
        tmp_path,
        "0::/app/instance\n",
        {
            "app/instance/cpu.max": "max 100000\n",
            "app/cpu.max": "150000 100000\n",
            "cpu.max": "400000 100000\n",
        },
    )
    assert cgroup_cpu_limit(root) == 1.5
    assert usable_cpus(root) == min(2, len(os.sched_getaffinity(0)))


def test_cgroup_v2_without_a_quota(tmp_path):
    root = tree(tmp_path, "0::/\n", {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(root) is None
    assert usable_cpus(root) == len(os.sched_getaffinity(0))


def test_cgroup_v1_cfs_quota(tmp_path):
    root = tree(
        tmp_path,
        "4:memory:/x\n3:cpu,cpuacct:/pod/box\n",
        {
            "cpu,cpuacct/pod/box/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/pod/box/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/pod/cpu.cfs_quota_us": "50000\n",
            "cpu,cpuacct/pod/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cgroup_cpu_limit(root) == 0.5
    assert usable_cpus(root) == 1  # never below one


@pytest.mark.parametrize("content", ["", "garbage", "0::/\n"])
def test_unreadable_or_missing_cgroup_means_no_quota(tmp_path, content):
    root = tree(tmp_path, content, {})
    assert cgroup_cpu_limit(root) is None
    assert cgroup_cpu_limit(tmp_path / "nowhere") is None


def test_the_quota_sets_the_engine_threads_unless_the_environment_does(tmp_path, monkeypatch):
    root = tree(tmp_path, "0::/\n", {"cpu.max": "100000 100000\n"})
    monkeypatch.delenv("POLARS_MAX_THREADS", raising=False)
    assert configure_engine(root) == 1
    assert os.environ["POLARS_MAX_THREADS"] == "1"
    monkeypatch.setenv("POLARS_MAX_THREADS", "3")
    assert configure_engine(root) == 3


def test_polars_takes_the_thread_count_when_the_engine_is_imported():
    code = "from shared.engine import THREADS, pl; print(THREADS, pl.thread_pool_size())"
    env = {k: v for k, v in os.environ.items() if k != "POLARS_MAX_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    threads, pool = out.stdout.split()
    assert threads == pool == str(usable_cpus())


_IMPORT_ORDER = """
import sys
started = []
class Log:
    def find_spec(self, name, path=None, target=None):
        started.append(name)
sys.meta_path.insert(0, Log())
import {module}
print(started.index("shared.engine") < started.index("polars"))
"""


@pytest.mark.parametrize(
    "module", ["shared.syncstate", "shared.statestore", "shared.plan", "function_app"]
)
def test_importing_any_part_first_configures_the_engine_before_polars(module):
    # polars fixes its thread pool and allocator settings on import: whichever module
    # a process imports first, polars must come through shared.engine.
    assert _python(_IMPORT_ORDER.format(module=module)).split()[-1] == "True"


def _python(code: str, env: dict[str, str] | None = None) -> str:
    """What ``code`` prints, run by a fresh interpreter in the project's root."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout


def test_no_module_but_the_engine_imports_polars_itself():
    direct = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "shared").rglob("*.py")
        if path.name != "engine.py"
        and any(
            line.startswith(("import polars", "from polars"))
            for line in path.read_text(encoding="utf-8").splitlines()
        )
    ]
    assert direct == []


_BLAS_THREADS = """
import os
import {module}
import numpy as np
a = np.ones((64, 64))
a @ a  # a BLAS call
print(os.environ["OPENBLAS_NUM_THREADS"], len(os.listdir("/proc/self/task")))
"""


def _threads_after_blas(module: str, env: dict[str, str]) -> tuple[str, int]:
    setting, threads = _python(_BLAS_THREADS.format(module=module), env).split()
    return setting, int(threads)


@pytest.mark.parametrize("module", ["function_app", "shared.reading"])
def test_the_app_runs_numpy_without_openblas_threads(module):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    setting, threads = _threads_after_blas(module, env)
    assert setting == "1"
    # An explicit setting wins, and then OpenBLAS's threads are there beside the app's.
    explicit, more = _threads_after_blas(module, {**env, "OPENBLAS_NUM_THREADS": "2"})
    assert explicit == "2"
    assert more == threads + 1
