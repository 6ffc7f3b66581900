"""CDM metadata of a Customer Insights export: which entities, which columns, which CSV dialect.

Two forms exist and both are read:

- ``model.json`` (the form Customer Insights writes): ``entities[]`` with ``attributes``
  (name + dataType, in column order) and ``partitions`` (``location`` URL of a data file,
  optional ``fileFormatSettings`` of ``$type`` ``CsvFormatSettings``);
- ``*.manifest.cdm.json`` with one entity document per entity (``entityPath`` like
  ``Foo.cdm.json/Foo``), attributes under ``definitions[].hasAttributes``, partitions under
  ``dataPartitions`` and CSV settings in the ``is.partition.format.CSV`` trait.

Metadata files are small, so they are read whole, up to :data:`MAX_METADATA_BYTES` each: a
larger blob is refused with its name and size before any of it is downloaded (see
``storage.read_capped``); data files are never read whole (see segments.py).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.errors import InputError
from shared.storage import read_capped

__all__ = [
    "CSV_TRAIT",
    "MAX_METADATA_BYTES",
    "CdmEntity",
    "CdmModel",
    "CdmPartition",
    "CsvFormat",
    "load_cdm",
    "location_path",
    "parse_manifest",
    "parse_model_json",
]

CSV_TRAIT = "is.partition.format.CSV"
#: The most read of one model.json, manifest or entity document. Real ones are KBs to a
#: few MB. Parsing costs about 9x the file size (measured: a 15 MB model.json, 135 MB of
#: allocations and 4 s; a 67 MB one peaked at 488 MB), so 16 MiB keeps a run well inside
#: a Flex instance's memory.
MAX_METADATA_BYTES = 16 * 1024 * 1024
_QUOTE_STYLES = {"quotestyle.csv": "csv", "quotestyle.none": "none", "csv": "csv", "none": "none"}


@dataclass(frozen=True, slots=True)
class CsvFormat:
    """How a partition's CSV is written; the defaults are the ones CDM implies when unset."""

    header: bool = False
    delimiter: str = ","
    quote_style: str = "csv"  # "csv" (RFC 4180 quoting) or "none" (quotes are plain text)
    csv_style: str = "CsvStyle.QuoteAlways"
    encoding: str = "UTF-8"


@dataclass(frozen=True, slots=True)
class CdmPartition:
    """One data file of an entity. ``csv`` is None when the partition is not CSV."""

    name: str
    location: str
    csv: CsvFormat | None = CsvFormat()

    @property
    def path(self) -> str:
        """The blob path part of ``location`` (see :func:`location_path`)."""
        return location_path(self.location)


@dataclass(frozen=True, slots=True)
class CdmEntity:
    """An entity: attribute names in column order, their data types, its partitions."""

    name: str
    attributes: tuple[str, ...] = ()
    data_types: tuple[str, ...] = ()
    partitions: tuple[CdmPartition, ...] = ()
    kind: str = "LocalEntity"


@dataclass(frozen=True, slots=True)
class CdmModel:
    """The entities one model.json or manifest describes; ``source`` names the file."""

    name: str
    entities: tuple[CdmEntity, ...]
    source: str = ""

    def entity(self, name: str) -> CdmEntity:
        """The entity called ``name``; a case-insensitive match is accepted when unambiguous."""
        for entity in self.entities:
            if entity.name == name:
                return entity
        folded = [e for e in self.entities if e.name.casefold() == name.casefold()]
        if len(folded) == 1:
            return folded[0]
        have = ", ".join(repr(e.name) for e in self.entities) or "none"
        raise InputError(f"no entity {name!r} in the model (it has: {have})", file=self.source)


def location_path(location: str) -> str:
    """The blob path of a partition location, for matching it against blob names.

    ``https://acct.blob.core.windows.net/container/a/b.csv`` gives ``container/a/b.csv``;
    an adapter path such as ``adls:/a/b.csv`` gives ``a/b.csv``; a relative path is kept.
    """
    parts = urlsplit(location)
    path = parts.path if parts.scheme else location
    if parts.scheme and not parts.netloc:
        # CDM corpus paths ("local:/x", "adls:/x") parse as a scheme with no host.
        path = location.split(":", 1)[1]
    return unquote(path).lstrip("/")


