"""Export definitions: JSON documents naming a segment, a Klaviyo list and a field mapping.

A definition is validated against ``definition.schema.json`` (JSON Schema 2020-12) and
turned into small frozen objects. An invalid one raises :class:`DefinitionError` naming the
first offending field as a dotted path (``mapping.email``, ``destination.list_id``).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import phonenumbers
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from shared.errors import DefinitionError

__all__ = [
    "LOCATION_FIELDS",
    "MAX_DEFINITION_BYTES",
    "PROFILE_FIELDS",
    "PROPERTY_TYPES",
    "SCHEMA_PATH",
    "ConnectionSpec",
    "DestinationSpec",
    "ExportDefinition",
    "ExportOptions",
    "MappingSpec",
    "PropertySpec",
    "SourceSpec",
    "SyncSpec",
    "decode_document",
    "parse_definition",
]

SCHEMA_PATH: Final = Path(__file__).with_name("definition.schema.json")
#: The largest definition the API accepts and the store reads (real ones are a few KB).
MAX_DEFINITION_BYTES: Final = 256 * 1024

#: Top-level Klaviyo profile attributes a column can map to, besides ``email``.
PROFILE_FIELDS: Final = (
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "title",
    "locale",
)
#: Fields of Klaviyo's profile ``location`` object, in the order they are kept.
LOCATION_FIELDS: Final = (
    "address1",
    "address2",
    "city",
    "region",
    "zip",
    "country",
    "timezone",
    "latitude",
    "longitude",
)
PROPERTY_TYPES: Final = ("string", "number", "boolean", "date")

_DEFAULT_ACCESS: Final = "administrators"
# Schema keyword of fields whose value an error must never quote (connection.api_key_secret:
# people paste the key itself there, not the name of its Key Vault secret).
_SENSITIVE: Final = "x-sensitive"
# A Klaviyo private key ("pk_" + hex), wherever it is pasted: never quoted either.
_LOOKS_LIKE_KEY: Final = re.compile(r"pk_[A-Za-z0-9]{16,}")
_DEFAULT_SECRET: Final = "klaviyo-api-key"  # noqa: S105 - a secret name, not a secret


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Where Customer Insights writes the segment: ``container/folder/segment/YYYY/...``."""

    container: str
    folder: str
    segment: str


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """The seed's connection: who may use it, where its key is, and the privacy consent."""

    name: str
    display_name: str
    access: str = _DEFAULT_ACCESS
    api_key_secret: str = _DEFAULT_SECRET
    privacy_consent: bool = False


@dataclass(frozen=True, slots=True)
class DestinationSpec:
    list_id: str


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """A custom profile property filled from one column."""

    name: str
    column: str
    type: str = "string"


@dataclass(frozen=True, slots=True)
class MappingSpec:
    """Klaviyo profile field -> segment column.

    ``location`` holds ``(field, column)`` pairs in :data:`LOCATION_FIELDS` order (a tuple
    so the whole definition stays immutable and hashable); ``properties`` keeps the
    definition's order.
    """

    email: str
    phone_number: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    organization: str | None = None
    title: str | None = None
    locale: str | None = None
    location: tuple[tuple[str, str], ...] = ()
    properties: tuple[PropertySpec, ...] = ()

    def mapped_columns(self) -> dict[str, str]:
        """Definition field path (``mapping.location.city``) -> column, email first."""
        columns = {"mapping.email": self.email}
        for field in PROFILE_FIELDS:
            column = getattr(self, field)
            if column is not None:
                columns[f"mapping.{field}"] = column
        for field, column in self.location:
            columns[f"mapping.location.{field}"] = column
        for prop in self.properties:
            columns[f"mapping.properties.{prop.name}.column"] = prop.column
        return columns

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"email": self.email}
        for field in PROFILE_FIELDS:
            column = getattr(self, field)
            if column is not None:
                data[field] = column
        if self.location:
            data["location"] = dict(self.location)
        if self.properties:
            data["properties"] = {
                p.name: {"column": p.column, "type": p.type} for p in self.properties
            }
        return data


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """How values are read. Phone numbers without ``+country code`` take the region in
    ``phone_region_column`` (an ISO code per row) or else ``phone_default_region``."""

    phone_default_region: str | None = None
    phone_region_column: str | None = None


@dataclass(frozen=True, slots=True)
class SyncSpec:
    """How the list follows the segment: ``mirror`` also removes the leavers this export
    added, ``add`` never removes; the mass-removal guard's limit, in percent."""

    mode: str = "mirror"
    max_removal_percent: float = 10


