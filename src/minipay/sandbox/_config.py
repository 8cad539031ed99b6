"""The sandbox world: institutions, sub-merchants, mini programs, rates and behaviour switches.

``SandboxConfig.default()`` is the default world; ``SandboxConfig.from_toml(path)`` reads a file
of the same shape (see ``docs/sandbox.md``). Every switch here is an UNCONFIRMED point of the
spec (section 18.1) that a user may need to flip.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from minipay.protocol import DEFAULT_CURRENCIES, ApiKey, ConfigurationError, require_aware

__all__ = [
    "ClockConfig",
    "Institution",
    "NotifyConfig",
    "NotifyMode",
    "RulesConfig",
    "SandboxConfig",
    "SubMerchant",
    "TLSConfig",
]

#: Bounded numbers for the switches below: a NaN speed, a negative delay or a 25 o'clock bill would
#: otherwise be accepted and break the clock or the schedule at run time, far from the config.
_Seconds = Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]
_Count = Annotated[int, Field(ge=0)]
_Positive = Annotated[int, Field(ge=1)]

NotifyMode = Literal["normal", "twice", "twice-concurrently", "late", "never"]
NOTIFY_MODES: tuple[str, ...] = ("normal", "twice", "twice-concurrently", "late", "never")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SubMerchant(_Model):
    """A sub-merchant of an institution, bound to one mini program."""

    sub_mch_id: str
    settlement_currency: str
    sub_appid: str
    app_secret: str = Field(repr=False)
    allowed_fee_types: tuple[str, ...] = ()
    #: CNY already in today's pool at start (only used when ``rules.cny_pool`` is on).
    cny_pool: int = 0
    #: Refund notifications go here when a refund request carries no ``notify_url`` (the
    #: merchant-platform setting of real WeChat).
    refund_notify_url: str | None = None

    @field_validator("settlement_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return DEFAULT_CURRENCIES.check(value, "settlement_currency")

    @property
    def fee_types(self) -> frozenset[str]:
        """The ``fee_type`` values this sub-merchant may price in (spec 16.1 rule 2)."""
        return frozenset(self.allowed_fee_types or (self.settlement_currency, "CNY"))


class Institution(_Model):
    """An institution (service provider): ``appid`` + ``mch_id`` + the v2 API key."""

    appid: str
    mch_id: str
    api_key: str = Field(repr=False)
    sub_merchants: tuple[SubMerchant, ...]

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: str) -> str:
        ApiKey(value)  # raises ConfigurationError without echoing the value
        return value

    @property
    def key(self) -> ApiKey:
        return ApiKey(self.api_key)


class ClockConfig(_Model):
    """``realtime``: the clock follows real time times ``speed`` (else it moves only when told)."""

    realtime: bool = False
    speed: Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)] = 1.0


class NotifyConfig(_Model):
    mode: NotifyMode = "normal"
    reply_timeout: _Seconds = 5.0
    late_seconds: _Count = 300
    #: Host names (or ``host:port``) that notifications may reach besides loopback.
    allow_hosts: tuple[str, ...] = ()
    #: Name of the exchange-rate field in payment notifications (spec 19 #1).
    rate_field: Literal["rate_value", "rate"] = "rate_value"
    include_sign_type: bool = True
    #: Gaps between attempts, in seconds (spec 7.4).
    schedule: tuple[_Positive, ...] = (
        15,
        15,
        30,
        180,
        600,
        1200,
        1800,
        1800,
        1800,
        3600,
        10800,
        10800,
        10800,
        21600,
        21600,
    )


class RulesConfig(_Model):
    reentry_error: Literal["INVALID_REQUEST", "OUT_TRADE_NO_USED"] = "INVALID_REQUEST"
    prepay_life: _Positive = 7200
    close_min_age: _Count = 300
    close_too_early_code: str = "TRADE_STATE_ERROR"
    #: An order past ``time_expire`` reads as CLOSED (else NOTPAY, not payable).
    auto_close_expired: bool = False
    time_expire_min_gap: _Count = 60
    refund_delay: _Count = 60
    refund_cap: _Positive = 50
    #: Minimum seconds between two refunds of one order (0 = off; WeChat domestic: 60).
    refund_spacing: _Count = 0
    #: Refunds draw on today's CNY takings of the sub-merchant; short -> NOTENOUGH.
    cny_pool: bool = False
    insufficient_funds_code: str = "NOTENOUGH"
    refund_window_days: _Positive = 365
    bill_ready_hour: Annotated[int, Field(ge=0, le=23)] = 9
    #: The downloaded bill's layout: ``documented`` (Chinese headers, a column set per bill_type,
    #: Chinese summary, fees to 5 decimals) or ``english`` (the 28-column English layout).
    bill_layout: Literal["documented", "english"] = "english"
    #: Service fee in the bill, in basis points of the amount.
    fee_rate_bp: Annotated[int, Field(ge=0, le=10_000)] = 60
    payer_balance: _Count = 100_000_000
    code_life: _Positive = 300


class TLSConfig(_Model):
    #: ``/secapi/*`` demands the institution's client certificate (set by ``minipay sandbox --tls``).
    require_client_cert: bool = False


_DEFAULT_WORLD: dict[str, Any] = {
    "institutions": [
        {
            "appid": "wx8888888888888888",
            "mch_id": "1900000109",
            "api_key": "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6",
            "sub_merchants": [
                {
                    "sub_mch_id": "1900000110",
                    "settlement_currency": "HKD",
                    "sub_appid": "wx1234567890abcdef",
                    "app_secret": "5f2c0b7a9d3e4f6a8b1c2d3e4f5a6b7c",
                },
                {
                    "sub_mch_id": "1900000111",
                    "settlement_currency": "JPY",
                    "sub_appid": "wx2234567890abcdef",
                    "app_secret": "8e1d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
                },
            ],
        }
    ],
    "rates": {"HKD": 92000000, "JPY": 4800000, "USD": 720000000, "EUR": 780000000, "GBP": 910000000},
}


class SandboxConfig(_Model):
    """The whole sandbox configuration (a frozen pydantic model).

    >>> cfg = SandboxConfig.default()
    >>> [s.settlement_currency for s in cfg.institutions[0].sub_merchants]
    ['HKD', 'JPY']
    """

    institutions: tuple[Institution, ...]
    #: fee_type -> CNY per major unit x 10^8.
    rates: Mapping[str, int]
    #: yyyyMMdd -> {fee_type: rate}: overrides for given China days.
    rates_by_date: Mapping[str, Mapping[str, int]] = Field(default_factory=dict)
    seed: int | None = None
    start: datetime | None = None
    clock: ClockConfig = ClockConfig()
    notify: NotifyConfig = NotifyConfig()
    rules: RulesConfig = RulesConfig()
    tls: TLSConfig = TLSConfig()

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else require_aware(value, "start")

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen_mch: set[str] = set()
        seen_sub: set[str] = set()
        seen_app: set[str] = set()
        for inst in self.institutions:
            if inst.mch_id in seen_mch:
                raise ConfigurationError(f"duplicate mch_id {inst.mch_id}")
            seen_mch.add(inst.mch_id)
            for sub in inst.sub_merchants:
                if sub.sub_mch_id in seen_sub:
                    raise ConfigurationError(f"duplicate sub_mch_id {sub.sub_mch_id}")
                seen_sub.add(sub.sub_mch_id)
                if sub.sub_appid in seen_app:
                    raise ConfigurationError(f"mini program {sub.sub_appid} is bound twice")
                seen_app.add(sub.sub_appid)
        for code in self.rates:
            DEFAULT_CURRENCIES.check(code, "rates")
        return self

    @classmethod
    def default(cls) -> SandboxConfig:
        """The default world (see ``docs/sandbox.md``)."""
        return cls.model_validate(_DEFAULT_WORLD)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SandboxConfig:
        """A config from a dict; missing top-level keys come from the default world."""
        return cls._validated({**_DEFAULT_WORLD, **dict(data)})

    @classmethod
    def _validated(cls, merged: Mapping[str, Any]) -> SandboxConfig:
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            # Never echo input values: they may be API keys or app secrets.
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_input=False)
            )
            raise ConfigurationError(f"invalid sandbox config: {problems}") from None
        except ValueError as exc:
            raise ConfigurationError(f"invalid sandbox config: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> SandboxConfig:
        """Read a TOML file; keys it omits keep their default values."""
        with Path(path).open("rb") as fh:
            return cls.from_dict(tomllib.load(fh))

    def replace(self, **changes: Any) -> SandboxConfig:
        """A copy with some top-level fields replaced (validated again; ConfigurationError names
        the bad field without echoing values)."""
        return self._validated({**self.model_dump(), **changes})
