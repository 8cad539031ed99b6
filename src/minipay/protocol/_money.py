"""Money: ``int`` minor units everywhere, never a float (spec 16.1, 16.2).

The ISO 4217 exponent table is configurable (:class:`CurrencyTable`): how WeChat treats some
currencies (IDR, HUF, TWD, KRW, ISK...) is unconfirmed, so a deployment can override it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from minipay.protocol._errors import FieldError

__all__ = [
    "DEFAULT_CURRENCIES",
    "RATE_SCALE",
    "CurrencyTable",
    "cash_fee_cny",
    "cash_refund_fee",
    "format_major",
    "parse_major",
    "round_half_up_div",
]

#: Exchange rates are integers scaled by 10^8 (spec 14, 16.2).
RATE_SCALE: Final = 10**8
#: A plain decimal in ASCII digits, bounded: what ``format_major`` writes and WeChat's bills carry.
#: ``Decimal`` alone would also take ``1e2``, ``1_000``, ``+5``, non-ASCII digits, and an exponent
#: so large that converting it to ``int`` overflows or runs for ever.
PLAIN_DECIMAL_RE: Final = re.compile(r"-?[0-9]{1,30}(?:\.[0-9]{1,30})?")

# ISO 4217 exponents of the currencies WeChat Pay Global lists (spec 16.1).
_ISO_EXPONENTS: Final[dict[str, int]] = {
    "CNY": 2, "HKD": 2, "GBP": 2, "USD": 2, "JPY": 0, "CAD": 2, "AUD": 2, "EUR": 2, "NZD": 2,
    "KRW": 0, "THB": 2, "SGD": 2, "RUB": 2, "CHF": 2, "SEK": 2, "DKK": 2, "NOK": 2, "AED": 2,
    "TRY": 2, "MOP": 2, "TWD": 2, "CZK": 2, "MYR": 2, "PHP": 2, "IDR": 2, "MNT": 2, "QAR": 2,
    "HUF": 2, "KHR": 2, "ISK": 0, "PLN": 2, "RON": 2, "VND": 0, "KZT": 2, "AZN": 2, "KGS": 2,
    "FJD": 2, "AMD": 2,
}  # fmt: skip


class CurrencyTable:
    """Currency code -> minor-unit exponent. Immutable; ``with_overrides`` makes a new table.

    >>> DEFAULT_CURRENCIES.exponent("JPY")
    0
    >>> DEFAULT_CURRENCIES.with_overrides({"IDR": 0}).exponent("IDR")
    0
    """

    __slots__ = ("_exponents",)

    def __init__(self, exponents: Mapping[str, int]) -> None:
        for code, digits in exponents.items():
            if len(code) != 3 or not code.isascii() or not code.isupper() or not code.isalpha():
                raise FieldError("fee_type", f"currency codes are 3 upper-case letters, not {code!r}")
            if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= 4:
                raise FieldError("fee_type", f"exponent of {code} must be an int from 0 to 4")
        self._exponents: Mapping[str, int] = MappingProxyType(dict(exponents))

    def __contains__(self, code: object) -> bool:
        return code in self._exponents

    def codes(self) -> frozenset[str]:
        return frozenset(self._exponents)

    def exponent(self, code: str) -> int:
        """The number of minor-unit digits of ``code``; :class:`FieldError` for an unknown code."""
        try:
            return self._exponents[code]
        except KeyError:
            if isinstance(code, str) and code.upper() in self._exponents:
                raise FieldError("fee_type", f"currency codes are upper case: {code.upper()!r}") from None
            raise FieldError("fee_type", f"unknown currency {code!r}") from None

    def check(self, code: str, field: str = "fee_type") -> str:
        """Return ``code`` if it is a known upper-case currency, else raise :class:`FieldError`."""
        if not isinstance(code, str) or code not in self._exponents:
            try:
                self.exponent(code)
            except FieldError as exc:
                raise FieldError(field, exc.reason) from None
        return code

    def with_overrides(self, overrides: Mapping[str, int]) -> CurrencyTable:
        return CurrencyTable({**self._exponents, **overrides})


DEFAULT_CURRENCIES: Final = CurrencyTable(_ISO_EXPONENTS)


def format_major(amount: int, currency: str, table: CurrencyTable = DEFAULT_CURRENCIES) -> str:
    """Minor units as a decimal string of major units (the bill's format).

    >>> format_major(1050, "HKD"), format_major(100, "JPY"), format_major(-5, "USD")
    ('10.50', '100', '-0.05')
    """
    _check_int("amount", amount)
    digits = table.exponent(currency)
    if digits == 0:
        return str(amount)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d}"


def parse_major(text: str, currency: str, table: CurrencyTable = DEFAULT_CURRENCIES) -> int:
    """A decimal string of major units as minor units; refuses more digits than the currency has.

    >>> parse_major("10.5", "HKD"), parse_major("100", "JPY")
    (1050, 100)
    """
    digits = table.exponent(currency)
    stripped = text.strip() if isinstance(text, str) else None
    if stripped is None or not PLAIN_DECIMAL_RE.fullmatch(stripped):
        raise FieldError("amount", f"not a plain decimal amount: {text!r}")
    scaled = Decimal(stripped).scaleb(digits)
    if scaled != scaled.to_integral_value():
        raise FieldError("amount", f"{text!r} has more than {digits} decimal places for {currency}")
    return int(scaled)


def _check_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(field, f"must be an int of minor units, not {type(value).__name__}")
    return value


def round_half_up_div(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up, in integers only (both non-negative)."""
    if denominator <= 0 or numerator < 0:
        raise ValueError("round_half_up_div takes a non-negative numerator and a positive denominator")
    return (2 * numerator + denominator) // (2 * denominator)


def cash_fee_cny(total_fee: int, fee_type: str, rate: int, table: CurrencyTable = DEFAULT_CURRENCIES) -> int:
    """What a CNY wallet pays for ``total_fee`` of ``fee_type`` at ``rate`` (CNY per major unit x 10^8).

    ``cash_fee = round_half_up(total_fee x 10^(2 - digits) x rate / 10^8)`` (spec 16.2).

    >>> cash_fee_cny(1000, "HKD", 92000000), cash_fee_cny(1000, "JPY", 4800000), cash_fee_cny(7, "CNY", 1)
    (920, 4800, 7)
    """
    _check_int("total_fee", total_fee)
    _check_int("rate", rate)
    if fee_type == "CNY":
        return total_fee
    digits = table.exponent(fee_type)
    cny_digits = table.exponent("CNY")
    shift = cny_digits - digits
    if shift >= 0:
        return round_half_up_div(total_fee * 10**shift * rate, RATE_SCALE)
    return round_half_up_div(total_fee * rate, RATE_SCALE * 10 ** (-shift))


def cash_refund_fee(cash_fee: int, refund_fee: int, total_fee: int) -> int:
    """The CNY part of a refund at the original transaction's rate (spec 16.2), rounded half up."""
    _check_int("cash_fee", cash_fee)
    _check_int("refund_fee", refund_fee)
    _check_int("total_fee", total_fee)
    return round_half_up_div(cash_fee * refund_fee, total_fee)
