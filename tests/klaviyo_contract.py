"""Check requests (and responses) against Klaviyo's own OpenAPI slices.

The slices live beside the checkout (``../shared/klaviyo-openapi/*.json``) and are read
there, never copied. ``KlaviyoContract().validate(method, url, headers, body)`` raises an
AssertionError listing every way a request departs from the operation it targets:
unknown operation, missing ``revision`` or Authorization header, unknown or out-of-range
query parameters (``page[size]`` bounds, ``fields[...]`` and ``sort`` enums), a ``filter``
that uses a field or operator the parameter's description does not allow (Klaviyo lists
them there: "Allowed field(s)/operator(s): `email`: `any`, `equals` ..."), a wrong
content type, and a body that fails the operation's requestBody schema.

OpenAPI 3.0 is not JSON Schema, so each slice is translated once:
- ``nullable: true`` becomes ``type: [T, "null"]`` (and ``null`` joins an ``enum``); where
  there is no plain ``type`` (``$ref`` or ``oneOf`` beside ``nullable``, as Klaviyo writes
  in many places) the schema becomes ``anyOf: [<schema>, {"type": "null"}]``;
- request bodies are strict: an object schema with ``properties`` refuses other members
  (Klaviyo answers 400 to unknown fields; a typo must not pass silently);
- ``#/components/...`` references resolve inside the same slice.
Validation uses Draft 2020-12, where ``$ref`` may have siblings.

Responses are checked leniently (``validate_response``): no strictness; link members
(``next``, ``prev``, ...) may be null, as Klaviyo sends them although the slices type them
as plain strings; and after a sparse fieldset (``fields[...]``) nothing is required.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

__all__ = ["DEFAULT_SPEC_DIR", "KlaviyoContract", "Operation", "allowed_filters"]

DEFAULT_SPEC_DIR = Path(__file__).resolve().parents[2] / "shared" / "klaviyo-openapi"
_REVISION_RE = re.compile(r"\d{4}-\d{2}-\d{2}(\.[A-Za-z0-9_-]+)?")
_COMBINATORS = ("allOf", "anyOf", "oneOf")
_HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def to_json_schema(
    schema: Any, *, strict: bool, nullable_links: bool = False, sparse: bool = False
) -> Any:
    """Translate one OpenAPI 3.0 schema object into JSON Schema 2020-12 (see module doc).

    ``sparse`` drops ``required``: a response to a request with sparse fieldsets
    (``fields[type]=a,b``) leaves out members the schema calls required.
    """
    return _convert(
        schema, strict=strict, nullable_links=nullable_links, sparse=sparse, in_combinator=False
    )


def _convert(
    schema: Any, *, strict: bool, nullable_links: bool, sparse: bool, in_combinator: bool
) -> Any:
    if not isinstance(schema, dict):
        return schema

    def sub(value: Any, *, combinator: bool = False) -> Any:
        return _convert(
            value,
            strict=strict,
            nullable_links=nullable_links,
            sparse=sparse,
            in_combinator=combinator,
        )

    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "nullable" or key.startswith("x-") or (sparse and key == "required"):
            continue
        if key == "properties":
            out[key] = {name: sub(s) for name, s in value.items()}
        elif key in ("items", "not", "additionalProperties") and isinstance(value, dict):
            out[key] = sub(value)
        elif key in _COMBINATORS:
            # Members of allOf each see only part of the object: never close them.
            out[key] = [sub(s, combinator=key == "allOf") for s in value]
        else:
            out[key] = value
    if nullable_links and _is_links_object(out):
        out["properties"] = {k: _nullable(v) for k, v in out["properties"].items()}
    if (
        strict
        and not in_combinator
        and out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not any(k in out for k in _COMBINATORS)
    ):
        out["additionalProperties"] = False
    return _nullable(out) if schema.get("nullable") else out


def _is_links_object(schema: dict[str, Any]) -> bool:
    props = schema.get("properties")
    return (
        isinstance(props, dict)
        and bool(props)
        and set(props) <= {"self", "related", "next", "prev", "first", "last"}
    )


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str | list) and not any(k in schema for k in ("$ref", *_COMBINATORS)):
        out = dict(schema)
        kinds = [kind] if isinstance(kind, str) else list(kind)
        out["type"] = kinds if "null" in kinds else [*kinds, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    annotations = {k: v for k, v in schema.items() if k in ("description", "example", "default")}
    rest = {k: v for k, v in schema.items() if k not in annotations}
    return {**annotations, "anyOf": [rest, {"type": "null"}]}


@dataclass(frozen=True)
class Operation:
    """One operation of one slice: what a request to it must look like."""

    method: str
    path: str
    operation_id: str
    source: str
    parameters: tuple[Mapping[str, Any], ...] = field(repr=False)
    request_body: Mapping[str, Any] | None = field(repr=False)
    responses: Mapping[str, Any] = field(repr=False)
    components: Mapping[str, Any] = field(repr=False)
    pattern: re.Pattern[str] = field(repr=False)

    def params(self, where: str) -> dict[str, Mapping[str, Any]]:
        return {p["name"]: p for p in self.parameters if p["in"] == where}

    def validator(
        self, schema: Mapping[str, Any], *, strict: bool, sparse: bool = False
    ) -> Draft202012Validator:
        options = {"strict": strict, "nullable_links": not strict, "sparse": sparse}
        root = to_json_schema(dict(schema), **options)
        components = to_json_schema(
            {"type": "object", "properties": self.components.get("schemas", {})}, **options
        )["properties"]
        # Refs are "#/components/schemas/X": keep the translated components at that path.
        document = {**root, "components": {"schemas": components}}
        return Draft202012Validator(document)


class KlaviyoContract:
    """Klaviyo's OpenAPI slices, loaded once; validates requests and responses."""

    def __init__(self, spec_dir: Path | str | None = None) -> None:
        self.spec_dir = Path(spec_dir) if spec_dir is not None else DEFAULT_SPEC_DIR
        files = sorted(self.spec_dir.glob("*.json"))
        if not files:
            raise FileNotFoundError(
                f"no Klaviyo OpenAPI slices in {self.spec_dir}; the repository expects the "
                "shared/ folder beside its checkout"
            )
        self._operations = [op for f in files for op in _load(f)]
        self._validators: dict[tuple[str, int, bool, bool], Draft202012Validator] = {}

    def operations(self) -> list[Operation]:
        """Every operation the slices describe, by path then method."""
        return sorted(self._operations, key=lambda op: (op.path, op.method))

    def find(self, method: str, url_or_path: str) -> Operation:
        """The operation a request targets (trailing slash or not); AssertionError if none."""
        path = urlsplit(url_or_path).path
        candidates = [op for op in self._operations if op.pattern.fullmatch(path)]
        for op in candidates:
            if op.method == method.upper():
                return op
        known = ", ".join(sorted({op.method for op in candidates})) or "none"
        raise AssertionError(
            f"{method.upper()} {path}: no such operation in Klaviyo's OpenAPI slices "
            f"(methods known for this path: {known})"
        )

    def validate(
        self,
        method: str,
        url_or_path: str,
        headers: Mapping[str, str] | None,
        body: Any = None,
        *,
        check_body: bool = True,
    ) -> None:
        """Raise AssertionError unless the request conforms to its operation."""
        op = self.find(method, url_or_path)
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        problems = [
            *self._header_problems(op, lowered, body),
            *self._query_problems(
                op, parse_qsl(urlsplit(url_or_path).query, keep_blank_values=True)
            ),
            *(self._body_problems(op, body) if check_body else ()),
        ]
        if problems:
            raise AssertionError(_report(op, "request", problems))

    def validate_recorded(self, request: Mapping[str, Any]) -> None:
        """``validate`` one entry of the sandbox's request log.

        The sandbox lets go of old bodies past its byte budget (``body_omitted``); the
        rest of such a request is still checked.
        """
        self.validate(
            request["method"],
            request["url"],
            request["headers"],
            request["body"],
            check_body=not request.get("body_omitted"),
        )

    def validate_response(
        self, method: str, url_or_path: str, status: int, body: Any = None
    ) -> None:
        """Raise AssertionError unless a response body fits the schema for its status."""
        op = self.find(method, url_or_path)
        spec = (
            op.responses.get(str(status))
            or op.responses.get(f"{status // 100}XX")
            or op.responses.get("default")
        )
        if spec is None:
            raise AssertionError(_report(op, "response", [f"status {status} is not documented"]))
        spec = _deref(spec, op.components)
        content = (spec.get("content") or {}).get("application/vnd.api+json")
        if content is None:
            if body not in (None, b"", ""):
                raise AssertionError(
                    _report(op, "response", [f"status {status} has no body, got one"])
                )
            return
        query = urlsplit(url_or_path).query
        sparse = any(name.startswith("fields[") for name, _ in parse_qsl(query))
        problems = self._schema_problems(op, content["schema"], body, strict=False, sparse=sparse)
        if problems:
            raise AssertionError(_report(op, f"{status} response", problems))

    # --- the parts -------------------------------------------------------------------

    def _header_problems(
        self, op: Operation, headers: Mapping[str, str], body: Any
    ) -> Iterable[str]:
        for name, param in op.params("header").items():
            value = headers.get(name.lower())
            if value is None:
                if param.get("required"):
                    yield f"missing required header {name!r}"
            elif name.lower() == "revision" and not _REVISION_RE.fullmatch(value):
                yield f"header 'revision' must look like YYYY-MM-DD[.suffix], got {value!r}"
        auth = headers.get("authorization")
        if auth is None:
            yield "missing header 'Authorization' (Klaviyo-API-Key <private key>)"
        elif not auth.startswith("Klaviyo-API-Key "):
            yield "header 'Authorization' must start with 'Klaviyo-API-Key '"
        if op.request_body is not None and body is not None:
            media = headers.get("content-type", "").split(";")[0].strip()
            allowed = sorted(op.request_body.get("content", {}))
            if media not in allowed:
                yield f"content-type must be one of {allowed}, got {media or 'none'!r}"

    def _query_problems(self, op: Operation, pairs: list[tuple[str, str]]) -> Iterable[str]:
        params = op.params("query")
        seen = set()
        for name, raw in pairs:
            seen.add(name)
            param = params.get(name)
            if param is None:
                yield f"unknown query parameter {name!r} (known: {sorted(params)})"
                continue
            yield from _query_value_problems(name, raw, param)
        for name, param in params.items():
            if param.get("required") and name not in seen:
                yield f"missing required query parameter {name!r}"

    def _body_problems(self, op: Operation, body: Any) -> Iterable[str]:
        if op.request_body is None:
            if body is not None:
                yield "this operation takes no request body"
            return
        if body is None:
            if op.request_body.get("required"):
                yield "a request body is required"
            return
        content = op.request_body.get("content", {}).get("application/vnd.api+json")
        if content is not None:
            yield from self._schema_problems(op, content["schema"], body, strict=True)

    def _schema_problems(
        self,
        op: Operation,
        schema: Mapping[str, Any],
        instance: Any,
        *,
        strict: bool,
        sparse: bool = False,
    ) -> list[str]:
        key = (op.source, id(schema), strict, sparse)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = op.validator(schema, strict=strict, sparse=sparse)
        errors = list(validator.iter_errors(instance))
        if not errors:
            return []
        # The most relevant error first, then a few more so one run shows several mistakes.
        first = best_match(errors)
        ordered = [first, *(e for e in errors if e is not first)][:5]
        out = [_describe(e) for e in ordered]
        if len(errors) > len(ordered):
            out.append(f"... and {len(errors) - len(ordered)} more schema errors")
        return out