# ---------------------------------------------------------------- model.json


def parse_model_json(data: bytes, *, source: str) -> CdmModel:
    """Parse a CDM model.json document; ``source`` names it in errors."""
    doc = _load_json(data, source)
    entities = doc.get("entities")
    if not isinstance(entities, list):
        raise InputError("not a CDM model.json: no 'entities' list", file=source)
    parsed = tuple(_model_entity(e, i, source) for i, e in enumerate(entities))
    return CdmModel(name=str(doc.get("name") or ""), entities=parsed, source=source)


def _model_entity(raw: object, index: int, source: str) -> CdmEntity:
    field = f"entities[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise InputError("an entity must be an object with a name", file=source, field=field)
    kind = str(raw.get("$type") or "LocalEntity")
    if kind != "LocalEntity":
        # A ReferenceEntity points at another model; its columns are not described here.
        return CdmEntity(name=raw["name"], kind=kind)
    names, types = _attributes(raw.get("attributes") or [], source, f"{field}.attributes")
    partitions = tuple(
        _model_partition(p, source, f"{field}.partitions[{j}]")
        for j, p in enumerate(_as_list(raw.get("partitions"), source, f"{field}.partitions"))
    )
    return CdmEntity(raw["name"], names, types, partitions, kind)


def _model_partition(raw: object, source: str, field: str) -> CdmPartition:
    if not isinstance(raw, dict) or not isinstance(raw.get("location"), str):
        raise InputError("a partition must be an object with a location", file=source, field=field)
    # CDM's own reader applies the partition's CSV trait first, then fileFormatSettings on top.
    settings = _trait_arguments(raw.get("cdm:traits"), source, f"{field}.cdm:traits")
    csv: CsvFormat | None = _csv_format(settings, source, field)
    file_format = raw.get("fileFormatSettings")
    if isinstance(file_format, dict):
        if file_format.get("$type", "CsvFormatSettings") == "CsvFormatSettings":
            merged = {**settings, **{k: v for k, v in file_format.items() if k != "$type"}}
            csv = _csv_format(merged, source, f"{field}.fileFormatSettings")
        else:
            csv = None
    return CdmPartition(name=str(raw.get("name") or ""), location=raw["location"], csv=csv)


# ---------------------------------------------------------------- manifest form


def parse_manifest(
    data: bytes,
    *,
    path: str,
    read_document: Callable[[str], bytes | None],
    container: str = "",
) -> CdmModel:
    """Parse a ``*.manifest.cdm.json`` found at blob ``path``.

    ``read_document(path)`` returns the bytes of an entity document (None if missing).
    Document paths and relative partition locations are resolved against the manifest's
    folder, so partitions carry paths from the container's root; ``container`` only
    prefixes the file names in errors.
    """
    show = _Namer(container)
    source = show(path)
    doc = _load_json(data, source)
    entities = doc.get("entities")
    if not isinstance(entities, list):
        raise InputError("not a CDM manifest: no 'entities' list", file=source)
    context = _ManifestContext(posixpath.dirname(path), source, read_document, show)
    parsed = tuple(_manifest_entity(e, f"entities[{i}]", context) for i, e in enumerate(entities))
    name = str(doc.get("manifestName") or posixpath.basename(path))
    return CdmModel(name=name, entities=parsed, source=source)


@dataclass(frozen=True, slots=True)
class _Namer:
    container: str

    def __call__(self, path: str) -> str:
        return f"{self.container}/{path}" if self.container else path


@dataclass(frozen=True, slots=True)
class _ManifestContext:
    base: str  # the manifest's folder, from the container's root
    source: str  # the manifest's name in errors
    read_document: Callable[[str], bytes | None]
    show: _Namer

    def resolve(self, location: str) -> str:
        """A relative path or corpus path (``local:/x``) as a path from the container's root."""
        parts = urlsplit(location)
        if parts.scheme and parts.netloc:
            return location  # a URL: matched by its path later
        return posixpath.normpath(posixpath.join(self.base, location_path(location)))


