"""What Klaviyo's API answers with, as small immutable values: import jobs, list members,
the profiles of a job; and Klaviyo's timestamps.

Timestamps are parsed into timezone-aware datetimes (ISO 8601 with or without a fraction
or an offset, as Klaviyo writes them); the ``*_ms`` properties give them as epoch
milliseconds on Klaviyo's clock, the unit the sync state keeps. Re-exported by
``shared.klaviyo``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["ImportJob", "JobProfile", "ListMember", "epoch_ms", "parse_timestamp"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_timestamp(value: object) -> datetime | None:
    """A Klaviyo timestamp (ISO 8601, with or without fraction or offset) as an aware
    datetime; None when absent or unreadable (callers treat that as "unknown")."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def epoch_ms(moment: datetime | None) -> int:
    """Epoch milliseconds of an aware datetime; 0 for None (the sync state's "unknown")."""
    if moment is None:
        return 0
    return (moment - _EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class ImportJob:
    """A Bulk Import Profiles job as Klaviyo reports it (timestamps are aware datetimes)."""

    id: str
    status: str
    total_count: int
    completed_count: int
    failed_count: int
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.status in ("complete", "cancelled")

    @property
    def created_at_ms(self) -> int:
        """``created_at`` in epoch ms (Klaviyo's clock), 0 when unknown."""
        return epoch_ms(self.created_at)

    @property
    def completed_at_ms(self) -> int:
        """``completed_at`` in epoch ms (Klaviyo's clock), 0 while unknown."""
        return epoch_ms(self.completed_at)

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> ImportJob:
        data = document["data"]
        attrs = data.get("attributes") or {}
        return cls(
            id=data["id"],
            status=attrs.get("status", "queued"),
            total_count=int(attrs.get("total_count") or 0),
            completed_count=int(attrs.get("completed_count") or 0),
            failed_count=int(attrs.get("failed_count") or 0),
            created_at=parse_timestamp(attrs.get("created_at")),
            started_at=parse_timestamp(attrs.get("started_at")),
            completed_at=parse_timestamp(attrs.get("completed_at")),
            expires_at=parse_timestamp(attrs.get("expires_at")),
        )


@dataclass(frozen=True, slots=True)
class ListMember:
    """A profile on a list: its id, e-mail, and when it most recently joined the list."""

    profile_id: str
    email: str | None
    joined_group_at: datetime | None

    @property
    def joined_group_at_ms(self) -> int:
        """``joined_group_at`` in epoch ms (Klaviyo's clock), 0 when Klaviyo sent none."""
        return epoch_ms(self.joined_group_at)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> ListMember:
        attrs = resource.get("attributes") or {}
        email = attrs.get("email")
        return cls(
            profile_id=resource["id"],
            email=email.lower() if isinstance(email, str) else None,
            joined_group_at=parse_timestamp(attrs.get("joined_group_at")),
        )


@dataclass(frozen=True, slots=True)
class JobProfile:
    """A profile a bulk import job created or updated."""

    profile_id: str
    email: str | None
