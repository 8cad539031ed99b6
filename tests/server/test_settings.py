"""Configuration: TOML file, environment overrides, validation without leaking secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from minipay.server.settings import load_settings

TOML = """
database_url = "sqlite+aiosqlite:///from-file.db"
public_base_url = "https://pay.example.com/"
admin_api_keys = ["adm_0123456789abcdef0123"]

[[institutions]]
name = "main"
appid = "wx8888888888888888"
mch_id = "1900000109"
api_key = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"
sign_type = "HMAC-SHA256"

[[sub_merchants]]
institution = "main"
sub_mch_id = "1900000110"
sub_appid = "wx1234567890abcdef"
app_secret = "5f2c0b7a9d3e4f6a8b1c2d3e4f5a6b7c"
currency = "HKD"
api_keys = ["sk_0123456789abcdef0123"]
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("MINIPAY_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_toml_file_with_env_overrides(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "minipay.toml"
    path.write_text(TOML)
    settings = load_settings(path)
    assert settings.configured
    assert settings.database_url == "sqlite+aiosqlite:///from-file.db"
    assert settings.public_base_url == "https://pay.example.com"
    assert settings.institution("main").sign_type == "HMAC-SHA256"
    clean_env.setenv("MINIPAY_DATABASE_URL", "postgresql+asyncpg://u@127.0.0.1/db")
    clean_env.setenv("MINIPAY_CONFIG", str(path))
    assert load_settings().database_url == "postgresql+asyncpg://u@127.0.0.1/db"


def test_no_configuration_means_sandbox_mode(clean_env: pytest.MonkeyPatch) -> None:
    assert not load_settings().configured


def test_secrets_never_appear_in_repr_or_errors(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "minipay.toml"
    path.write_text(TOML)
    settings = load_settings(path)
    text = repr(settings)
    for secret in ("a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6", "5f2c0b7a9d3e4f6a8b1c2d3e4f5a6b7c", "sk_0123456789abcdef0123"):
        assert secret not in text
    path.write_text(TOML.replace("a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6", "tooshort-secret"))
    with pytest.raises(ValidationError) as info:
        load_settings(path)
    assert "tooshort-secret" not in str(info.value)


def test_inconsistent_configuration_is_refused(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "minipay.toml"
    path.write_text(TOML.replace('institution = "main"', 'institution = "other"'))
    with pytest.raises(ValidationError, match="unknown institution"):
        load_settings(path)
    path.write_text(TOML.replace("sk_0123456789abcdef0123", "adm_0123456789abcdef0123"))
    with pytest.raises(ValidationError, match="unique"):
        load_settings(path)
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml")


def test_public_base_url_must_be_an_http_url(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "minipay.toml"
    path.write_text(TOML.replace("https://pay.example.com/", "ftp://pay.example.com"))
    with pytest.raises(ValidationError, match="public_base_url"):
        load_settings(path)


def test_the_gateway_fails_over_to_the_configured_hosts(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    from minipay.server.adapters import ClientGateway

    plain = tmp_path / "plain.toml"
    plain.write_text(TOML)
    with_failover = tmp_path / "failover.toml"
    with_failover.write_text(TOML.replace('sign_type = "HMAC-SHA256"', 'sign_type = "HMAC-SHA256"\nfailover = ["US"]'))
    settings = load_settings(with_failover)
    assert settings.institution("main").failover == ["US"]
    hosts = ClientGateway(settings).client_for("1900000110").hosts
    assert list(hosts) == ["https://apihk.mch.weixin.qq.com", "https://apius.mch.weixin.qq.com"]
    assert list(ClientGateway(load_settings(plain)).client_for("1900000110").hosts) == [
        "https://apihk.mch.weixin.qq.com"
    ]


@pytest.mark.anyio
async def test_the_worker_s_own_bill_source_builds_its_clients_as_the_gateway_does(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Without the service's gateway, the reconciler's bill source opens one of its own: the same
    failover hosts (and certificate, CA, timeouts) as the service's calls, closed with the source."""
    from minipay.server.worker import ClientBillSource

    path = tmp_path / "failover.toml"
    path.write_text(TOML.replace('sign_type = "HMAC-SHA256"', 'sign_type = "HMAC-SHA256"\nfailover = ["US"]'))
    settings = load_settings(path)
    source = ClientBillSource(settings)
    sub = settings.sub_merchant("1900000110")
    assert sub is not None
    client = source._client(sub)
    assert list(client.hosts) == ["https://apihk.mch.weixin.qq.com", "https://apius.mch.weixin.qq.com"]
    assert source._client(sub) is client
    await source.aclose()
    assert source._client(sub) is not client  # closed clients are not handed out again
    await source.aclose()


def test_lookups_by_id_follow_a_copy_with_other_sub_merchants(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "minipay.toml"
    path.write_text(TOML)
    settings = load_settings(path)
    sub = settings.sub_merchant("1900000110")
    assert sub is not None
    assert sub.currency == "HKD"
    assert settings.sub_merchant("1900000999") is None
    main = settings.institution_for("wx8888888888888888", "1900000109")
    assert main is not None
    assert main.name == "main"
    assert settings.institution_for("wx8888888888888888", "1900000999") is None
    with pytest.raises(KeyError):
        settings.institution("other")

    other = sub.model_copy(update={"sub_mch_id": "1900000111", "currency": "JPY", "api_keys": []})
    copied = settings.model_copy(update={"sub_merchants": [other]})
    assert copied.sub_merchant("1900000110") is None
    found = copied.sub_merchant("1900000111")
    assert found is not None
    assert found.currency == "JPY"
    settings.sub_merchants.append(other)  # the same list, grown
    assert settings.sub_merchant("1900000111") is found
    assert "_index" not in repr(settings)
