"""Hosts, regions and the table of operations (spec 2.1, 4-15)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias
from urllib.parse import urlsplit

from minipay.protocol import ConfigurationError

__all__ = [
    "BILL_DOWNLOAD",
    "CLOSE_ORDER",
    "LOGIN",
    "ORDER_QUERY",
    "RATE_QUERY",
    "REFUND",
    "REFUND_QUERY",
    "REGIONS",
    "UNIFIED_ORDER",
    "UNSIGNED_SUCCESS",
    "Operation",
    "Region",
    "resolve_hosts",
]

Region: TypeAlias = Literal["HK", "US"]

#: Global access points (spec 2.1): HK is the documented default; US serves the Americas.
REGIONS: Final[dict[str, str]] = {
    "HK": "https://apihk.mch.weixin.qq.com",
    "US": "https://apius.mch.weixin.qq.com",
}


@dataclass(frozen=True, slots=True)
class Operation:
    """One WeChat API: its public name, path and how it is sent and checked."""

    name: str
    path: str
    #: The name WeChat's error-code table uses (the last path segment), also ``error.operation``.
    wire: str
    #: Reads may be re-sent after an unknown outcome; writes never are.
    idempotent: bool
    #: ``/secapi/...``: mutual TLS with the institution's client certificate.
    secure: bool = False


UNIFIED_ORDER: Final = Operation("orders.create", "/pay/unifiedorder", "unifiedorder", idempotent=False)
ORDER_QUERY: Final = Operation("orders.query", "/pay/orderquery", "orderquery", idempotent=True)
CLOSE_ORDER: Final = Operation("orders.close", "/pay/closeorder", "closeorder", idempotent=False)
REFUND: Final = Operation("refunds.create", "/secapi/pay/refund", "refund", idempotent=False, secure=True)
REFUND_QUERY: Final = Operation("refunds.query", "/pay/refundquery", "refundquery", idempotent=True)
BILL_DOWNLOAD: Final = Operation("bills.download", "/pay/downloadbill", "downloadbill", idempotent=True)
RATE_QUERY: Final = Operation("rates.query", "/pay/queryexchagerate", "queryexchagerate", idempotent=True)
LOGIN: Final = Operation("code_to_session", "/sns/jscode2session", "jscode2session", idempotent=True)

#: Operations whose *success* answer carries no signature, listed explicitly (spec 13.2, 15): a bill
#: download answers a CSV file, not signed XML; their failures are XML and checked as usual.
#: (``/payitil/report`` answers unsigned too; the SDK does not offer it.) Every other answer is verified
#: before ``result_code`` is read.
UNSIGNED_SUCCESS: Final[frozenset[str]] = frozenset({BILL_DOWNLOAD.name})


def _check_base_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigurationError(f"{what} must be an absolute http(s) URL without query, got {url!r}")
    return url.rstrip("/")


def resolve_hosts(region: str, base_url: str | None, failover: Sequence[str]) -> tuple[str, ...]:
    """The ordered hosts: ``base_url`` (or the region's host), then the fail-over list, no duplicates."""
    if isinstance(failover, str):
        raise ConfigurationError("failover must be a sequence of base URLs, not one string")
    if base_url is None:
        try:
            primary = REGIONS[region]
        except KeyError:
            raise ConfigurationError(f"unknown region {region!r} (expected one of {sorted(REGIONS)})") from None
    else:
        primary = _check_base_url(base_url, "base_url")
    hosts = [primary]
    for url in failover:
        checked = _check_base_url(REGIONS.get(url, url), "failover")
        if checked not in hosts:
            hosts.append(checked)
    return tuple(hosts)


def check_login_base_url(url: str) -> str:
    return _check_base_url(url, "login_base_url")
