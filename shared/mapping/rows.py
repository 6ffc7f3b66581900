"""One row -> the ``attributes`` of a Klaviyo profile: the exact, row-by-row path.

:class:`ProfileMapper` resolves the mapping's columns once, then turns each row into the
attributes object: e-mail normalised and checked, phone number in E.164 (dropped and
flagged when invalid), custom properties typed. A row that cannot become a profile raises
:class:`RowRejected`. The block mapper (``columns.py``) decides most rows in the engine
and sends the few it cannot decide here, so this is also the reference it is tested on.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from functools import partial
from typing import Any, Final, NamedTuple

from shared.definitions import PROFILE_FIELDS, MappingSpec
from shared.errors import InputError
from shared.mapping.emails import normalised_email
from shared.mapping.phones import REGIONS, to_e164
from shared.mapping.rejects import RejectCode, RowRejected
from shared.mapping.values import CONVERTERS, COORDINATE_RANGE, clean_text, shown, to_number

__all__ = ["MappedProfile", "ProfileMapper", "column_index", "mapped_positions"]


class MappedProfile(NamedTuple):
    email: str
    attributes: dict[str, Any]
    phone_dropped: bool


# NamedTuple's generated __new__ is Python code costing ~0.5 µs a call; building the tuple
# directly gives the same object for a sixth of that.
_new_profile: Final = partial(tuple.__new__, MappedProfile)


# --- the mapper -------------------------------------------------------------------------


class ProfileMapper:
    """Turns rows with the given ``columns`` into Klaviyo profile attributes.

    Phone numbers written without ``+country code`` take the row's region from
    ``region_column`` (ISO codes such as ``NL``; anything else is ignored), else
    ``default_region``. ``source`` names the data in errors. A mapped column missing
    from ``columns`` raises InputError naming the definition field.
    """

    __slots__ = (
        "_columns",
        "_coordinates",
        "_default_region",
        "_email",
        "_location",
        "_phone",
        "_plain_properties",
        "_region",
        "_strings",
        "_typed_properties",
    )

    def __init__(
        self,
        mapping: MappingSpec,
        columns: Sequence[str],
        *,
        default_region: str | None = None,
        region_column: str | None = None,
        source: str | None = None,
        show_columns: bool = False,
    ) -> None:
        index = mapped_positions(
            mapping, columns, region_column=region_column, source=source, show_columns=show_columns
        )
        self._default_region = default_region
        self._region = index.get("options.phone_region_column")
        self._email = index["mapping.email"]
        self._phone = index.get("mapping.phone_number")
        # The per-row work is flat loops over (name, position) pairs prepared here: at a
        # million rows, every function call and attribute lookup per value shows.
        self._strings = tuple(
            (field, index[f"mapping.{field}"])
            for field in PROFILE_FIELDS
            if field != "phone_number" and f"mapping.{field}" in index
        )
        self._location = tuple(
            (f, index[f"mapping.location.{f}"])
            for f, _ in mapping.location
            if f not in COORDINATE_RANGE
        )
        self._coordinates = tuple(
            (f, index[f"mapping.location.{f}"])
            for f, _ in mapping.location
            if f in COORDINATE_RANGE
        )
        self._plain_properties = tuple(
            (p.name, index[f"mapping.properties.{p.name}.column"])
            for p in mapping.properties
            if p.type == "string"
        )
        self._typed_properties = tuple(
            (p.name, index[f"mapping.properties.{p.name}.column"], CONVERTERS[p.type])
            for p in mapping.properties
            if p.type != "string"
        )
        self._columns = {p.name: p.column for p in mapping.properties}

    def to_profile(self, values: Sequence[str]) -> MappedProfile:
        """The profile for one row (values in ``columns`` order).

        Raises RowRejected when the row cannot be a profile; an invalid phone number is
        left out and flagged in ``phone_dropped`` instead.
        """
        # One method, no helpers per section: each call costs more than its loop here.
        email = normalised_email(values[self._email])
        attributes: dict[str, Any] = {"email": email}
        phone_dropped = False
        if self._phone is not None and (raw := values[self._phone].strip()):
            region = self._default_region
            if self._region is not None:
                code = values[self._region].strip().upper()
                if code in REGIONS:
                    region = code
            phone = to_e164(raw, region)
            if phone is None:
                phone_dropped = True
            else:
                attributes["phone_number"] = phone
        for field, i in self._strings:
            if value := clean_text(values[i]):
                attributes[field] = value
        if self._location or self._coordinates:
            location: dict[str, Any] = {}
            for field, i in self._location:
                if value := clean_text(values[i]):
                    location[field] = value
            for field, i in self._coordinates:
                if value := values[i].strip():
                    location[field] = _coordinate(field, value)
            if location:
                attributes["location"] = location
        if self._plain_properties or self._typed_properties:
            properties: dict[str, Any] = {}
            for name, i in self._plain_properties:
                if value := clean_text(values[i]):
                    properties[name] = value
            for name, i, convert in self._typed_properties:
                if value := values[i].strip():
                    try:
                        properties[name] = convert(value)
                    except ValueError as exc:
                        raise self._invalid_property(name, exc) from None
            if properties:
                attributes["properties"] = properties
        return _new_profile((email, attributes, phone_dropped))  # type: ignore[no-any-return]

    def _invalid_property(self, name: str, exc: ValueError) -> RowRejected:
        return RowRejected(
            RejectCode.INVALID_PROPERTY,
            f"property {name!r} (column {self._columns[name]!r}): {exc}",
            field=f"mapping.properties.{name}",
        )


def _coordinate(field: str, value: str) -> float:
    limit = COORDINATE_RANGE[field]
    try:
        number = float(to_number(value))
    except ValueError as exc:
        reason = str(exc)
    else:
        if -limit <= number <= limit:
            return number
        reason = f"{shown(value)} is outside -{limit:g}..{limit:g}"
    raise RowRejected(
        RejectCode.INVALID_LOCATION,
        f"location {field}: {reason}",
        field=f"mapping.location.{field}",
    )


def mapped_positions(
    mapping: MappingSpec,
    columns: Sequence[str],
    *,
    region_column: str | None,
    source: str | None,
    show_columns: bool = False,
) -> dict[str, int]:
    """Definition field path -> position in ``columns`` of every column the mapping reads."""
    wanted = mapping.mapped_columns()
    if region_column is not None:
        wanted["options.phone_region_column"] = region_column
    return column_index(wanted, columns, source, show_columns=show_columns)


def column_index(
    wanted: dict[str, str],
    columns: Sequence[str],
    source: str | None,
    *,
    show_columns: bool = False,
) -> dict[str, int]:
    """Definition field path -> column position; InputError for a column not there.

    ``show_columns``: the names may be quoted in the error (they are the model's); names
    read from a header row are not, for that "header" may be a row of data.
    """
    positions: dict[str, int] = {}
    for i, name in enumerate(columns):
        positions.setdefault(name, i)  # a repeated header: the first one wins
    index = {}
    for field, column in wanted.items():
        if column not in positions:
            message = _missing_column_message(field, column, columns, show_columns)
            raise InputError(message, file=source, field=field)
        index[field] = positions[column]
    return index


def _missing_column_message(
    field: str, column: str, columns: Sequence[str], show_columns: bool
) -> str:
    by_lower: dict[str, int] = {}
    for i, name in enumerate(columns):
        by_lower.setdefault(name.lower(), i)
    close = difflib.get_close_matches(column.lower(), list(by_lower), n=1, cutoff=0.75)
    if not show_columns:
        message = (
            f"mapped column {column!r} ({field}) is not among the segment's {len(columns)} "
            "columns, read from its header row (not shown: the first row may be data)"
        )
        if close:
            message += f"; the closest name is column {by_lower[close[0]] + 1}"
        return message
    shown = ", ".join(repr(c) for c in columns[:8])
    if len(columns) > 8:
        shown += f", ... ({len(columns)} columns)"
    message = f"mapped column {column!r} ({field}) is not among the segment's columns: {shown}"
    if close:
        message += f"; did you mean {columns[by_lower[close[0]]]!r}?"
    return message
