"""URLs are shown without what may be a secret in them: settings errors, storage errors."""

from __future__ import annotations

import pytest

from shared.errors import SettingsError
from shared.redact import has_credentials, redact_url
from shared.settings import Settings

BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "SEGMENTS_STORAGE": "x=y"}
SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://user:{SECRET}@a.klaviyo.com/api", "https://a.klaviyo.com/api"),
        (f"http://evil.example:8080/?key={SECRET}", "http://evil.example:8080/"),
        (f"https://a.klaviyo.com/#{SECRET}", "https://a.klaviyo.com/"),
        (f"https://[::1]:{SECRET}", "(a malformed URL, not shown)"),
        (f"pk_{SECRET}", "(not a URL, not shown)"),  # a key pasted in place of the URL
        ("https://a.klaviyo.com", "https://a.klaviyo.com"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_has_credentials():
    assert has_credentials(f"https://u:{SECRET}@h") and has_credentials("https://h/?sig=x")
    assert not has_credentials("https://a.klaviyo.com/api")


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{SECRET}@evil.example",  # http and credentials
        f"https://user:{SECRET}@a.klaviyo.com",  # https, but credentials have no place here
        f"https://a.klaviyo.com/?api_key={SECRET}",
        f"ftp://{SECRET}@a.klaviyo.com",
        f"pk_{SECRET}",
    ],
)
def test_klaviyo_base_url_errors_never_echo_credentials(url):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**BASE, "KLAVIYO_BASE_URL": url})
    assert caught.value.name == "KLAVIYO_BASE_URL"
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


def test_key_vault_url_errors_never_echo_credentials():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**BASE, "KEY_VAULT_URL": f"http://u:{SECRET}@vault.example"})
    assert caught.value.name == "KEY_VAULT_URL" and SECRET not in str(caught.value)
    assert "http://vault.example" in str(caught.value)
