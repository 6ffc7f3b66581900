"""CDM metadata: the real model.json samples, the manifest form, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from shared.cdm import (
    MAX_METADATA_BYTES,
    CdmEntity,
    CdmModel,
    CsvFormat,
    load_cdm,
    location_path,
    parse_manifest,
    parse_model_json,
)
from shared.errors import InputError

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "cdm-samples"

NORTHWIND_CUSTOMER = (
    "CustomerID",
    "CompanyName",
    "ContactName",
    "ContactTitle",
    "Address",
    "City",
    "Region",
    "PostalCode",
    "Country",
    "Phone",
    "Fax",
)


def sample(name: str) -> CdmModel:
    return parse_model_json((SAMPLES / name).read_bytes(), source=name)


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.model.json")), ids=lambda p: p.name)
def test_every_sample_parses(path):
    model = parse_model_json(path.read_bytes(), source=path.name)
    assert model.entities
    assert model.source == path.name
    for entity in model.entities:
        assert len(entity.attributes) == len(entity.data_types)


def test_name_on_load_sample():
    model = sample("name-on-load.model.json")
    assert model.name == "OrdersProductsCustomersLinked"
    (customers,) = model.entities
    assert customers.attributes == ("CustomerID",)
    assert customers.data_types == ("string",)
    (partition,) = customers.partitions
    assert partition.name == "2016"
    assert partition.location == "http://www.azure.com/1123123-12123-12312/someurl/2016.csv"
    assert partition.path == "1123123-12123-12312/someurl/2016.csv"
    assert partition.csv == CsvFormat(
        header=False,
        delimiter=",",
        quote_style="csv",
        csv_style="CsvStyle.QuoteAlways",
        encoding="UTF-8",
    )


def test_reference_entities_are_listed_without_attributes():
    model = sample("foundation-import.model.json")
    assert [(e.name, e.kind) for e in model.entities] == [
        ("Orders", "ReferenceEntity"),
        ("Customers", "LocalEntity"),
    ]
    assert model.entity("Orders").attributes == ()
    assert model.entity("Customers").attributes == NORTHWIND_CUSTOMER


def test_attributes_keep_column_order_beside_traits_and_annotations():
    model = sample("from-and-to-data.model.json")
    assert [e.name for e in model.entities] == ["Companies", "Customers", "Orders"]
    assert model.entity("Companies").attributes == ("CompanyId", "CompanyName")
    assert model.entity("Companies").partitions == ()
    assert model.entity("Customers").attributes == (
        "CustomerID",
        "FkCompanyId",
        *NORTHWIND_CUSTOMER[2:],
    )


def test_boolean_headers_and_absent_settings_take_cdm_defaults():
    customers = sample("read-local-save-adls.model.json").entity("Customers")
    (partition,) = customers.partitions
    assert partition.csv == CsvFormat(header=True, delimiter=",")
    assert partition.csv.quote_style == "csv"
    assert partition.csv.encoding == "UTF-8"
    assert partition.path == "<ROOTPATH>/Customers/partition-data.csv"


def test_string_headers_semicolon_and_quote_style_none():
    model = sample("csv-partition-traits.model.json")
    entity = model.entity("someEntity")
    assert entity.attributes == ()
    (partition,) = entity.partitions
    # fileFormatSettings win over the partition's CSV trait, as in CDM's own reader.
    assert partition.csv == CsvFormat(
        header=False,
        delimiter=";",
        quote_style="none",
        csv_style="CsvStyle.QuoteAfterDelimiter",
        encoding="ASCII",
    )


def test_large_model():
    assert (SAMPLES / "cdm-folder-to-data.model.json").stat().st_size > 500_000
    model = sample("cdm-folder-to-data.model.json")
    assert [e.name for e in model.entities] == ["Account", "Address", "EpisodeOfCare"]
    assert sum(len(e.attributes) for e in model.entities) == 289
    account = model.entity("Account")
    assert account.attributes[:3] == ("createdOn", "createdBy", "modifiedOn")
    assert all(p.csv and p.csv.header for e in model.entities for p in e.partitions)


def test_trait_arguments_apply_when_there_are_no_file_format_settings():
    doc = {
        "name": "m",
        "entities": [
            {
                "$type": "LocalEntity",
                "name": "E",
                "attributes": [{"name": "a", "dataType": "string"}],
                "partitions": [
                    {
                        "location": "E.csv",
                        "cdm:traits": [
                            {
                                "traitReference": "is.partition.format.CSV",
                                "arguments": [
                                    {"name": "columnHeaders", "value": "true"},
                                    {"name": "delimiter", "value": "|"},
                                ],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (partition,) = (
        parse_model_json(json.dumps(doc).encode(), source="m.json").entities[0].partitions
    )
    assert partition.csv == CsvFormat(header=True, delimiter="|")


def test_non_csv_partition_has_no_csv_format():
    doc = {
        "entities": [
            {
                "name": "E",
                "attributes": [],
                "partitions": [
                    {"location": "E.parquet", "fileFormatSettings": {"$type": "ParquetSettings"}}
                ],
            }
        ]
    }
    (partition,) = (
        parse_model_json(json.dumps(doc).encode(), source="m.json").entities[0].partitions
    )
    assert partition.csv is None


def test_entity_lookup_exact_then_case_insensitive():
    model = CdmModel("m", (CdmEntity("Customers"), CdmEntity("VIPs")), source="c/f/model.json")
    assert model.entity("VIPs").name == "VIPs"
    assert model.entity("customers").name == "Customers"


def test_missing_entity_names_the_file_and_what_it_has():
    model = sample("foundation-import.model.json")
    with pytest.raises(InputError) as err:
        model.entity("Newsletter")
    assert err.value.file == "foundation-import.model.json"
    assert "'Newsletter'" in str(err.value)
    assert "'Orders', 'Customers'" in str(err.value)


def test_ambiguous_case_insensitive_match_is_an_error():
    model = CdmModel("m", (CdmEntity("Vip"), CdmEntity("VIP")), source="model.json")
    with pytest.raises(InputError):
        model.entity("vip")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"entities": [', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"name": "x"}', "no 'entities' list"),
        (b'{"entities": {}}', "no 'entities' list"),
    ],
)
def test_broken_model_json(body, expected):
    with pytest.raises(InputError) as err:
        parse_model_json(body, source="c/f/model.json")
    assert err.value.file == "c/f/model.json"
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"columnHeaders": "yes"}, "entities[0].partitions[0].fileFormatSettings.columnHeaders"),
        ({"delimiter": ";;"}, "entities[0].partitions[0].fileFormatSettings.delimiter"),
        (
            {"quoteStyle": "QuoteStyle.Fancy"},
            "entities[0].partitions[0].fileFormatSettings.quoteStyle",
        ),
    ],
)
def test_unusable_csv_settings_name_the_field(settings, field):
    doc = {
        "entities": [
            {
                "name": "E",
                "attributes": [{"name": "a"}],
                "partitions": [
                    {
                        "location": "x.csv",
                        "fileFormatSettings": {"$type": "CsvFormatSettings", **settings},
                    }
                ],
            }
        ]
    }
    with pytest.raises(InputError) as err:
        parse_model_json(json.dumps(doc).encode(), source="model.json")
    assert err.value.field == field


def test_attribute_without_name_is_an_error():
    doc = {"entities": [{"name": "E", "attributes": [{"name": "a"}, {"dataType": "string"}]}]}
    with pytest.raises(InputError) as err:
        parse_model_json(json.dumps(doc).encode(), source="model.json")
    assert err.value.field == "entities[0].attributes[1]"


@pytest.mark.parametrize(
    ("location", "path"),
    [
        (
            "https://acct.blob.core.windows.net/segs/CI_1/dest/S/2024/01/02/0300/S_1.csv",
            "segs/CI_1/dest/S/2024/01/02/0300/S_1.csv",
        ),
        ("https://acct.blob.core.windows.net/segs/a%20b/S_1.csv", "segs/a b/S_1.csv"),
        ("adls:/dest/S_1.csv", "dest/S_1.csv"),
        ("S/2024/S_1.csv", "S/2024/S_1.csv"),
    ],
)
def test_location_path(location, path):
    assert location_path(location) == path


# ---------------------------------------------------------------- from Blob Storage


def test_load_cdm_reads_model_json(container):
    body = (SAMPLES / "name-on-load.model.json").read_bytes()
    container.upload_blob("CustomerInsights_1/dest/model.json", body)
    model = load_cdm(container, "/CustomerInsights_1/dest/")
    assert model.source == f"{container.container_name}/CustomerInsights_1/dest/model.json"
    assert model.entity("Customers").attributes == ("CustomerID",)


def test_load_cdm_reports_broken_model_json_with_its_path(container):
    container.upload_blob("CI/dest/model.json", b'{"entities": [}')
    with pytest.raises(InputError) as err:
        load_cdm(container, "CI/dest")
    assert err.value.file == f"{container.container_name}/CI/dest/model.json"


def manifest_fixture(container, folder: str) -> None:
    manifest = {
        "jsonSchemaSemanticVersion": "1.0.0",
        "manifestName": "default",
        "entities": [
            {
                "type": "LocalEntity",
                "entityName": "Newsletter",
                "entityPath": "Newsletter.cdm.json/Newsletter",
                "dataPartitions": [
                    {
                        "name": "Newsletter_1",
                        "location": "Newsletter/2024/05/06/0700/Newsletter_1.csv",
                        "exhibitsTraits": [
                            {
                                "traitReference": "is.partition.format.CSV",
                                "arguments": [
                                    {"name": "columnHeaders", "value": "true"},
                                    {"name": "delimiter", "value": ";"},
                                    {"name": "quoteStyle", "value": "QuoteStyle.Csv"},
                                    {"name": "encoding", "value": "UTF-8"},
                                ],
                            }
                        ],
                    },
                    {"location": "local:/Newsletter/2024/05/06/0700/Newsletter_2.csv"},
                ],
            },
            {
                "type": "ReferencedEntity",
                "entityName": "Account",
                "entityPath": "cdm:/core/applicationCommon/Account.cdm.json/Account",
            },
        ],
    }
    entity_document = {
        "jsonSchemaSemanticVersion": "1.0.0",
        "imports": [{"corpusPath": "cdm:/foundations.cdm.json"}],
        "definitions": [
            {
                "entityName": "Newsletter",
                "hasAttributes": [
                    {"name": "CustomerId", "dataType": "string"},
                    {
                        "attributeGroupReference": {
                            "attributeGroupName": "contact",
                            "members": [
                                {"name": "Email", "dataFormat": "String"},
                                {"name": "Phone", "dataType": {"dataTypeReference": "phone"}},
                            ],
                        }
                    },
                    {"name": "Country", "dataType": "string"},
                ],
            }
        ],
    }
    container.upload_blob(f"{folder}/default.manifest.cdm.json", json.dumps(manifest))
    container.upload_blob(f"{folder}/Newsletter.cdm.json", json.dumps(entity_document))


def test_load_cdm_reads_the_manifest_form(container):
    folder = "CustomerInsights_2/dest"
    manifest_fixture(container, folder)
    model = load_cdm(container, folder)
    assert model.name == "default"
    assert model.source == f"{container.container_name}/{folder}/default.manifest.cdm.json"
    entity = model.entity("Newsletter")
    assert entity.attributes == ("CustomerId", "Email", "Phone", "Country")
    assert entity.data_types == ("string", "String", "phone", "string")
    first, second = entity.partitions
    # Relative locations come back as paths from the container's root.
    assert first.path == f"{folder}/Newsletter/2024/05/06/0700/Newsletter_1.csv"
    assert first.csv == CsvFormat(header=True, delimiter=";")
    assert second.path == f"{folder}/Newsletter/2024/05/06/0700/Newsletter_2.csv"
    assert second.csv == CsvFormat()
    assert model.entity("Account").attributes == ()


def test_manifest_with_missing_entity_document(container):
    folder = "CI/dest"
    manifest_fixture(container, folder)
    container.delete_blob(f"{folder}/Newsletter.cdm.json")
    with pytest.raises(InputError) as err:
        load_cdm(container, folder)
    assert f"{container.container_name}/{folder}/Newsletter.cdm.json not found" in str(err.value)
    assert err.value.field == "entities[0]"


def test_manifest_without_the_declared_definition():
    manifest = {"entities": [{"entityName": "E", "entityPath": "E.cdm.json/E"}]}
    documents = {"f/E.cdm.json": json.dumps({"definitions": [{"entityName": "Other"}]}).encode()}
    with pytest.raises(InputError) as err:
        parse_manifest(
            json.dumps(manifest).encode(),
            path="f/x.manifest.cdm.json",
            read_document=documents.get,
        )
    assert err.value.file == "f/E.cdm.json"
    assert "'E'" in str(err.value)


def test_neither_model_json_nor_manifest(container):
    container.upload_blob("CI/dest/Seg/2024/01/01/0000/Seg_1.csv", b"a\n")
    with pytest.raises(InputError) as err:
        load_cdm(container, "CI/dest")
    assert str(err.value).endswith(
        f"no model.json or *.manifest.cdm.json in {container.container_name}/CI/dest"
    )


def test_several_manifests_prefer_default_or_fail(container):
    folder = "CI/dest"
    manifest_fixture(container, folder)
    container.upload_blob(f"{folder}/other.manifest.cdm.json", b'{"entities": []}')
    assert load_cdm(container, folder).name == "default"
    container.delete_blob(f"{folder}/default.manifest.cdm.json")
    container.upload_blob(f"{folder}/third.manifest.cdm.json", b'{"entities": []}')
    with pytest.raises(InputError, match="several manifests"):
        load_cdm(container, folder)


# -- the size cap ---------------------------------------------------------------------------


def _counting(blob_service, container):
    """The same container through a client that adds up the body bytes storage sends."""
    received: list[int] = []

    def hook(response) -> None:
        if response.http_request.method == "GET":
            received.append(int(response.http_response.headers.get("Content-Length", 0)))

    client = BlobServiceClient(
        blob_service.url, credential=blob_service.credential, raw_response_hook=hook
    )
    return client.get_container_client(container.container_name), received


def test_an_oversized_model_json_is_refused_without_downloading_it(blob_service, container):
    padding = b" " * (MAX_METADATA_BYTES + 4 * 1024 * 1024)
    container.upload_blob("CI/dest/model.json", b'{"entities": []' + padding + b"}")
    counted, received = _counting(blob_service, container)
    with pytest.raises(InputError) as caught:
        load_cdm(counted, "CI/dest")
    assert caught.value.file == f"{container.container_name}/CI/dest/model.json"
    assert f"is {len(padding) + 16:,} bytes" in str(caught.value)  # the size, not the range
    assert f"{MAX_METADATA_BYTES:,} bytes (16 MiB)" in str(caught.value)
    assert sum(received) <= MAX_METADATA_BYTES + 1  # a ranged read, never the whole blob


def test_an_oversized_entity_document_is_refused_with_its_name(container):
    manifest_fixture(container, "CI/dest")
    big = b'{"definitions": []' + b" " * (MAX_METADATA_BYTES + 1) + b"}"
    container.upload_blob("CI/dest/Newsletter.cdm.json", big, overwrite=True)
    with pytest.raises(InputError) as caught:
        load_cdm(container, "CI/dest")
    assert caught.value.file == f"{container.container_name}/CI/dest/Newsletter.cdm.json"


def test_an_empty_model_json_is_invalid_json_not_a_storage_error(container):
    container.upload_blob("CI/dest/model.json", b"")
    with pytest.raises(InputError, match="not valid JSON"):
        load_cdm(container, "CI/dest")
