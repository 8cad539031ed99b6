"""Service configuration: a TOML file plus ``MINIPAY_*`` environment overrides (pydantic-settings).

Example ``minipay.toml``::

    database_url = "postgresql+asyncpg://minipay@127.0.0.1:5432/minipay"
    public_base_url = "https://pay.example.com"      # WeChat calls {public_base_url}/wechatpay/notify/...
    admin_api_keys = ["adm_..."]

    [[institutions]]
    name = "main"
    appid = "wx8888888888888888"
    mch_id = "1900000109"
    api_key = "..."                                  # 32 letters/digits
    sign_type = "HMAC-SHA256"
    region = "HK"
    cert_pem = "/etc/minipay/apiclient_cert.pem"     # mutual TLS for refunds
    key_pem = "/etc/minipay/apiclient_key.pem"

    [[sub_merchants]]
    institution = "main"
    sub_mch_id = "1900000110"
    sub_appid = "wx1234567890abcdef"
    app_secret = "..."                               # the Mini Program's AppSecret (jscode2session)
    currency = "HKD"
    api_keys = ["sk_..."]                            # keys of *this service* for that sub-merchant

Environment: ``MINIPAY_CONFIG`` names the file; ``MINIPAY_DATABASE_URL``, ``MINIPAY_PUBLIC_BASE_URL`` etc.
override single values; lists take JSON (``MINIPAY_ADMIN_API_KEYS='["..."]'``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from minipay.protocol import DEFAULT_CURRENCIES, ApiKey

__all__ = [
    "DEFAULT_DATABASE_URL",
    "SHUTDOWN_GRACE",
    "InstitutionSettings",
    "Settings",
    "SubMerchantSettings",
    "load_settings",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///minipay.db"

#: Real seconds a stopping app waits for its background tasks (worker, webhook dispatcher) to return
#: after setting their stop event, before it cancels them.
SHUTDOWN_GRACE = 10.0


class InstitutionSettings(BaseModel):
    """An institution (service provider): ``appid`` + ``mch_id`` and the v2 API key that signs everything."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a rejected key must not be echoed

    name: str = "default"
    appid: str
    mch_id: str
    api_key: SecretStr
    sign_type: Literal["MD5", "HMAC-SHA256"] = "MD5"
    region: Literal["HK", "US"] = "HK"
    base_url: str | None = None  # an explicit WeChat host (the sandbox in sandbox mode)
    # Ordered hosts tried when the first cannot be reached ("US", "HK" or base URLs); all Global hosts
    # reach the same back end (spec 2.1), so e.g. region "HK" + failover ["US"].
    failover: list[str] = Field(default_factory=list)
    login_base_url: str = "https://api.weixin.qq.com"
    cert_pem: Path | None = None
    key_pem: Path | None = None
    p12: Path | None = None
    p12_password: SecretStr | None = None
    #: The CA (PEM file) WeChat's hosts are verified against; default: the system's trust store.
    #: Sandbox mode sets the sandbox's own CA.
    ca_cert: Path | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_retries: int = Field(default=2, ge=0, le=5)  # the SDK's own retries of safe failures

    @field_validator("api_key")
    @classmethod
    def _key_shape(cls, value: SecretStr) -> SecretStr:
        ApiKey(value.get_secret_value())  # raises ConfigurationError without echoing the value
        return value

    def key(self) -> ApiKey:
        return ApiKey(self.api_key.get_secret_value())


class SubMerchantSettings(BaseModel):
    """A sub-merchant of an institution, with the service API keys its own systems use."""

    model_config = ConfigDict(hide_input_in_errors=True)

    institution: str = "default"
    sub_mch_id: str
    sub_appid: str
    app_secret: SecretStr
    currency: str
    api_keys: list[SecretStr] = Field(default_factory=list)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return DEFAULT_CURRENCIES.check(value, "currency")


@dataclass(frozen=True)
class _Lookups:
    source: tuple[list[InstitutionSettings], list[SubMerchantSettings]]
    sizes: tuple[int, int]
    institutions: dict[str, InstitutionSettings]
    by_merchant: dict[tuple[str, str], InstitutionSettings]
    sub_merchants: dict[str, SubMerchantSettings]


