"""The money invariants of a settled date, each checked from two sources that could disagree.

1. Money balances, per currency: approved − reversed − voided − refunded
   + adjustments (worked out from the journal rows' own statuses and
   amounts) = settled net + fees (read back from the settlement CSV as
   written, not from memory).
2. One state per row: every journal row of the date has exactly one
   settlement state, and it agrees with the row's status.
3. Every settled row in exactly one batch, and the batches count them all.
4. The clearing file says what the batches say: its trailer's record count
   and debit and credit totals, read back from the file.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .clearing_file import ClearingReader
from .cutover import read_settlement_csv
from .states import STATE_DECLINED, STATES
from .store import SettlementStore

MONEY_RULE = "approved − reversed − voided − refunded + adjustments = settled net + fees"


@dataclass(frozen=True)
class Invariant:
    name: str
    rule: str
    passed: bool
    left: int
    right: int
    currency: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_invariants(store: SettlementStore, business_date: str, files: dict[str, str]) -> list[Invariant]:
    return [*_money(store, business_date, Path(files["settlement_csv"])), _one_state(store, business_date),
            _one_batch(store, business_date), *_clearing(store, business_date, Path(files["clearing_file"]))]


def _money(store: SettlementStore, business_date: str, settlement_csv: Path) -> list[Invariant]:
    left: dict[str, int] = defaultdict(int)
    parts: dict[str, str] = {}
    for currency, debits, reversed_, voided, credits in store.money_terms(business_date):
        left[currency] += debits - reversed_ - voided - credits
        parts[currency] = f"approved {debits} − reversed {reversed_} − voided {voided} − refunded {credits}"
    for adjustment in store.adjustments(applied_date=business_date):
        if adjustment.target == "merchant":
            left[adjustment.currency] += adjustment.amount
    right: dict[str, int] = defaultdict(int)
    for batch in read_settlement_csv(settlement_csv):
        right[batch.currency] += batch.net + batch.fees
    currencies = sorted(set(left) | set(right)) or ["156"]
    return [Invariant(
        "money balances", MONEY_RULE, left[c] == right[c], left[c], right[c], c,
        f"{parts.get(c, 'no payments')} + adjustments = {left[c]}; {settlement_csv.name}: net + fees = {right[c]}",
    ) for c in currencies]


def _one_state(store: SettlementStore, business_date: str) -> Invariant:
    rows = wrong = 0
    problems = []
    for state, status, kind, count in store.state_status_pairs(business_date):
        rows += count
        if state not in STATES or (state == STATE_DECLINED) != (status == "declined"):
            wrong += count
            problems.append(f"{count} {kind or 'unknown'} row(s) {status} in state {state or 'none'}")
    detail = "; ".join(problems) if problems else f"all {rows} rows have one settlement state that fits their status"
    return Invariant("one settlement state per row", "every journal row of the date is in exactly one settlement state",
                     wrong == 0, rows - wrong, rows, "", detail)


def _one_batch(store: SettlementStore, business_date: str) -> Invariant:
    settled = store.state_counts(business_date).get("settled", 0)
    counted = sum(b.sales_count + b.refunds_count for b in store.batches(business_date))
    orphans = store.unbatched_settled(business_date)
    return Invariant("one batch per settled row", "every settled row is counted in exactly one settlement batch",
                     counted == settled and orphans == 0, settled, counted, "",
                     f"{settled} settled rows, {counted} counted in batches, {orphans} in no batch")


def _clearing(store: SettlementStore, business_date: str, clearing_file: Path) -> list[Invariant]:
    reader = ClearingReader(clearing_file)
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for _, record in reader:
        entry = sums[record.currency]
        entry[0] += 1
        entry[1 if record.sign == "D" else 2] += record.amount
    batches: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for b in store.batches(business_date):
        entry = batches[b.currency]
        entry[0] += b.sales_count + b.refunds_count
        entry[1] += b.sales_amount
        entry[2] += b.refunds_amount
    for a in store.adjustments(applied_date=business_date):
        if a.target == "channel":
            entry = batches[a.currency]
            entry[0] += 1
            entry[1 if a.amount > 0 else 2] += abs(a.amount)
    out = []
    for currency in sorted(set(sums) | set(batches)) or ["156"]:
        file_side, batch_side = sums[currency], batches[currency]
        out.append(Invariant(
            "clearing file agrees", "the clearing file's records and totals are the batches' (plus channel reversals)",
            file_side == batch_side, file_side[1] - file_side[2], batch_side[1] - batch_side[2], currency,
            f"{clearing_file.name}: {file_side[0]} records, debits {file_side[1]}, credits {file_side[2]};"
            f" batches: {batch_side[0]} items, debits {batch_side[1]}, credits {batch_side[2]}",
        ))
    return out
