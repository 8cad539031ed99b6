"""Webhook URLs and where they may point: URL checks, internal-address refusal, address pinning."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit


def _ipv4_number(part: str) -> int | None:
    lowered = part.lower()
    if lowered.startswith("0x"):
        digits, base, allowed = lowered[2:], 16, "0123456789abcdef"
    elif len(part) > 1 and part.startswith("0"):
        digits, base, allowed = part[1:], 8, "01234567"
    else:
        digits, base, allowed = part, 10, "0123456789"
    if not part or any(c not in allowed for c in digits):
        return None
    return int(digits, base) if digits else 0


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address ``host`` spells in any notation resolvers accept (``inet_aton``: ``127.1``,
    ``2130706433``, ``0x7f000001``, ``017700000001``, ``0``, a trailing dot), or None.

    >>> parse_ipv4("0x7f.1")
    IPv4Address('127.0.0.1')
    """
    parts = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_ipv4_number(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        return None
    value = last
    for index, n in enumerate(head):
        value += n << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def is_internal_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for what a webhook must never reach: private, loopback, link-local, multicast, unspecified,
    reserved or shared addresses, IPv6 ones that embed such an IPv4 address (mapped, compatible,
    NAT64, 6to4, Teredo) included."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if any(is_internal_address(v4) for v4 in embedded):
            return True
    return not ip.is_global or ip.is_multicast or ip.is_unspecified or ip.is_reserved


def _literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return parse_ipv4(host)


def _is_internal_host(host: str) -> bool:
    """localhost names and literal internal IPs in any spelling (a host name is not resolved here:
    the sender resolves it on every attempt)."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    ip = _literal_ip(name)
    return ip is not None and is_internal_address(ip)


class InternalAddressRefused(Exception):
    """A webhook host that is, or resolves to, an internal address: the delivery attempt is not made."""


Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def pin_address(host: str, port: int, resolver: Resolver) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The one address a delivery to ``host`` connects to, checked at the moment of sending.

    A literal IP (any spelling) is taken as it is; a name is resolved with ``resolver`` and refused
    if *any* of its addresses is internal (:func:`is_internal_address`), so a name that rebinds to
    127.0.0.1 between registration and delivery, or answers a public and a private record, reaches
    nobody. Raises :class:`InternalAddressRefused` (also for a name that does not resolve).
    """
    name = host.lower().strip("[]").rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        raise InternalAddressRefused("webhook host is a localhost name")
    literal = _literal_ip(name)
    if literal is not None:
        candidates = [literal]
    else:
        try:
            resolved = await resolver(name, port)
        except OSError as exc:
            raise InternalAddressRefused(f"webhook host does not resolve ({type(exc).__name__})") from None
        candidates = []
        for text in resolved:
            try:
                candidates.append(ipaddress.ip_address(text.split("%", 1)[0]))
            except ValueError:
                continue
        if not candidates:
            raise InternalAddressRefused("webhook host does not resolve to an IP address")
    if any(is_internal_address(ip) for ip in candidates):
        raise InternalAddressRefused("webhook host resolves to a private, loopback or link-local address")
    return candidates[0]


def check_url(url: str, *, allow_private: bool = False) -> str:
    """The URL as it will be stored: validated, with a numeric IPv4 host in its canonical form."""
    # Printable ASCII only (IDNs as punycode): no spaces, controls or NUL, which no column can hold.
    if len(url) > 2048 or not url.isascii() or not url.isprintable() or " " in url:
        raise ValueError("url must be an absolute http:// or https:// URL of printable ASCII characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be an absolute http:// or https:// URL")
    try:
        port = parts.port  # raises ValueError for a port out of range
    except ValueError:
        raise ValueError("url is not a valid URL") from None
    if "\\" in url or "%" in parts.netloc:
        # Backslashes and escapes in the authority read differently to different URL parsers.
        raise ValueError("url is ambiguous: no backslash or %-escape in its host part")
    host = parts.hostname.lower()
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not carry credentials (receivers check the Minipay-Signature instead)")
    ip = _literal_ip(host)
    last_label = host.rstrip(".").rsplit(".", 1)[-1]
    if ip is None and (last_label.isdigit() or last_label.startswith("0x")):
        raise ValueError("url host is neither a host name nor a valid IP address")
    if not allow_private and _is_internal_host(host):
        raise ValueError("url must not point at localhost or a private, loopback or link-local address")
    if isinstance(ip, ipaddress.IPv4Address) and host != str(ip):
        # One spelling of an address: the canonical one.
        url = parts._replace(netloc=str(ip) if port is None else f"{ip}:{port}").geturl()
    return url
