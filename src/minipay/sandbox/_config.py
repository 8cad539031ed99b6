"""The sandbox world: institutions, sub-merchants, mini programs, rates and behaviour switches.

``SandboxConfig.default()`` is the default world; ``SandboxConfig.from_toml(path)`` reads a file
of the same shape (see ``docs/sandbox.md``). Every switch here is an UNCONFIRMED point of the
spec (section 18.1) that a user may need to flip.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from minipay.protocol import DEFAULT_CURRENCIES, ApiKey, ConfigurationError, require_aware

__all__ = [
    "PROFILES",
    "ClockConfig",
    "Effective",
    "Institution",
    "NotifyConfig",
    "NotifyMode",
    "Profile",
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

Profile = Literal["strict", "lenient"]
PROFILES: tuple[str, ...] = ("strict", "lenient")
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
    #: The name the payer sees on WeChat's pay sheet (``GET /sandbox/cashier``); default: "Merchant <sub_mch_id>".
    name: str = ""
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
    #: ``sign_type`` in payment notifications: True always, False never; unset (None): the
    #: profile decides (strict: left out of HMAC-SHA256 notifications, as they arrive live).
    include_sign_type: bool | None = None
    #: Asynchronous delivery: ``/sandbox/pay`` answers first and the first attempt follows
    #: ``first_delay`` real seconds later (drawn from the seeded ids). Unset: the profile decides
    #: (strict on); off, the first attempt is made before ``/sandbox/pay`` answers.
    asynchronous: bool | None = None
    #: Real seconds (low, high) between the payment and the first asynchronous delivery.
    first_delay: tuple[Annotated[float, Field(ge=0, le=60, allow_inf_nan=False)], ...] = (1.0, 3.0)

    @field_validator("first_delay")
    @classmethod
    def _delay_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) != 2 or value[0] > value[1]:
            raise ValueError("first_delay is [low, high] seconds with low <= high")
        return value

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
    """Business rules. ``profile`` picks the value of every switch left unset (None): ``strict``
    (what WeChat does as far as documented, else the stricter choice; ``minipay sandbox``,
    ``minipay serve`` and ``minipay demo`` default to it) or ``lenient`` (the Python API's default
    when ``profile`` is unset). Each switch set explicitly wins over the profile."""

    profile: Profile | None = None
    reentry_error: Literal["INVALID_REQUEST", "OUT_TRADE_NO_USED"] = "INVALID_REQUEST"
    prepay_life: _Positive = 7200
    close_min_age: _Count = 300
    close_too_early_code: str = "TRADE_STATE_ERROR"
    #: An order past ``time_expire`` reads as CLOSED (else NOTPAY, not payable).
    auto_close_expired: bool = False
    #: Minimum seconds from ``time_start`` to ``time_expire`` (strict 300, lenient 60).
    time_expire_min_gap: _Count | None = None
    refund_delay: _Count = 60
    refund_cap: _Positive = 50
    #: Minimum seconds between two refunds of one order, else FREQUENCY_LIMITED (0 = off;
    #: strict 60, lenient 0).
    refund_spacing: _Count | None = None
    #: Refunds draw on today's CNY takings of the sub-merchant; short -> NOTENOUGH (strict on).
    cny_pool: bool | None = None
    #: Missing required fields and over-long fields fail at the return layer (``return_code=FAIL``,
    #: Chinese ``return_msg``, unsigned) instead of signed LACK_PARAMS / PARAM_ERROR (strict on).
    return_layer_param_errors: bool | None = None
    #: ``body``, ``attach`` and ``detail`` lengths count UTF-8 bytes, not characters (strict on).
    byte_lengths: bool | None = None
    #: A refund of a fully refunded order answers ``ERROR`` "订单已全额退款" (strict on; lenient:
    #: PARAM_ERROR "申请退款金额超过订单可退金额").
    full_refund_error: bool | None = None
    insufficient_funds_code: str = "NOTENOUGH"
    refund_window_days: _Positive = 365
    bill_ready_hour: Annotated[int, Field(ge=0, le=23)] = 9
    #: The downloaded bill's layout: ``documented`` (Chinese headers, a column set per bill_type,
    #: Chinese summary, fees to 5 decimals) or ``english`` (the 28-column English layout).
    #: Unset: the profile decides (strict: documented, lenient: english).
    bill_layout: Literal["documented", "english"] | None = None
    #: Service fee in the bill, in basis points of the amount.
    fee_rate_bp: Annotated[int, Field(ge=0, le=10_000)] = 60
    payer_balance: _Count = 100_000_000
    code_life: _Positive = 300


class TLSConfig(_Model):
    #: ``/secapi/*`` demands the institution's client certificate over mutual TLS (unset: the
    #: profile decides, strict on; ``minipay sandbox --tls`` turns it on).
    require_client_cert: bool | None = None


@dataclass(frozen=True)
class Effective:
    """Every profile-dependent switch resolved to its value (``SandboxConfig.effective``)."""

    profile: Profile
    cny_pool: bool
    refund_spacing: int
    time_expire_min_gap: int
    return_layer_param_errors: bool
    byte_lengths: bool
    full_refund_error: bool
    asynchronous_notify: bool
    #: "always", "never", or "md5" (only in MD5 notifications: strict).
    sign_type_in_notify: Literal["always", "never", "md5"]
    require_client_cert: bool
    bill_layout: Literal["documented", "english"]


_DEFAULT_WORLD: dict[str, Any] = {
    "institutions": [
        {
            "appid": "wx8888888888888888",
            "mch_id": "1900000109",
            "api_key": "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6",
            "sub_merchants": [
                {
                    "sub_mch_id": "1900000110",
                    "name": "Harbour Tea House",
                    "settlement_currency": "HKD",
                    "sub_appid": "wx1234567890abcdef",
                    "app_secret": "5f2c0b7a9d3e4f6a8b1c2d3e4f5a6b7c",
                },
                {
                    "sub_mch_id": "1900000111",
                    "name": "Kyoto Sweets",
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

    @property
    def effective(self) -> Effective:
        """The profile-dependent switches resolved (an explicit value wins over the profile)."""
        rules, notify = self.rules, self.notify
        strict = rules.profile == "strict"

        def pick(value: bool | None) -> bool:
            return strict if value is None else value

        def pick_int(value: int | None, strict_value: int, lenient_value: int) -> int:
            return (strict_value if strict else lenient_value) if value is None else value

        sign_type: Literal["always", "never", "md5"] = (
            ("md5" if strict else "always") if notify.include_sign_type is None
            else "always" if notify.include_sign_type else "never"
        )  # fmt: skip
        return Effective(
            profile="strict" if strict else "lenient",
            cny_pool=pick(rules.cny_pool),
            refund_spacing=pick_int(rules.refund_spacing, 60, 0),
            time_expire_min_gap=pick_int(rules.time_expire_min_gap, 300, 60),
            return_layer_param_errors=pick(rules.return_layer_param_errors),
            byte_lengths=pick(rules.byte_lengths),
            full_refund_error=pick(rules.full_refund_error),
            asynchronous_notify=pick(notify.asynchronous),
            sign_type_in_notify=sign_type,
            require_client_cert=pick(self.tls.require_client_cert),
            bill_layout=rules.bill_layout or ("documented" if strict else "english"),
        )

    def with_profile(self, profile: str | None, *, default: Profile = "strict") -> SandboxConfig:
        """A copy with ``rules.profile`` = ``profile`` (when given), else the config's own profile,
        else ``default`` (how the commands default to strict while the Python API stays lenient)."""
        chosen = profile or self.rules.profile or default
        if chosen not in PROFILES:
            raise ConfigurationError(f"profile must be one of {', '.join(PROFILES)}")
        if chosen == self.rules.profile:
            return self
        return self.replace(rules={**self.rules.model_dump(), "profile": chosen})

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
