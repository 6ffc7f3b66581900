"""Rows of a segment -> Klaviyo profile attributes: the row-by-row names, kept in one place.

The mapping itself lives in ``shared/mapping/``: e-mail (``emails.py``), phone numbers
(``phones.py``, ``phone_columns.py``), typed values (``values.py``), one row at a time
(``rows.py``) and a block at a time in the engine (``columns.py``).
"""

from __future__ import annotations

from shared.mapping.emails import mask_email
from shared.mapping.phones import to_e164
from shared.mapping.rejects import RejectCode, RowRejected
from shared.mapping.rows import MappedProfile, ProfileMapper

__all__ = [
    "MappedProfile",
    "ProfileMapper",
    "RejectCode",
    "RowRejected",
    "mask_email",
    "to_e164",
]