class Settings(BaseSettings):
    """Everything the service needs; see the module docstring for the file format."""

    model_config = SettingsConfigDict(env_prefix="MINIPAY_", extra="forbid", toml_file=None, hide_input_in_errors=True)

    database_url: str = DEFAULT_DATABASE_URL
    public_base_url: str = "http://127.0.0.1:8000"
    admin_api_keys: list[SecretStr] = Field(default_factory=list)
    institutions: list[InstitutionSettings] = Field(default_factory=list)
    sub_merchants: list[SubMerchantSettings] = Field(default_factory=list)
    payment_expires_in: int = Field(default=1800, ge=60, le=7 * 24 * 3600)  # seconds, when the caller gives none
    notify_max_bytes: int = 65536
    # Seconds a client has to send a whole request body (0: no bound), and, tighter, a WeChat
    # notification body; notification bodies read at once (one more is answered 503 FAIL at once).
    request_read_timeout: float = Field(default=30.0, ge=0)
    notify_read_timeout: float = Field(default=10.0, gt=0)
    notify_max_concurrent_reads: int = Field(default=64, ge=1)
    allow_local_notify_url: bool = False  # sandbox mode: the sandbox calls back on loopback
    # Webhook endpoints on localhost or a private/loopback/link-local IP are refused unless this is on
    # (sandbox mode, local development): a sub-merchant key must not aim the service at internal hosts.
    allow_private_webhook_urls: bool = False
    max_webhook_endpoints: int = Field(default=16, ge=1, le=1000)  # per API key (each sub-merchant, the admin)
    run_migrations: bool = True  # run Alembic at start-up
    webhook_dispatch: bool = True  # deliver due webhooks from the app (besides the worker)
    webhook_dispatch_interval: float = 2.0
    webhook_timeout: float = 10.0  # real seconds for a whole delivery attempt, answer included
    webhook_concurrency: int = Field(default=16, ge=1, le=1000)  # attempts in flight per process
    webhook_per_endpoint: int = Field(default=2, ge=1, le=100)  # attempts in flight to one endpoint
    webhook_breaker_threshold: int = Field(default=5, ge=1)  # consecutive failures that pause an endpoint
    sql_echo: bool = False
    # Logs of `minipay serve`: "text" (one readable line) or "json" (one object a line, for a log
    # collector); unset: text on a terminal, json otherwise. See minipay.server.logs.
    log_format: Literal["text", "json"] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # OpenTelemetry spans (extra minipay[otel]): unset = on when an OTLP endpoint is configured in the
    # standard OTEL_EXPORTER_OTLP_* environment; true/false force it. See minipay.server.tracing.
    tracing: bool | None = None
    # The operations pages: /metrics, and the API description (/docs, /redoc, /openapi.json). Off: 404.
    # With ops_api_keys set, both answer only to "Authorization: Bearer <one of those keys>" (else 401).
    metrics_enabled: bool = True
    docs_enabled: bool = True
    ops_api_keys: list[SecretStr] = Field(default_factory=list)
    # Console sign-in: this many failed attempts from one client address within the window (seconds)
    # and that address gets 429 with Retry-After until the oldest failure leaves the window.
    console_signin_limit: int = Field(default=10, ge=1, le=10_000)
    console_signin_window: float = Field(default=300.0, gt=0)

    _index: _Lookups | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then the environment, then the TOML file, then defaults.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        names = [i.name for i in self.institutions]
        if len(set(names)) != len(names):
            raise ValueError("institution names must be unique")
        ids = [s.sub_mch_id for s in self.sub_merchants]
        if len(set(ids)) != len(ids):
            raise ValueError("sub_mch_id values must be unique")
        for sub in self.sub_merchants:
            if sub.institution not in names:
                raise ValueError(f"sub-merchant {sub.sub_mch_id} names unknown institution {sub.institution!r}")
        keys = [k.get_secret_value() for k in self.admin_api_keys]
        keys += [k.get_secret_value() for s in self.sub_merchants for k in s.api_keys]
        keys += [k.get_secret_value() for k in self.ops_api_keys]
        if len(set(keys)) != len(keys):
            raise ValueError("every service API key must be unique")
        if any(len(k) < 16 for k in keys):
            raise ValueError("service API keys must be at least 16 characters")
        parts = urlsplit(self.public_base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("public_base_url must be an http(s) URL without query or fragment")
        self.public_base_url = self.public_base_url.rstrip("/")
        return self

    @property
    def configured(self) -> bool:
        """True when at least one institution is configured (otherwise ``minipay serve`` uses sandbox mode)."""
        return bool(self.institutions)

    def institution(self, name: str) -> InstitutionSettings:
        found = self._lookups().institutions.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def institution_for(self, appid: str | None, mch_id: str | None) -> InstitutionSettings | None:
        """The institution with that ``appid`` and ``mch_id`` (what a WeChat notification names), or None."""
        return self._lookups().by_merchant.get((appid or "", mch_id or ""))

    def sub_merchant(self, sub_mch_id: str) -> SubMerchantSettings | None:
        return self._lookups().sub_merchants.get(sub_mch_id)

    def _lookups(self) -> _Lookups:
        # Looked up on every request: indexed once, and again only when the lists were replaced or
        # grew (``model_copy(update=...)``, a test appending a sub-merchant).
        # The private attribute read from pydantic's own store: ``self._index`` goes through
        # BaseModel.__getattr__ (~1.7 us, half the look-up, on every request).
        private = self.__pydantic_private__
        index: _Lookups | None = private.get("_index") if private is not None else None
        if (
            index is None
            or index.source[0] is not self.institutions
            or index.source[1] is not self.sub_merchants
            or index.sizes != (len(self.institutions), len(self.sub_merchants))
        ):
            index = _Lookups(
                source=(self.institutions, self.sub_merchants),
                sizes=(len(self.institutions), len(self.sub_merchants)),
                institutions={i.name: i for i in self.institutions},
                by_merchant={(i.appid, i.mch_id): i for i in self.institutions},
                sub_merchants={s.sub_mch_id: s for s in self.sub_merchants},
            )
            self._index = index
        return index


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: object) -> Settings:
    """Read the TOML file ``path`` (default: ``$MINIPAY_CONFIG``, else none) with env overrides."""
    chosen = path if path is not None else os.environ.get("MINIPAY_CONFIG")
    if chosen is None:
        return Settings(**overrides)  # type: ignore[arg-type]
    file = Path(chosen)
    if not file.is_file():
        raise FileNotFoundError(f"configuration file not found: {file}")

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=file)

    return _FileSettings(**overrides)  # type: ignore[arg-type]