_ALLOWED_LINE = re.compile(r"`([\w.$-]+)`: ((?:`[\w-]+`(?:, )?)+)")
_OPERATION = re.compile(r"([a-z][a-z-]*)\(\s*([^,()\s]+)\s*,")
_QUOTED = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_LOGICAL = frozenset({"and", "or", "not"})


def allowed_filters(param: Mapping[str, Any]) -> dict[str, set[str]]:
    """field -> operators, from the ``filter`` parameter's description in the slice."""
    text = (param.get("description") or "").split("Allowed field(s)/operator(s):", 1)
    if len(text) < 2:
        return {}
    out: dict[str, set[str]] = {}
    for field_name, operators in _ALLOWED_LINE.findall(text[1]):
        out[field_name] = set(re.findall(r"`([\w-]+)`", operators))
    return out


def _filter_problems(raw: str, param: Mapping[str, Any]) -> Iterable[str]:
    allowed = allowed_filters(param)
    bare = _QUOTED.sub('""', raw)  # quoted values may hold anything, parentheses included
    if bare.count("(") != bare.count(")") or bare.count("[") != bare.count("]"):
        yield f"filter {raw[:80]!r}...: unbalanced parentheses or brackets"
    operations = _OPERATION.findall(bare)
    if not operations:
        yield "filter: no operation such as equals(field,value)"
    for operator, field_name in operations:
        if operator in _LOGICAL:
            continue
        if field_name not in allowed:
            yield f"filter: {field_name!r} cannot be filtered on (allowed: {sorted(allowed)})"
        elif operator not in allowed[field_name]:
            yield (f"filter: {field_name!r} allows {sorted(allowed[field_name])}, not {operator!r}")
    # Klaviyo's filter guide: datetimes go unquoted; a quoted one makes the filter invalid.
    if re.search(r"_at\s*,\s*[\"']", raw):
        yield "filter: datetime values are written without quotes"


