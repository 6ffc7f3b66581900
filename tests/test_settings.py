"""Settings: read once, validated, and documented where users look for them."""

from __future__ import annotations

import json
import re

import pytest

from shared.errors import SettingsError
from shared.settings import SETTING_NAMES, Settings
from tests.exports import ROOT

BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "SEGMENTS_STORAGE": "x=y"}


def test_defaults():
    settings = Settings.from_env(BASE)
    assert settings.klaviyo_base_url == "https://a.klaviyo.com"
    assert settings.klaviyo_revision == "2026-07-15"
    assert settings.state_container == "klaviyo-export"
    assert settings.key_vault_url is None and settings.local_api_key is None


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"SEGMENTS_STORAGE": "x=y"}, "AzureWebJobsStorage"),
        ({"AzureWebJobsStorage": "x=y"}, "SEGMENTS_STORAGE"),
        ({**BASE, "KLAVIYO_BASE_URL": "http://a.klaviyo.com"}, "KLAVIYO_BASE_URL"),
        ({**BASE, "KEY_VAULT_URL": "http://vault"}, "KEY_VAULT_URL"),
        ({**BASE, "KEY_VAULT_CACHE_SECONDS": "soon"}, "KEY_VAULT_CACHE_SECONDS"),
    ],
)
def test_a_missing_or_bad_setting_fails_with_its_name(env, name):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert info.value.name == name and name in str(info.value)


def test_plain_http_only_for_a_loopback_sandbox():
    assert Settings.from_env(
        {**BASE, "KLAVIYO_BASE_URL": "http://127.0.0.1:8787/"}
    ).klaviyo_base_url == ("http://127.0.0.1:8787")


def test_identity_based_connections():
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage__blobServiceUri": "https://app.blob.core.windows.net",
            "AzureWebJobsStorage__queueServiceUri": "https://app.queue.core.windows.net",
            "AzureWebJobsStorage__clientId": "cid",
            "SEGMENTS_STORAGE__accountName": "segs",
        }
    )
    assert settings.app_storage.queue_service_uri == "https://app.queue.core.windows.net"
    assert settings.app_storage.client_id == "cid"
    assert settings.segments_storage.blob_service_uri == "https://segs.blob.core.windows.net"


def test_reprs_never_show_keys_or_connection_strings():
    secret = "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0"
    settings = Settings.from_env(
        {"AzureWebJobsStorage": secret, "SEGMENTS_STORAGE": secret, "KLAVIYO_API_KEY": "pk_live_x"}
    )
    assert "c2VjcmV0" not in repr(settings) and "pk_live_x" not in repr(settings)


def test_every_setting_the_code_reads_is_declared_and_documented():
    code = (ROOT / "shared" / "settings.py").read_text()
    read = set(re.findall(r'env\.get\(\s*"([A-Za-z_]+)"', code))
    suffixes = re.findall(r'f"\{prefix\}__([A-Za-z]+)"', code)
    read |= {f"{p}__{s}" for p in ("AzureWebJobsStorage", "SEGMENTS_STORAGE") for s in suffixes}
    assert read <= set(SETTING_NAMES)
    readme = (ROOT / "README.md").read_text()
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    for name in SETTING_NAMES:
        base = name.split("__")[0]
        assert f"`{base}" in readme or f"`{name}" in readme, f"{name} missing from README"
        if "__" not in name:
            assert name in sample, f"{name} missing from local.settings.sample.json"
