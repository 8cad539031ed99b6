"""Hosts, regions and the operations the SDK sends (rows of protocol's ``OPERATION_TABLE``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, TypeAlias
from urllib.parse import urlsplit

from minipay.protocol import OPERATION_TABLE, ConfigurationError, Operation

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


UNIFIED_ORDER: Final = OPERATION_TABLE["unifiedorder"]
ORDER_QUERY: Final = OPERATION_TABLE["orderquery"]
CLOSE_ORDER: Final = OPERATION_TABLE["closeorder"]
REFUND: Final = OPERATION_TABLE["refund"]
REFUND_QUERY: Final = OPERATION_TABLE["refundquery"]
BILL_DOWNLOAD: Final = OPERATION_TABLE["downloadbill"]
RATE_QUERY: Final = OPERATION_TABLE["queryexchagerate"]
LOGIN: Final = OPERATION_TABLE["jscode2session"]


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