def _manifest_entity(raw: object, field: str, context: _ManifestContext) -> CdmEntity:
    source = context.source
    if not isinstance(raw, dict) or not isinstance(raw.get("entityName"), str):
        raise InputError("an entity must be an object with an entityName", file=source, field=field)
    name = raw["entityName"]
    listed = _as_list(raw.get("dataPartitions"), source, f"{field}.dataPartitions")
    partitions = tuple(
        _manifest_partition(p, f"{field}.dataPartitions[{j}]", context)
        for j, p in enumerate(listed)
    )
    kind = str(raw.get("type") or "LocalEntity")
    entity_path = raw.get("entityPath")
    if kind != "LocalEntity" or not isinstance(entity_path, str):
        return CdmEntity(name=name, partitions=partitions, kind=kind)
    if entity_path.startswith("cdm:"):
        # Points into the public CDM schema corpus, which is not in the storage account.
        return CdmEntity(name=name, partitions=partitions, kind="ReferenceEntity")
    document, _, definition = entity_path.rpartition("/")
    doc_path = context.resolve(document)
    body = context.read_document(doc_path)
    if body is None:
        raise InputError(
            f"entity document {context.show(doc_path)} not found", file=source, field=field
        )
    names, types = _entity_document_attributes(body, context.show(doc_path), definition or name)
    return CdmEntity(name, names, types, partitions)


def _manifest_partition(raw: object, field: str, context: _ManifestContext) -> CdmPartition:
    source = context.source
    if not isinstance(raw, dict) or not isinstance(raw.get("location"), str):
        raise InputError("a partition must be an object with a location", file=source, field=field)
    settings = _trait_arguments(raw.get("exhibitsTraits"), source, f"{field}.exhibitsTraits")
    return CdmPartition(
        name=str(raw.get("name") or ""),
        location=context.resolve(raw["location"]),
        csv=_csv_format(settings, source, field),
    )


