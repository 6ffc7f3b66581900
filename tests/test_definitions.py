from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from shared.definitions import (
    SCHEMA_PATH,
    ExportDefinition,
    MappingSpec,
    PropertySpec,
    parse_definition,
)
from shared.errors import DefinitionError

EXAMPLE = Path(__file__).parent.parent / "examples" / "vip-customers.json"

MINIMAL = {
    "name": "vip",
    "source": {"container": "ci-exports", "folder": "CustomerInsights_1/Klaviyo", "segment": "Vip"},
    "connection": {"name": "klaviyo-prod", "privacy_consent": False},
    "destination": {"list_id": "Y6nRLr"},
    "mapping": {"email": "Email"},
}


def with_change(path: str, value: object, base: dict = MINIMAL) -> dict:
    """A copy of ``base`` with the dotted ``path`` set to ``value`` (or removed if ...)."""
    doc = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


def field_of(doc: object) -> str:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(doc)  # type: ignore[arg-type]
    return caught.value.field


# --- the example and the schema ------------------------------------------------------------


def test_schema_is_valid_2020_12():
    Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


def test_example_is_valid():
    definition = parse_definition(EXAMPLE.read_bytes(), source=EXAMPLE.name)
    assert definition.name == "vip-customers"
    assert definition.enabled is True
    assert definition.source.segment == "NewsletterSubscribers"
    assert definition.connection.privacy_consent is True
    assert definition.destination.list_id == "Y6nRLr"
    assert definition.mapping.email == "Email"
    assert dict(definition.mapping.location)["city"] == "City"
    assert definition.mapping.properties[1] == PropertySpec(
        "lifetime_value", "LifetimeValue", "number"
    )
    assert definition.options.phone_default_region == "US"


def test_minimal_definition_gets_defaults():
    definition = parse_definition(MINIMAL)
    assert definition.enabled is True
    assert definition.connection.access == "administrators"
    assert definition.connection.api_key_secret == "klaviyo-api-key"
    assert definition.connection.display_name == "klaviyo-prod"
    assert definition.connection.privacy_consent is False  # saved without consent; runs refuse
    assert definition.mapping == MappingSpec(email="Email")
    assert definition.options.phone_default_region is None


def test_definition_is_immutable_and_hashable():
    definition = parse_definition(EXAMPLE.read_text())
    with pytest.raises(dataclasses.FrozenInstanceError):
        definition.name = "other"  # type: ignore[misc]
    assert hash(definition) == hash(parse_definition(EXAMPLE.read_text()))


# --- round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [MINIMAL, json.loads(EXAMPLE.read_text())])
def test_to_dict_round_trips(source):
    definition = parse_definition(source)
    data = definition.to_dict()
    assert parse_definition(data) == definition
    assert parse_definition(json.dumps(data)) == definition


def test_to_dict_fills_in_defaults():
    data = parse_definition(MINIMAL).to_dict()
    assert data["enabled"] is True
    assert data["connection"]["access"] == "administrators"
    assert data["mapping"] == {"email": "Email"}  # no empty location or properties


def test_location_order_does_not_matter():
    a = with_change("mapping.location", {"country": "Country", "city": "City"})
    b = with_change("mapping.location", {"city": "City", "country": "Country"})
    assert parse_definition(a) == parse_definition(b)


def test_mapped_columns_names_every_field_path():
    definition = parse_definition(EXAMPLE.read_text())
    columns = definition.mapped_columns()
    assert next(iter(columns)) == "mapping.email"
    assert columns["mapping.phone_number"] == "Phone"
    assert columns["mapping.location.city"] == "City"
    assert columns["mapping.properties.lifetime_value.column"] == "LifetimeValue"
    assert columns["options.phone_region_column"] == "Country"


def test_folder_trailing_slash_is_dropped():
    doc = with_change("source.folder", "CustomerInsights_1/Klaviyo/")
    assert parse_definition(doc).source.folder == "CustomerInsights_1/Klaviyo"


