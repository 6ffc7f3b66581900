"""Fixtures for the local Klaviyo sandbox (registered in tests/conftest.py).

- ``klaviyo_sandbox``: a fresh sandbox per test with the default account (key
  ``pk_test_sandbox``, list ``Y6nRLr``), Klaviyo's real rate limits, fast jobs, and
  request recording on for contract checks.
- ``sandbox_factory``: ``sandbox_factory(error_rate=1.0, ...)`` starts a sandbox with
  those SandboxConfig overrides on top of the same defaults; all are stopped at teardown.
- ``klaviyo_contract``: the OpenAPI contract checker, loaded once per session.

A test inspects and prepares a sandbox through ``sandbox.state`` (``SandboxInspector``):
``list_emails``, ``list_members`` (with ``joined_group_at``), ``add_list_members`` (e.g.
backdated "sign-up form" members), ``remove_list_members``, ``job``, ``expire_job``,
``profile``, ``stats`` (requests by family and by operation), ``recorded_requests``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from devtools.klaviyo_sandbox import KlaviyoSandbox, SandboxConfig
from tests.klaviyo_contract import KlaviyoContract

__all__ = ["TEST_SANDBOX_CONFIG", "klaviyo_contract", "klaviyo_sandbox", "sandbox_factory"]

TEST_SANDBOX_CONFIG = SandboxConfig(
    rate_limits=True,
    job_delay=0.02,
    job_seconds_per_1000_profiles=0.01,
    record_requests=True,
)


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., KlaviyoSandbox]]:
    started: list[KlaviyoSandbox] = []

    def start(**overrides: Any) -> KlaviyoSandbox:
        sandbox = KlaviyoSandbox(replace(TEST_SANDBOX_CONFIG, **overrides)).start()
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def klaviyo_sandbox(sandbox_factory: Callable[..., KlaviyoSandbox]) -> KlaviyoSandbox:
    return sandbox_factory()


@pytest.fixture(scope="session")
def klaviyo_contract() -> KlaviyoContract:
    return KlaviyoContract()