@dataclass(frozen=True, slots=True)
class ExportDefinition:
    """One segment exported into one Klaviyo list."""

    name: str
    enabled: bool
    source: SourceSpec
    connection: ConnectionSpec
    destination: DestinationSpec
    mapping: MappingSpec
    options: ExportOptions = ExportOptions()
    sync: SyncSpec = SyncSpec()

    def mapped_columns(self) -> dict[str, str]:
        """Definition field path -> segment column, for error messages."""
        columns = self.mapping.mapped_columns()
        if self.options.phone_region_column is not None:
            columns["options.phone_region_column"] = self.options.phone_region_column
        return columns

    def to_dict(self) -> dict[str, Any]:
        """The definition as JSON-ready data, defaults filled in; parses back to ``self``."""
        options = {
            key: value
            for key in ("phone_default_region", "phone_region_column")
            if (value := getattr(self.options, key)) is not None
        }
        c = self.connection
        return {
            "name": self.name,
            "enabled": self.enabled,
            "source": {
                "container": self.source.container,
                "folder": self.source.folder,
                "segment": self.source.segment,
            },
            "connection": {
                "name": c.name,
                "display_name": c.display_name,
                "access": c.access,
                "api_key_secret": c.api_key_secret,
                "privacy_consent": c.privacy_consent,
            },
            "destination": {"list_id": self.destination.list_id},
            "mapping": self.mapping.to_dict(),
            "options": options,
            "sync": {
                "mode": self.sync.mode,
                "max_removal_percent": self.sync.max_removal_percent,
            },
        }


def parse_definition(
    data: bytes | str | Mapping[str, Any], *, source: str | None = None
) -> ExportDefinition:
    """Validate an export definition (JSON text or already-decoded data) and build it.

    ``source`` (a file or blob name) only prefixes error messages.
    Raises :class:`DefinitionError` naming the first offending field.
    """
    document = decode_document(data, source=source) if isinstance(data, bytes | str) else dict(data)
    errors = sorted(_validator().iter_errors(document), key=lambda e: _document_order(e, document))
    if errors:
        field, message = _describe(errors[0])
        raise DefinitionError(field, message, source=source)
    region = document.get("options", {}).get("phone_default_region")
    if region is not None and region not in phonenumbers.SUPPORTED_REGIONS:
        raise DefinitionError(
            "options.phone_default_region",
            f"{_shown(region)} is not a region code phonenumbers knows (e.g. US, GB, DE, NL)",
            source=source,
        )
    return _build(document)


# --- decoding ---------------------------------------------------------------------------