def test_bom_is_accepted():
    text = json.dumps(MINIMAL)
    assert parse_definition("\ufeff" + text) == parse_definition(text)
    assert parse_definition(b"\xef\xbb\xbf" + text.encode()) == parse_definition(text)


# --- each rule, violated ---------------------------------------------------------------------

VIOLATIONS = [
    ("name", "VIP customers"),
    ("name", "-vip"),
    ("name", "a" * 64),
    ("name", "vip\n"),  # Python's `$` would accept a trailing newline; JSON Schema's does not
    ("name", 42),
    ("name", ...),
    ("enabled", "yes"),
    ("source", ...),
    ("source.container", "CI-Exports"),
    ("source.container", "ab"),
    ("source.container", "a--b"),
    ("source.container", "-abc"),
    ("source.container", "abc-"),
    ("source.container", "a" * 64),
    ("source.folder", "/CustomerInsights_1/Klaviyo"),
    ("source.folder", "CustomerInsights_1/../other"),
    ("source.folder", ".."),
    ("source.folder", "CustomerInsights_1\\Klaviyo"),
    ("source.folder", "a//b"),
    ("source.folder", ""),
    ("source.folder", ...),
    ("source.segment", ""),
    ("source.segment", "Vip/Customers"),
    ("connection.name", "Klaviyo Prod"),
    ("connection.display_name", ""),
    ("connection.access", "owners"),
    ("connection.api_key_secret", "klaviyo_api_key"),
    ("connection.api_key_secret", "k" * 128),
    ("connection.privacy_consent", ...),
    ("connection.privacy_consent", "I agree"),
    ("destination.list_id", "Y6n-RL"),
    ("destination.list_id", ""),
    ("destination.list_id", "a" * 65),
    ("destination.list_id", 123),
    ("mapping.email", ...),
    ("mapping.email", ""),
    ("mapping.email", "   "),
    ("mapping.phone_number", ""),
    ("mapping.first_name", ["FirstName"]),
    ("mapping.location.city", ""),
    ("mapping.properties.tier.type", "integer"),
    ("mapping.properties.tier.column", ""),
    ("options.phone_default_region", "us"),
    ("options.phone_default_region", "USA"),
    ("options.phone_default_region", "XX"),  # the right shape, but no such region
    ("options.phone_region_column", ""),
    ("options.phone_region_column", 7),
]


@pytest.mark.parametrize(("path", "value"), VIOLATIONS)
def test_violation_names_the_field(path, value):
    doc = with_change(path, value)
    if path.startswith("mapping.properties.tier.") and "column" not in path:
        doc["mapping"]["properties"]["tier"]["column"] = "Tier"
    assert field_of(doc) == path


def test_property_without_column():
    doc = with_change("mapping.properties", {"tier": {"type": "string"}})
    assert field_of(doc) == "mapping.properties.tier.column"


@pytest.mark.parametrize("name", ["$email", "", "p" * 256])
def test_property_names(name):
    doc = with_change("mapping.properties", {name: {"column": "Tier"}})
    assert field_of(doc) == f"mapping.properties.{name}"


def test_property_name_limits_are_inclusive():
    doc = with_change("mapping.properties", {"p" * 255: {"column": "Tier"}, "a$": {"column": "X"}})
    assert len(parse_definition(doc).mapping.properties) == 2


@pytest.mark.parametrize(
    ("path", "hint"),
    [
        ("mapping.emial", "did you mean 'email'"),
        ("mapping.location.cty", "did you mean 'city'"),
        ("mapping.properties.tier.colum", "did you mean 'column'"),
        ("destinaton", "did you mean 'destination'"),
        ("connection.api_key", "did you mean 'api_key_secret'"),
        ("options.region", "phone_default_region"),
    ],
)
def test_unknown_key_is_named_with_a_hint(path, hint):
    doc = with_change("mapping.properties", {"tier": {"column": "Tier"}})
    doc = with_change(path, "x", doc)
    with pytest.raises(DefinitionError) as caught:
        parse_definition(doc)
    assert caught.value.field == path
    assert "unknown field" in caught.value.detail
    assert hint in caught.value.detail


