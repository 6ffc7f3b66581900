"""Showing a URL without what may be a secret in it.

A URL can carry credentials in its userinfo (``https://user:password@host``) and in its
query (a SAS token, ``?code=`` function keys). Wherever the app shows a URL (settings
errors, storage errors) it shows scheme, host, port and path only.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

__all__ = ["has_credentials", "redact_url"]


def redact_url(url: str) -> str:
    """``url`` without userinfo, query and fragment; a placeholder when it is not a URL
    (a value that is not a URL may be anything, a pasted key included)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "(a malformed URL, not shown)"
    if not parts.scheme or not parts.hostname:
        return "(not a URL, not shown)"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def has_credentials(url: str) -> bool:
    """True if ``url`` holds a user name, password, query or fragment."""
    try:
        return _hidden(urlsplit(url.strip()))
    except ValueError:
        return True


def _hidden(parts: SplitResult) -> bool:
    return bool(parts.username or parts.password or parts.query or parts.fragment)