class _DuplicateKeyError(ValueError):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys silently; in a hand-edited definition
    # that hides a typo ("email" twice), so refuse it.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def decode_document(data: bytes | str, *, source: str | None = None) -> Any:
    """JSON text of a definition as data, by the one rule the CLI, the API and the store
    share: UTF-8, one optional BOM at the start (editors on Windows write one), no key twice
    in an object. DefinitionError (field "") names the line and column otherwise."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DefinitionError("", f"not UTF-8 text (byte {exc.start})", source=source) from exc
    try:
        return json.loads(data.removeprefix("\ufeff"), object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise DefinitionError("", message, source=source) from exc
    except _DuplicateKeyError as exc:
        message = f"key {exc.args[0]!r} appears twice in the same object"
        raise DefinitionError("", message, source=source) from exc


# --- validation -------------------------------------------------------------------------


@cache
def _ecma_pattern(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262 regexes, whose final `$` matches only at the very
    # end. Python's `$` also matches before a trailing newline, which would let
    # "Y6nRLr\n" through as a list id; `\Z` is the ECMA meaning.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _ecma_pattern(pattern).search(instance):
        # The value is left out: _describe quotes it only if the field may be shown.
        yield ValidationError(f"does not match {pattern!r}")


@cache
def _validator() -> Draft202012Validator:
    # Built once per process (lazily, so importing this module reads no file).
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = validators.extend(Draft202012Validator, {"pattern": _pattern})
    return cls(schema)  # type: ignore[no-any-return]


def _field_path(error: ValidationError) -> list[str | int]:
    """Path of the field the error is about, including a missing or unknown key."""
    path = list(error.absolute_path)
    if error.validator == "required":
        path.append(_missing_keys(error)[0])
    elif error.validator == "additionalProperties" and error.validator_value is False:
        path.append(_unexpected_keys(error)[0])
    elif "propertyNames" in error.relative_schema_path:
        path.append(error.instance)
    return path


def _document_order(error: ValidationError, document: Any) -> tuple[int, ...]:
    # "First offending field" means first in the document as written: rank each step of
    # the path by its key's position in its object. Missing keys sort after present ones.
    ranks: list[int] = []
    node = document
    for step in _field_path(error):
        if isinstance(node, dict):
            keys = list(node)
            ranks.append(keys.index(step) if step in node else len(keys))
            node = node.get(step)  # type: ignore[call-overload]
        elif isinstance(node, list) and isinstance(step, int):
            ranks.append(step)
            node = node[step] if step < len(node) else None
        else:
            ranks.append(0)
            node = None
    return tuple(ranks)


def _missing_keys(error: ValidationError) -> list[str]:
    return [k for k in error.validator_value if k not in error.instance]


def _unexpected_keys(error: ValidationError) -> list[str]:
    allowed = error.schema.get("properties", {})
    return [k for k in error.instance if k not in allowed]


def _describe(error: ValidationError) -> tuple[str, str]:
    """(dotted field path, message in plain words) for one schema error.

    Messages quote the offending value through :func:`_shown` only (never jsonschema's own
    text, which quotes it raw), so a field marked ``"x-sensitive": true`` in the schema, or
    a value that looks like a Klaviyo private key, is never echoed back.
    """
    field = ".".join(str(step) for step in _field_path(error))
    kind = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    rule = schema.get("description", "")
    shown = _shown(error.instance, sensitive=bool(schema.get(_SENSITIVE)))
    if kind == "required":
        return field, "is required"
    if kind == "additionalProperties":
        key = _unexpected_keys(error)[0]
        allowed = list(schema.get("properties", {}))
        message = f"unknown field {_shown(key)}"
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(allowed)
        return field, f"{message}; {hint}"
    if kind == "type":
        wanted = error.validator_value
        types = wanted if isinstance(wanted, list) else [wanted]
        expected = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        return field, f"must be {expected}, not {shown}"
    if kind == "enum":
        choices = ", ".join(str(c) for c in error.validator_value)
        return field, f"must be one of: {choices} (not {shown})"
    if kind == "minLength" and error.instance == "":
        return field, "must not be empty"
    if rule:
        return field, f"{shown} is not allowed: {rule}"
    return field, f"{shown} breaks the schema's {kind!r} rule ({error.validator_value!r})"


_JSON_NAMES: Final = {dict: "an object", list: "a list", int: "a number", float: "a number"}
_TYPE_WORDS: Final = {
    "string": "text (a JSON string)",
    "boolean": "true or false",
    "object": "an object ({...})",
    "number": "a number",
    "array": "a list ([...])",
}


def _shown(value: Any, *, sensitive: bool = False) -> str:
    """A value as error messages quote it: short, and never a secret."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    if sensitive or _LOOKS_LIKE_KEY.search(text):
        size = (
            f"{len(value)} characters"
            if isinstance(value, str)
            else _JSON_NAMES.get(type(value), "a value")
        )
        return f"the value ({size}, not shown: it may be a secret)"
    return text if len(text) <= 80 else text[:77] + "..."


# --- building ---------------------------------------------------------------------------


def _build(doc: dict[str, Any]) -> ExportDefinition:
    src, conn, mapping = doc["source"], doc["connection"], doc["mapping"]
    location = mapping.get("location", {})
    return ExportDefinition(
        name=doc["name"],
        enabled=doc.get("enabled", True),
        source=SourceSpec(
            container=src["container"],
            # A trailing "/" is accepted for convenience; kept without it so paths join cleanly.
            folder=src["folder"].rstrip("/"),
            segment=src["segment"],
        ),
        connection=ConnectionSpec(
            name=conn["name"],
            display_name=conn.get("display_name", conn["name"]),
            access=conn.get("access", _DEFAULT_ACCESS),
            api_key_secret=conn.get("api_key_secret", _DEFAULT_SECRET),
            privacy_consent=conn["privacy_consent"],
        ),
        destination=DestinationSpec(list_id=doc["destination"]["list_id"]),
        mapping=MappingSpec(
            email=mapping["email"],
            **{field: mapping.get(field) for field in PROFILE_FIELDS},
            location=tuple((f, location[f]) for f in LOCATION_FIELDS if f in location),
            properties=tuple(_properties(mapping.get("properties", {}))),
        ),
        options=ExportOptions(
            phone_default_region=doc.get("options", {}).get("phone_default_region"),
            phone_region_column=doc.get("options", {}).get("phone_region_column"),
        ),
        sync=SyncSpec(
            mode=doc.get("sync", {}).get("mode", "mirror"),
            max_removal_percent=doc.get("sync", {}).get("max_removal_percent", 10),
        ),
    )


def _properties(specs: dict[str, dict[str, str]]) -> Iterator[PropertySpec]:
    for name, spec in specs.items():
        yield PropertySpec(name=name, column=spec["column"], type=spec.get("type", "string"))
