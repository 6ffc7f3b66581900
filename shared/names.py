"""What an export name and a run id look like, checked in one place.

Both end up in blob names (``definitions/<name>.json``, ``runs/<name>/<run id>/...``) and
URLs, so the API, the queue worker, the CLI and the stores check them here before any
storage call. Patterns are matched with ``fullmatch``: ``re.match`` with ``$`` lets a
trailing newline through ("vip\\n"), and ``..`` or ``/`` would walk out of the folder.
"""

from __future__ import annotations

import re
from typing import Final

from shared.errors import InvalidNameError

__all__ = [
    "EXPORT_NAME_PATTERN",
    "EXPORT_NAME_RULE",
    "RUN_ID_PATTERN",
    "RUN_ID_RULE",
    "check_export_name",
    "check_run_id",
    "is_export_name",
    "is_run_id",
]

#: The same rule as ``name`` in definition.schema.json (a test keeps them equal).
EXPORT_NAME_PATTERN: Final = r"[a-z0-9][a-z0-9-]{0,62}"
EXPORT_NAME_RULE: Final = (
    "must be 1 to 63 lowercase letters, digits or hyphens, starting with a letter or digit"
)
#: What ``shared.export.new_run_id`` makes: 20261122T230102Z-3f9a1c.
RUN_ID_PATTERN: Final = r"\d{8}T\d{6}Z-[0-9a-f]{6}"
RUN_ID_RULE: Final = "must look like 20260101T000000Z-a1b2c3 (UTC time, '-', 6 hex digits)"

_EXPORT_NAME = re.compile(EXPORT_NAME_PATTERN)
_RUN_ID = re.compile(RUN_ID_PATTERN)


def is_export_name(value: object) -> bool:
    """True if ``value`` is a valid export name (the whole string, nothing after it)."""
    return isinstance(value, str) and _EXPORT_NAME.fullmatch(value) is not None


def is_run_id(value: object) -> bool:
    """True if ``value`` is a run id as the app makes them."""
    return isinstance(value, str) and _RUN_ID.fullmatch(value) is not None


def check_export_name(value: object, *, field: str = "name") -> str:
    """``value`` if it is a valid export name, else InvalidNameError naming ``field``."""
    if not is_export_name(value):
        raise InvalidNameError(field, f"export name {EXPORT_NAME_RULE}")
    assert isinstance(value, str)
    return value


def check_run_id(value: object, *, field: str = "run_id") -> str:
    """``value`` if it is a valid run id, else InvalidNameError naming ``field``."""
    if not is_run_id(value):
        raise InvalidNameError(field, f"run id {RUN_ID_RULE}")
    assert isinstance(value, str)
    return value