def _entity_document_attributes(
    body: bytes, source: str, definition: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    doc = _load_json(body, source)
    for i, item in enumerate(_as_list(doc.get("definitions"), source, "definitions")):
        if isinstance(item, dict) and item.get("entityName") == definition:
            field = f"definitions[{i}].hasAttributes"
            return _attributes(
                _flatten_groups(item.get("hasAttributes"), source, field), source, field
            )
    raise InputError(f"no definition of entity {definition!r}", file=source, field="definitions")


def _flatten_groups(raw: object, source: str, field: str) -> list[object]:
    """Attributes in order, with resolved attribute groups (``members``) expanded in place."""
    flat: list[object] = []
    for i, item in enumerate(_as_list(raw, source, field)):
        group = item.get("attributeGroupReference") if isinstance(item, dict) else None
        if group is None:
            flat.append(item)
        elif isinstance(group, dict) and "members" in group:
            flat.extend(_flatten_groups(group["members"], source, f"{field}[{i}].members"))
        else:
            raise InputError(
                "attribute group given by reference only; use a resolved entity document",
                file=source,
                field=f"{field}[{i}]",
            )
    return flat


# ---------------------------------------------------------------- shared helpers


def _attributes(raw: object, source: str, field: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names: list[str] = []
    types: list[str] = []
    for i, item in enumerate(_as_list(raw, source, field)):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise InputError(
                "an attribute must be an object with a name", file=source, field=f"{field}[{i}]"
            )
        names.append(item["name"])
        types.append(_data_type(item))
    return tuple(names), tuple(types)


def _data_type(item: Mapping[str, Any]) -> str:
    # model.json and unresolved documents say dataType; resolved documents say dataFormat.
    value = item.get("dataType", item.get("dataFormat", ""))
    if isinstance(value, dict):
        value = value.get("dataTypeReference", "")
    return value if isinstance(value, str) else ""


def _trait_arguments(traits: object, source: str, field: str) -> dict[str, object]:
    """The named arguments of the ``is.partition.format.CSV`` trait, if the partition has one."""
    for trait in traits if isinstance(traits, list) else []:
        if isinstance(trait, dict) and trait.get("traitReference") == CSV_TRAIT:
            arguments = _as_list(trait.get("arguments"), source, field)
            return {
                a["name"]: a.get("value") for a in arguments if isinstance(a, dict) and "name" in a
            }
    return {}


def _csv_format(settings: Mapping[str, object], source: str, field: str) -> CsvFormat:
    default = CsvFormat()
    return CsvFormat(
        header=_boolean(
            settings.get("columnHeaders", default.header), source, f"{field}.columnHeaders"
        ),
        delimiter=_delimiter(
            settings.get("delimiter", default.delimiter), source, f"{field}.delimiter"
        ),
        quote_style=_quote_style(settings.get("quoteStyle"), source, f"{field}.quoteStyle"),
        csv_style=str(settings.get("csvStyle") or default.csv_style),
        encoding=str(settings.get("encoding") or default.encoding),
    )


def _boolean(value: object, source: str, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InputError(f"expected true or false, found {value!r}", file=source, field=field)


def _delimiter(value: object, source: str, field: str) -> str:
    if isinstance(value, str) and len(value) == 1 and value not in '"\r\n':
        return value
    raise InputError(f"delimiter must be one character, found {value!r}", file=source, field=field)


def _quote_style(value: object, source: str, field: str) -> str:
    if value is None or value == "":
        return "csv"
    style = _QUOTE_STYLES.get(str(value).lower())
    if style is None:
        raise InputError(
            f"unknown quote style {value!r} (expected QuoteStyle.Csv or QuoteStyle.None)",
            file=source,
            field=field,
        )
    return style


def _as_list(value: object, source: str, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"expected a list, found {type(value).__name__}", file=source, field=field)
    return value


def _load_json(data: bytes, source: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not valid JSON: {exc}", file=source) from exc
    if not isinstance(doc, dict):
        raise InputError("expected a JSON object at the top level", file=source)
    return doc


# ---------------------------------------------------------------- from Blob Storage


def load_cdm(container_client: ContainerClient, folder: str) -> CdmModel:
    """Read the CDM metadata at ``folder``: ``model.json``, else ``*.manifest.cdm.json``."""
    folder = folder.strip("/")
    container = container_client.container_name
    model_path = posixpath.join(folder, "model.json")
    body = _read_small_blob(container_client, model_path)
    if body is not None:
        return parse_model_json(body, source=f"{container}/{model_path}")
    manifest = _find_manifest(container_client, folder)
    body = _read_small_blob(container_client, manifest)
    if body is None:  # deleted between listing and reading
        raise InputError("manifest disappeared while being read", file=f"{container}/{manifest}")
    return parse_manifest(
        body,
        path=manifest,
        read_document=lambda path: _read_small_blob(container_client, path),
        container=container,
    )


def _find_manifest(container_client: ContainerClient, folder: str) -> str:
    prefix = f"{folder}/" if folder else ""
    found = sorted(
        item.name
        for item in container_client.walk_blobs(name_starts_with=prefix, delimiter="/")
        if item.name.endswith(".manifest.cdm.json")
    )
    where = f"{container_client.container_name}/{folder}"
    if not found:
        raise InputError(f"no model.json or *.manifest.cdm.json in {where}", file=where)
    if len(found) == 1:
        return found[0]
    default = posixpath.join(folder, "default.manifest.cdm.json")
    if default in found:
        return default
    names = ", ".join(posixpath.basename(f) for f in found)
    raise InputError(f"several manifests in {where} ({names}) and none is default", file=where)


def _read_small_blob(
    container_client: ContainerClient, path: str, *, limit: int | None = None
) -> bytes | None:
    """A metadata blob's bytes, or None if it does not exist; InputError over ``limit``."""
    limit = MAX_METADATA_BYTES if limit is None else limit
    try:
        read = read_capped(container_client.get_blob_client(path), limit)
    except ResourceNotFoundError:
        return None
    if read.too_large:
        raise InputError(
            f"is {read.size:,} bytes; CDM metadata files are read only up to "
            f"{limit:,} bytes ({limit / (1024 * 1024):g} MiB)",
            file=f"{container_client.container_name}/{path}",
        )
    return read.data
