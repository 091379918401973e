"""Printed receipts: customer and merchant copies of a transaction, and the settlement slip.

Pure functions from a `TransactionResult` (or batch totals) to plain text
for a 32- or 40-column receipt printer, so the slips a demo prints can be
compared character for character in tests. Every line fits the width;
amounts are major units with the ISO 4217 alphabetic code; a card shows
only as a masked PAN, re-masked here if a caller ever passes more digits
than the first 6 and last 4.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from possim.wire.money import currency, format_major

from .messages import response_text

if TYPE_CHECKING:
    from .results import TransactionResult

DEFAULT_WIDTH = 32
MIN_WIDTH = 24
"""Narrowest width at which a label and its value (a 19-character masked PAN) share a line."""

KIND_NAMES = {
    "sale": "SALE",
    "purchase": "SALE",
    "sale_void": "VOID",
    "refund": "REFUND",
    "preauth": "PRE-AUTH",
    "preauth_void": "PRE-AUTH CANCEL",
    "completion": "COMPLETION",
    "completion_void": "COMPLETION VOID",
    "balance": "BALANCE",
    "offline": "OFFLINE SALE",
    "reversal": "REVERSAL",
    "signon": "SIGN-ON",
}
"""The printed name of each `TransactionResult.operation`."""

_SIGNED_KINDS = frozenset({"sale", "purchase", "offline", "completion"})
"""Approved kinds whose merchant copy carries a cardholder signature line."""
_VISIBLE_PAN_DIGITS = 10
"""First 6 and last 4: the most of a PAN a receipt may show (PCI DSS 3.4)."""
_TOTALS_PARTS = ("debit_count", "debit_amount", "credit_count", "credit_amount")


def customer_receipt(
    result: TransactionResult,
    merchant_name: str,
    merchant_id: str,
    when: datetime,
    batch_number: int,
    width: int = DEFAULT_WIDTH,
) -> str:
    """The cardholder's copy."""
    lines = _transaction(result, merchant_name, merchant_id, when, batch_number, _checked(width))
    return _text([*lines, _rule(width), *_center("CUSTOMER COPY", width)])


def merchant_receipt(
    result: TransactionResult,
    merchant_name: str,
    merchant_id: str,
    when: datetime,
    batch_number: int,
    width: int = DEFAULT_WIDTH,
) -> str:
    """The merchant's copy: the same, with a signature line under an approved sale or completion."""
    lines = _transaction(result, merchant_name, merchant_id, when, batch_number, _checked(width))
    if result.approved and result.operation in _SIGNED_KINDS:
        lines += ["", "", "_" * width, "CARDHOLDER SIGNATURE"]
    return _text([*lines, _rule(width), *_center("MERCHANT COPY", width)])


def settlement_slip(
    tid: str,
    merchant_name: str,
    batch_number: int,
    when: datetime,
    totals: Mapping[str, Any],
    balanced: bool | None,
    width: int = DEFAULT_WIDTH,
) -> str:
    """The slip printed at batch close.

    `totals` maps a currency code (numeric or alphabetic) to that currency's
    totals: a mapping or an object (such as wire.batch_totals.Totals) with
    debit_count, debit_amount, credit_count and credit_amount in minor units.
    Debits are sales, credits refunds and voids. `balanced` is the host's
    verdict; None when the host did not give one.
    """
    _checked(width)
    lines = [
        *_center(merchant_name, width),
        *_pair("TERMINAL ID", tid, width),
        *_pair("BATCH", f"{batch_number:06d}", width),
        *_pair("DATE/TIME", when.strftime("%Y-%m-%d %H:%M:%S"), width),
        _rule(width),
        "SETTLEMENT",
    ]
    for code, group in totals.items():
        cur = currency(code)
        debit_count, debit_amount, credit_count, credit_amount = (_part(group, name, code) for name in _TOTALS_PARTS)
        lines += [
            f"TOTALS {cur.alpha}",
            *_pair(f"DEBITS  {debit_count:>4}", f"{cur.alpha} {format_major(debit_amount, cur)}", width),
            *_pair(f"CREDITS {credit_count:>4}", f"{cur.alpha} {format_major(credit_amount, cur)}", width),
            *_pair("NET", f"{cur.alpha} {format_major(debit_amount - credit_amount, cur)}", width),
        ]
    if not totals:
        lines.append("NO TRANSACTIONS")
    verdict = {True: "BATCH BALANCED", False: "BATCH OUT OF BALANCE", None: "HOST TOTALS NOT CONFIRMED"}[balanced]
    return _text([*lines, _rule(width), *_center(verdict, width)])


def kind_name(operation: str) -> str:
    """What a receipt calls an operation: "sale_void" prints as VOID; one not listed, in capitals."""
    return KIND_NAMES.get(operation, operation.replace("_", " ").upper())


def _transaction(
    result: TransactionResult, merchant_name: str, merchant_id: str, when: datetime, batch_number: int, width: int,
) -> list[str]:
    lines = [
        *_center(merchant_name, width),
        *_pair("MERCHANT ID", merchant_id, width),
        *_pair("TERMINAL ID", result.tid, width),
        *_pair("BATCH", f"{batch_number:06d}", width),
    ]
    if result.stan:
        lines += _pair("STAN", result.stan, width)
    lines += [*_pair("DATE/TIME", when.strftime("%Y-%m-%d %H:%M:%S"), width), _rule(width), kind_name(result.operation)]
    if result.masked_pan:
        lines += _pair("CARD", _masked(result.masked_pan), width)
    if result.amount is not None and result.currency:
        cur = currency(result.currency)
        lines += _pair("AMOUNT", f"{cur.alpha} {format_major(result.amount, cur)}", width)
    if result.auth_code:
        lines += _pair("AUTH CODE", result.auth_code, width)
    if result.rrn:
        lines += _pair("RRN", result.rrn, width)
    return [*lines, _rule(width), *_outcome(result, width)]


def _outcome(result: TransactionResult, width: int) -> list[str]:
    if result.approved:
        return ["APPROVED"]
    if result.response_code is not None:
        return _wrap(f"DECLINED {result.response_code} {response_text(result.response_code).upper()}", width)
    lines = ["NOT COMPLETED", *_wrap(result.message.upper(), width)]
    if result.reversal is not None:
        lines.append("REVERSED" if result.reversal.acknowledged else "REVERSAL PENDING")
    return lines


def _masked(pan: str) -> str:
    """The PAN as given when it shows no more than first 6 and last 4 digits, else only its last 4."""
    if sum(c.isdigit() for c in pan) <= _VISIBLE_PAN_DIGITS:
        return pan
    return "*" * (len(pan) - 4) + pan[-4:]


def _part(group: Any, name: str, code: str) -> int:
    value = group[name] if isinstance(group, Mapping) else getattr(group, name, None)
    if type(value) is not int or value < 0:
        raise ValueError(f"totals[{code!r}].{name}: must be a whole number, zero or more")
    return value


def _checked(width: int) -> int:
    if type(width) is not int or width < MIN_WIDTH:
        raise ValueError(f"width: must be a whole number of at least {MIN_WIDTH} columns, got {width!r}")
    return width


def _pair(label: str, value: str, width: int) -> list[str]:
    """`label` at the left and `value` at the right of one line; the value on lines of its own if too long."""
    if len(label) + 1 + len(value) <= width:
        return [label + value.rjust(width - len(label))]
    return [label, *(part.rjust(width) for part in _wrap(value, width))]


def _center(text: str, width: int) -> list[str]:
    return [line.center(width).rstrip() for line in _wrap(text, width)]


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width) or [""]


def _rule(width: int) -> str:
    return "-" * width


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"
