"""The POS transaction set as data: which MTI, processing code and condition
code each kind of transaction uses in a dialect, and how it behaves.

Terminal and host read the same table (the dialect's `transactions:`), so a
lab that moves a code in its dialect file moves it at both ends. The host
recognises a request's kind by (MTI class, processing code, condition code),
which is unique in every built-in table (docs/transactions.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("sale", "sale_void", "refund", "preauth", "preauth_void", "completion", "completion_void", "balance", "offline",
         "authorization", "qr_order", "qr_query", "qr_close", "qr_sale", "qr_refund", "fee_query", "fee_payment")
TOTALS = ("debit", "credit", "none")
ON_TIMEOUT = ("reverse", "repeat", "nothing")
REFERENCES_ORIGINAL = frozenset({"sale_void", "refund", "preauth_void", "completion", "completion_void"})


@dataclass(frozen=True)
class TransactionKind:
    name: str
    mti: str
    processing_code: str
    condition: str
    type_code: str | None = None
    """The dialect's `transaction_type` role (cup 60.1); None where it has none."""
    on_timeout: str = "reverse"
    """reverse: 0400 until acknowledged; repeat: an advice sent again (0221) until answered; nothing."""
    totals: str = "none"
    """Which side of the batch totals it counts on: debit, credit, none."""

    @property
    def references_original(self) -> bool:
        return self.name in REFERENCES_ORIGINAL

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies the kind in a request: MTI class (digits 2-3 without function), processing code, condition."""
        return (self.mti[1:3], self.processing_code, self.condition)


def parse_transactions(raw: Any, base: dict[str, TransactionKind], source: str) -> dict[str, TransactionKind]:
    """The `transactions:` mapping of a dialect file over its base's table; errors name the file and key."""
    if raw is None:
        return dict(base)
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: transactions must be a mapping of kind to its codes")
    table = dict(base)
    for name, entry in raw.items():
        where = f"{source}: transactions.{name}"
        if name not in KINDS:
            raise ValueError(f"{where}: not a transaction kind ({', '.join(KINDS)})")
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a mapping (mti, processing_code, condition, ...)")
        known = {"mti", "processing_code", "condition", "type_code", "on_timeout", "totals"}
        if unknown := set(entry) - known:
            raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r} (expected {', '.join(sorted(known))})")
        previous = table.get(name)
        values = {
            "mti": entry.get("mti", previous.mti if previous else None),
            "processing_code": entry.get("processing_code", previous.processing_code if previous else None),
            "condition": entry.get("condition", previous.condition if previous else "00"),
            "type_code": entry.get("type_code", previous.type_code if previous else None),
            "on_timeout": entry.get("on_timeout", previous.on_timeout if previous else "reverse"),
            "totals": entry.get("totals", previous.totals if previous else "none"),
        }
        for key, pattern in (("mti", 4), ("processing_code", 6), ("condition", 2)):
            value = values[key]
            if not isinstance(value, str) or len(value) != pattern or not value.isdigit():
                raise ValueError(f"{where}: {key} must be {pattern} digits, quoted")
        if values["on_timeout"] not in ON_TIMEOUT:
            raise ValueError(f"{where}: on_timeout must be one of {', '.join(ON_TIMEOUT)}")
        if values["totals"] not in TOTALS:
            raise ValueError(f"{where}: totals must be one of {', '.join(TOTALS)}")
        if values["type_code"] is not None:
            values["type_code"] = str(values["type_code"])
        table[name] = TransactionKind(name, **values)
    keys: dict[tuple[str, str, str], str] = {}
    for kind in table.values():
        if kind.key in keys:
            raise ValueError(f"{source}: transactions {keys[kind.key]} and {kind.name} share MTI class, processing code"
                             " and condition: the host could not tell them apart")
        keys[kind.key] = kind.name
    return table
