"""Why a row cannot become a profile: the reason codes and the exception that carries one."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["RejectCode", "RowRejected"]


class RejectCode(StrEnum):
    """Why a row was rejected; stable short strings for reports."""

    MISSING_EMAIL = "missing_email"
    INVALID_EMAIL = "invalid_email"
    INVALID_PROPERTY = "invalid_property"
    INVALID_LOCATION = "invalid_location"
    PROFILE_TOO_LARGE = "profile_too_large"


class RowRejected(Exception):
    """A row that cannot become a Klaviyo profile.

    ``detail`` is plain words safe to log: it never holds a full e-mail address.
    """

    def __init__(self, code: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field
