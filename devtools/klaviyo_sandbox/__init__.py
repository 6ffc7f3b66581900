"""A local stand-in for Klaviyo's API, for the tests, the demo and the benchmark.

It implements what the export uses — Bulk Import Profiles jobs, their import errors and
profiles, list reads and membership (``joined_group_at``, Klaviyo's filters, sort, sparse
fieldsets, cursor pages, removal), bulk subscribe — with Klaviyo's limits (5 MB, 10,000
profiles, 100 KB per profile, rate limits per account and endpoint family) and
injectable faults.

    from devtools.klaviyo_sandbox import KlaviyoSandbox, SandboxConfig

    with KlaviyoSandbox(SandboxConfig(error_rate=0.1)) as sandbox:
        ...  # talk to sandbox.url with header "Authorization: Klaviyo-API-Key pk_test_sandbox"
        sandbox.state.list_emails("Y6nRLr")
        sandbox.state.add_list_members("Y6nRLr", ["form@example.com"], joined_at=last_week)
        sandbox.state.list_members("Y6nRLr")  # ids, e-mails, joined_group_at
        sandbox.state.stats()["operations"]  # e.g. "DELETE /api/lists/{id}/relationships/profiles"

The same hooks exist over HTTP under ``/__sandbox/`` (see ``control``) for a sandbox run
as a process.

Command line: ``python -m devtools.klaviyo_sandbox --help``.
"""

from .config import (
    DEFAULT_API_KEY,
    DEFAULT_LIST_ID,
    DEFAULT_LIST_NAME,
    FAMILIES,
    KLAVIYO_RATE_LIMITS,
    AccountSpec,
    ListSpec,
    RateLimit,
    SandboxConfig,
)
from .server import KlaviyoSandbox, SandboxInspector, serve

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_LIST_ID",
    "DEFAULT_LIST_NAME",
    "FAMILIES",
    "KLAVIYO_RATE_LIMITS",
    "AccountSpec",
    "KlaviyoSandbox",
    "ListSpec",
    "RateLimit",
    "SandboxConfig",
    "SandboxInspector",
    "serve",
]
