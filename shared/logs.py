"""Quiet logs: the HTTP clients and the Azure SDK log at WARNING and above only.

The Python worker sets the root logger to INFO, so without this every httpx request to
Klaviyo and every Azure SDK HTTP request (blob reads, queue calls, Key Vault, token
requests) becomes a trace in Application Insights: thousands per run, each billed, and the
run's own lines lost among them. Called once where the app starts (function_app.py).
"""

from __future__ import annotations

import logging

__all__ = ["QUIET_LOGGERS", "quiet_sdk_loggers"]

QUIET_LOGGERS: tuple[str, ...] = (
    "httpx",  # one INFO line per request ("HTTP Request: POST ... 202 Accepted")
    "httpcore",
    "azure.core.pipeline.policies.http_logging_policy",  # request and response headers
    "azure.core",
    "azure.identity",  # "ManagedIdentityCredential.get_token succeeded" per token
    "azure.storage",
    "azure.keyvault",
    "msal",  # azure-identity's token cache
    "urllib3",
)


def quiet_sdk_loggers(level: int = logging.WARNING) -> None:
    """Raise the chatty third-party loggers to ``level`` (the app's own stay as they are)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)
