"""Money as integer minor units of an ISO 4217 currency; never floats."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Currency:
    numeric: str
    alpha: str
    exponent: int


_CURRENCIES = [
    Currency("156", "CNY", 2), Currency("344", "HKD", 2), Currency("446", "MOP", 2),
    Currency("840", "USD", 2), Currency("978", "EUR", 2), Currency("826", "GBP", 2),
    Currency("392", "JPY", 0), Currency("410", "KRW", 0), Currency("702", "SGD", 2),
    Currency("764", "THB", 2), Currency("704", "VND", 0), Currency("986", "BRL", 2),
    Currency("356", "INR", 2), Currency("036", "AUD", 2), Currency("124", "CAD", 2),
    Currency("756", "CHF", 2), Currency("643", "RUB", 2), Currency("048", "BHD", 3),
    Currency("414", "KWD", 3), Currency("458", "MYR", 2), Currency("360", "IDR", 2),
    Currency("608", "PHP", 2), Currency("901", "TWD", 2), Currency("710", "ZAR", 2),
]
_PLAIN = re.compile(r"[0-9]+(\.[0-9]+)?\Z")
_BY_CODE = {c.numeric: c for c in _CURRENCIES} | {c.alpha: c for c in _CURRENCIES}


def currency(code: str) -> Currency:
    """Look a currency up by its numeric ("156") or alphabetic ("CNY") code."""
    try:
        return _BY_CODE[code.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown currency {code!r} (use an ISO 4217 code such as 156 or CNY)") from None


def parse_major(text: str, cur: Currency) -> int:
    """Turn "12.50" into 1250 minor units, refusing what cannot be exact.

    Only plain decimals are taken: Decimal() alone would also accept "1e3",
    "1_000", "+5" or non-ASCII digits, none of which a cashier means.
    """
    cleaned = text.strip()
    if cleaned.startswith("-") and _PLAIN.match(cleaned[1:]):
        raise ValueError(f"amount {text!r} must be zero or more")
    if not _PLAIN.match(cleaned):
        raise ValueError(f"amount {text!r} is not a number such as 12.50")
    value = Decimal(cleaned)
    minor = value.scaleb(cur.exponent)
    if minor != minor.to_integral_value():
        raise ValueError(f"amount {text!r} has more than {cur.exponent} decimal places for {cur.alpha}")
    return int(minor)


def format_major(minor: int, cur: Currency) -> str:
    """Turn 1250 minor units into "12.50"."""
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor)).rjust(cur.exponent + 1, "0")
    if cur.exponent == 0:
        return sign + digits
    return f"{sign}{digits[:-cur.exponent]}.{digits[-cur.exponent:]}"