def _query_value_problems(name: str, raw: str, param: Mapping[str, Any]) -> Iterable[str]:
    if name == "filter":
        yield from _filter_problems(raw, param)
        return
    schema = param.get("schema", {})
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items", {})
        for value in raw.split(",") if param.get("explode") is False else [raw]:
            yield from _scalar_problems(name, value, items)
    else:
        yield from _scalar_problems(name, raw, schema)


def _scalar_problems(name: str, raw: str, schema: Mapping[str, Any]) -> Iterable[str]:
    value: Any = raw
    if schema.get("type") == "integer":
        try:
            value = int(raw)
        except ValueError:
            yield f"query parameter {name!r} must be an integer, got {raw!r}"
            return
    if "enum" in schema and value not in schema["enum"]:
        yield f"query parameter {name!r}: {raw!r} is not one of {schema['enum']}"
    if "minimum" in schema and value < schema["minimum"]:
        yield f"query parameter {name!r} must be >= {schema['minimum']}, got {raw}"
    if "maximum" in schema and value > schema["maximum"]:
        yield f"query parameter {name!r} must be <= {schema['maximum']}, got {raw}"


def _describe(error: ValidationError) -> str:
    pointer = "".join(f"/{part}" for part in error.absolute_path) or "/"
    message = error.message
    if len(message) > 300:
        message = message[:300] + "..."
    return f"body at {pointer}: {message}"


