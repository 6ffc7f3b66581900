"""Configuration of the Klaviyo sandbox: accounts, rate limits, job timing and faults.

Everything is a frozen, keyword-only dataclass with named defaults, so a test states only
what it changes (``SandboxConfig(error_rate=1.0)``) and a running sandbox swaps the whole
object at once (``dataclasses.replace``) instead of mutating fields under a handler's feet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_LIST_ID",
    "DEFAULT_LIST_NAME",
    "FAMILIES",
    "KLAVIYO_RATE_LIMITS",
    "MAX_BODY_BYTES",
    "MAX_LIST_RELATIONSHIP_IDS",
    "MAX_PROFILES_PER_JOB",
    "MAX_PROFILE_BYTES",
    "MAX_SUBSCRIBE_PROFILES",
    "RUNTIME_FIELDS",
    "AccountSpec",
    "ListSpec",
    "RateLimit",
    "SandboxConfig",
]

DEFAULT_API_KEY = "pk_test_sandbox"
DEFAULT_LIST_ID = "Y6nRLr"
DEFAULT_LIST_NAME = "Sandbox list"

# Klaviyo's documented limits for the bulk import endpoint (revision 2026-07-15).
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_PROFILES_PER_JOB = 10_000
MAX_PROFILE_BYTES = 100 * 1024
MAX_LIST_RELATIONSHIP_IDS = 1_000
MAX_SUBSCRIBE_PROFILES = 1_000


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """A fixed-window limit: ``burst`` requests per second and ``steady`` per minute."""

    burst: int
    steady: int

    def __post_init__(self) -> None:
        if self.burst < 1 or self.steady < 1:
            raise ValueError(f"rate limits must be positive, got {self}")

    def scaled(self, factor: float) -> RateLimit:
        # Never below one request per window: a zero limit would make a family unusable.
        return RateLimit(
            burst=max(1, math.floor(self.burst * factor)),
            steady=max(1, math.floor(self.steady * factor)),
        )


# Endpoint families: every /api route belongs to exactly one, and limits and faults are
# counted per (account, family), as Klaviyo does.
FAMILIES: tuple[str, ...] = (
    "bulk_import_create",  # POST /api/profile-bulk-import-jobs
    "bulk_import_get",  # GET a job
    "bulk_import_profiles",  # GET a job's profiles, and its profile ids
    "import_errors",  # GET a job's import errors
    "list_relationships",  # POST/DELETE /api/lists/{id}/relationships/profiles
    "lists_read",  # GET a list, its profiles, its profile ids
    "subscribe",  # POST /api/profile-subscription-bulk-create-jobs
)

KLAVIYO_RATE_LIMITS: Mapping[str, RateLimit] = {
    "bulk_import_create": RateLimit(burst=10, steady=150),
    "bulk_import_get": RateLimit(burst=10, steady=150),
    "bulk_import_profiles": RateLimit(burst=10, steady=150),
    "import_errors": RateLimit(burst=10, steady=150),
    "list_relationships": RateLimit(burst=10, steady=150),
    "lists_read": RateLimit(burst=75, steady=750),
    "subscribe": RateLimit(burst=75, steady=750),
}


@dataclass(frozen=True, kw_only=True)
class ListSpec:
    """A Klaviyo list that exists in an account from the start."""

    id: str
    name: str = DEFAULT_LIST_NAME


@dataclass(frozen=True, kw_only=True)
class AccountSpec:
    """One Klaviyo account: the private keys that reach it and its lists."""

    name: str = "sandbox"
    api_keys: tuple[str, ...] = (DEFAULT_API_KEY,)
    lists: tuple[ListSpec, ...] = (ListSpec(id=DEFAULT_LIST_ID),)


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """How a sandbox behaves. Fields in ``RUNTIME_FIELDS`` may change while it runs."""

    accounts: tuple[AccountSpec, ...] = (AccountSpec(),)
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port

    # Rate limits: Klaviyo's table, optionally scaled or overridden per family.
    rate_limits: bool = True
    rate_limit_scale: float = 1.0
    rate_limit_overrides: Mapping[str, RateLimit] = field(default_factory=dict)

    # Job timing: the delay before a job starts, then its speed while processing.
    job_delay: float = 0.05
    job_seconds_per_1000_profiles: float = 0.01
    cancel_jobs: bool = False
    job_expiry_days: float = 7.0  # a job (and its profiles) reads as 404 afterwards

    # Memory: the benchmark keeps only identifiers and memberships, not attributes.
    store_attributes: bool = True
    # Speed: parse and check bulk import bodies in this many worker processes (0: in the
    # event loop's thread). That is most of a job's CPU; the CLI uses two, so that the
    # sandbox can use both cores of a benchmark machine while the client waits.
    parse_workers: int = 0

    # Contract tests: keep the last ``max_recorded_requests`` /api requests, and their
    # bodies within ``max_recorded_bytes`` (the oldest bodies go first).
    record_requests: bool = False
    max_recorded_requests: int = 500
    max_recorded_bytes: int = 64 * 1024 * 1024

    # Faults, drawn from a generator seeded with ``seed`` so a run can be repeated.
    seed: int = 0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 1.0
    slow_after_handling: bool = False  # a slow request takes effect first, answers late
    throttle_storm: int = 0
    throttle_storm_retry_after: int = 1
    fault_families: frozenset[str] | None = None  # None: every family

    def __post_init__(self) -> None:
        for name in ("error_rate", "drop_rate", "slow_rate"):
            _check_rate(name, getattr(self, name))
        if self.rate_limit_scale <= 0:
            raise ValueError("rate_limit_scale must be positive")
        if min(self.job_delay, self.job_seconds_per_1000_profiles, self.slow_seconds) < 0:
            raise ValueError("timings must not be negative")
        if self.job_expiry_days <= 0:
            raise ValueError("job_expiry_days must be positive")
        if self.throttle_storm < 0 or self.throttle_storm_retry_after < 1:
            raise ValueError("throttle_storm must be >= 0 and its Retry-After >= 1")
        if self.parse_workers < 0:
            raise ValueError("parse_workers must not be negative")
        if self.max_recorded_requests < 0 or self.max_recorded_bytes < 0:
            raise ValueError("max_recorded_requests and max_recorded_bytes must not be negative")
        unknown = set(self.rate_limit_overrides) | set(self.fault_families or ())
        unknown -= set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown endpoint families {sorted(unknown)}; known: {FAMILIES}")
        self._check_accounts()

    def _check_accounts(self) -> None:
        keys: list[str] = [k for a in self.accounts for k in a.api_keys]
        list_ids: list[str] = [lst.id for a in self.accounts for lst in a.lists]
        if not keys:
            raise ValueError("at least one API key is needed")
        if len(set(keys)) != len(keys):
            raise ValueError("an API key may belong to one account only")
        # Inspection helpers look lists up by id alone, so ids are unique sandbox-wide.
        if len(set(list_ids)) != len(list_ids):
            raise ValueError("list ids must be unique across accounts")

    def rate_limit(self, family: str) -> RateLimit:
        """The limit in force for ``family`` (after overrides and scaling)."""
        base = self.rate_limit_overrides.get(family) or KLAVIYO_RATE_LIMITS[family]
        return base if self.rate_limit_scale == 1.0 else base.scaled(self.rate_limit_scale)

    def with_changes(self, changes: Mapping[str, Any]) -> SandboxConfig:
        """A copy with run-time ``changes`` applied; rejects fields fixed at start."""
        fixed = set(changes) - RUNTIME_FIELDS
        if fixed:
            raise ValueError(f"cannot change {sorted(fixed)} while running")
        return replace(self, **_coerce(changes))


def _coerce(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Turn JSON-friendly values (lists, dicts) into the types the fields hold."""
    out = dict(changes)
    if out.get("fault_families") is not None:
        out["fault_families"] = frozenset(out["fault_families"])
    overrides = out.get("rate_limit_overrides")
    if overrides is not None:
        out["rate_limit_overrides"] = {
            fam: lim if isinstance(lim, RateLimit) else RateLimit(**lim)
            for fam, lim in overrides.items()
        }
    return out


RUNTIME_FIELDS: frozenset[str] = frozenset(
    f.name
    for f in fields(SandboxConfig)
    if f.name not in {"accounts", "host", "port", "store_attributes", "parse_workers"}
)