def test_first_offending_field_follows_the_document():
    doc = with_change("name", "Bad Name", with_change("destination.list_id", "bad-id"))
    assert field_of(doc) == "name"
    reordered = {"destination": doc["destination"], **doc}
    assert field_of(reordered) == "destination.list_id"


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("mapping.email", ..., "is required"),
        ("mapping.email", "", "must not be empty"),
        ("destination.list_id", "Y6n-RL", "Klaviyo list id"),
        ("source.container", "CI", "Azure container name"),
        ("connection.access", "owners", "one of: administrators, contributors"),
        ("enabled", "yes", "true or false"),
        ("options.phone_default_region", "XX", '"XX" is not a region'),
    ],
)
def test_messages_are_plain_words(path, value, words):
    with pytest.raises(DefinitionError) as caught:
        parse_definition(with_change(path, value), source="defs/vip.json")
    assert words in caught.value.detail
    assert str(caught.value).startswith(f"defs/vip.json: {path}: ")


def test_invalid_json_names_line_and_column():
    text = '{\n  "name": "vip",\n  "enabled": tru\n}'
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, source="vip.json")
    assert caught.value.field == ""
    assert "not valid JSON" in caught.value.detail
    assert "line 3, column 14" in caught.value.detail
    assert str(caught.value).startswith("vip.json: not valid JSON")


def test_not_utf8():
    with pytest.raises(DefinitionError) as caught:
        parse_definition(b'{"name": "\xff"}')
    assert caught.value.field == ""
    assert "UTF-8" in caught.value.detail


def test_duplicate_keys_are_refused():
    text = json.dumps(MINIMAL)[:-1] + ', "name": "other"}'
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text)
    assert "'name' appears twice" in caught.value.detail


def test_top_level_must_be_an_object():
    assert field_of("[]") == ""


def test_parse_accepts_mapping_types_and_returns_definitions():
    assert isinstance(parse_definition(MINIMAL), ExportDefinition)


# --- secrets are never echoed ---------------------------------------------------------------

KEY = "pk_" + "0123456789abcdef" * 2 + "ab"  # the shape of a Klaviyo private key


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("connection.api_key_secret", KEY),  # the key pasted where its secret's name goes
        ("connection.api_key_secret", "my key with spaces"),  # the field is never quoted
        ("connection.api_key_secret", 12345),
        ("connection.api_key_secret", "k" * 200),
        ("connection.name", KEY),  # a key-shaped value is not quoted in any field
        ("destination.list_id", KEY),
        ("mapping.email", {"column": KEY}),
    ],
)
def test_a_pasted_key_is_never_echoed(path, value):
    with pytest.raises(DefinitionError) as caught:
        parse_definition(with_change(path, value), source="vip.json")
    assert caught.value.field == path
    message = str(caught.value)
    assert str(value) not in message and KEY not in message
    assert "not shown" in message


def test_the_api_key_secret_error_says_what_belongs_there():
    with pytest.raises(DefinitionError) as caught:
        parse_definition(with_change("connection.api_key_secret", KEY))
    assert "name of the Key Vault secret" in caught.value.detail
    assert "not the key itself" in caught.value.detail


def test_no_message_uses_jsonschemas_own_text_which_quotes_values():
    # maxLength has no rule of ours; jsonschema would say "'xxx...' is too long".
    with pytest.raises(DefinitionError) as caught:
        parse_definition(with_change("connection.display_name", KEY + "x" * 300))
    assert KEY not in str(caught.value)


def test_the_name_pattern_is_the_one_the_api_and_the_cli_check():
    from shared.names import EXPORT_NAME_PATTERN

    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["properties"]["name"]["pattern"] == f"^{EXPORT_NAME_PATTERN}$"
    assert schema["properties"]["connection"]["properties"]["name"]["pattern"] == (
        f"^{EXPORT_NAME_PATTERN}$"
    )