def _report(op: Operation, what: str, problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return (
        f"{op.method} {op.path} ({op.operation_id}, {op.source}): the {what} does not "
        f"conform to Klaviyo's OpenAPI:\n{lines}"
    )


def _deref(node: Any, components: Mapping[str, Any]) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        parts = node["$ref"].removeprefix("#/components/").split("/")
        node = components
        for part in parts:
            node = node[part]
    return node


def _template_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template.rstrip("/"))
    regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"{regex}/?")  # Klaviyo accepts both, and its own links end in "/"


def _load(path: Path) -> list[Operation]:
    spec = json.loads(path.read_text(encoding="utf-8"))
    components = spec.get("components", {})
    out = []
    for template, item in spec.get("paths", {}).items():
        shared = tuple(item.get("parameters", ()))
        for method in _HTTP_METHODS:
            op = item.get(method)
            if op is None:
                continue
            body = _deref(op.get("requestBody"), components) if op.get("requestBody") else None
            out.append(
                Operation(
                    method=method.upper(),
                    path=template,
                    operation_id=op.get("operationId", ""),
                    source=path.name,
                    parameters=tuple(
                        _deref(p, components) for p in (*shared, *op.get("parameters", ()))
                    ),
                    request_body=copy.deepcopy(body),
                    responses=op.get("responses", {}),
                    components=components,
                    pattern=_template_pattern(template),
                )
            )
    return out
