"""The money invariants of a settled date, each checked from two sources that could disagree.

1. Money balances, per currency: approved − reversed − voided − refunded
   + adjustments (from the journal rows' own statuses and amounts) =
   settled net + fees (read back from the settlement CSV as written).
2. One state per row: every journal row of the date has exactly one
   settlement state, and it agrees with the row's status.
3. One batch per settled row: each batch counts exactly the settled rows
   that name it, and no settled row names a batch that does not exist.
4. The clearing file agrees with the batches (plus the channel reversals
   it carries): record count and debit and credit totals. Cut-over reads
   the file back whole, per currency; reconciliation, which re-checks a
   file cut-over already read, compares its trailer — one line, not a
   million.

The journal side comes from one grouped pass over the date's rows, so the
checks cost about a second at a million rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .clearing_file import ClearingReader
from .cutover import read_settlement_csv
from .states import SETTLED, STATE_DECLINED, STATE_REVERSED, STATE_VOIDED, STATES
from .store import SettlementStore

MONEY_RULE = "approved − reversed − voided − refunded + adjustments = settled net + fees"
_TOOK_MONEY = ("approved", "reversed", "voided")
"""Statuses of a payment that was approved, whatever happened to it after."""


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


def check_invariants(store: SettlementStore, business_date: str, files: dict[str, str],
                     whole_clearing_file: bool = True, groups: list[tuple[Any, ...]] | None = None) -> list[Invariant]:
    """`groups` is store.day_totals(business_date) when the caller read it already."""
    groups = store.day_totals(business_date) if groups is None else groups
    return [*_money(store, business_date, groups, Path(files["settlement_csv"])),
            _one_state(store, business_date, groups), _one_batch(store, business_date, groups),
            *_clearing(store, business_date, Path(files["clearing_file"]), whole_clearing_file)]


def _money(store: SettlementStore, business_date: str, groups: list[tuple[Any, ...]],
           settlement_csv: Path) -> list[Invariant]:
    terms: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    """currency → approved, reversed, voided, refunded, adjustments"""
    for currency, state, status, side, _batch, _count, amount in groups:
        if currency is None:
            continue
        t = terms[currency]
        if side == "D" and status in _TOOK_MONEY:
            t[0] += amount
        if side == "D" and state == STATE_REVERSED:
            t[1] += amount
        if state == STATE_VOIDED:
            t[2] += amount
        if side == "C" and state == SETTLED:
            t[3] += amount
    for adjustment in store.adjustments(applied_date=business_date):
        if adjustment.target == "merchant":
            terms[adjustment.currency][4] += adjustment.amount
    right: dict[str, int] = defaultdict(int)
    for batch in read_settlement_csv(settlement_csv):
        right[batch.currency] += batch.net + batch.fees
    out = []
    for c in sorted(set(terms) | set(right)) or ["156"]:
        approved, reversed_, voided, refunded, adjusted = terms[c]
        left = approved - reversed_ - voided - refunded + adjusted
        out.append(Invariant(
            "money balances", MONEY_RULE, left == right[c], left, right[c], c,
            f"approved {approved} − reversed {reversed_} − voided {voided} − refunded {refunded} + adjustments"
            f" {adjusted} = {left}; {settlement_csv.name}: net + fees = {right[c]}",
        ))
    return out


def _one_state(store: SettlementStore, business_date: str, groups: list[tuple[Any, ...]]) -> Invariant:
    rows = wrong = uncut = store.uncut_rows(business_date)
    problems = [f"{uncut} row(s) journaled for the date after its cut-over began have no state"] if uncut else []
    for _currency, state, status, side, _batch, count, _amount in groups:
        rows += count
        if state not in STATES or (state == STATE_DECLINED) != (status == "declined"):
            wrong += count
            problems.append(f"{count} row(s) {status} in state {state or 'none'}")
    detail = "; ".join(problems) if problems else f"all {rows} rows have one settlement state that fits their status"
    return Invariant("one settlement state per row", "every journal row of the date is in exactly one settlement state",
                     wrong == 0, rows - wrong, rows, "", detail)


def _one_batch(store: SettlementStore, business_date: str, groups: list[tuple[Any, ...]]) -> Invariant:
    named: dict[str, int] = defaultdict(int)
    for _currency, state, _status, _side, batch, count, _amount in groups:
        if state == SETTLED:
            named[batch or "(none)"] += count
    counted = {b.batch_id: b.sales_count + b.refunds_count for b in store.batches(business_date)}
    wrong = sorted(b for b in set(named) | set(counted) if named.get(b, 0) != counted.get(b, 0))
    settled, in_batches = sum(named.values()), sum(counted.values())
    detail = f"{settled} settled rows, {in_batches} counted in {len(counted)} batches"
    if wrong:
        detail += "; disagreeing: " + ", ".join(f"{b} (rows {named.get(b, 0)}, batch {counted.get(b, 0)})" for b in wrong[:5])
    return Invariant("one batch per settled row", "every settled row is counted in exactly one settlement batch",
                     not wrong, settled, in_batches, "", detail)


def _clearing(store: SettlementStore, business_date: str, clearing_file: Path, whole: bool) -> list[Invariant]:
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
    reader = ClearingReader(clearing_file)
    name = "clearing file agrees"
    rule = "the clearing file's records and totals are the batches' (plus channel reversals)"
    if not whole:
        t = reader.stated_trailer()
        ours = [sum(v[i] for v in batches.values()) for i in range(3)]
        theirs = [t.record_count, t.debit_total, t.credit_total]
        return [Invariant(name, rule, theirs == ours, theirs[1] - theirs[2], ours[1] - ours[2], "",
                          f"{clearing_file.name} trailer: {theirs[0]} records, debits {theirs[1]}, credits {theirs[2]};"
                          f" batches: {ours[0]} items, debits {ours[1]}, credits {ours[2]}")]
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for _, record in reader:
        entry = sums[record.currency]
        entry[0] += 1
        entry[1 if record.sign == "D" else 2] += record.amount
    out = []
    for currency in sorted(set(sums) | set(batches)) or ["156"]:
        file_side, batch_side = sums[currency], batches[currency]
        out.append(Invariant(
            name, rule, file_side == batch_side, file_side[1] - file_side[2], batch_side[1] - batch_side[2], currency,
            f"{clearing_file.name}: {file_side[0]} records, debits {file_side[1]}, credits {file_side[2]};"
            f" batches: {batch_side[0]} items, debits {batch_side[1]}, credits {batch_side[2]}",
        ))
    return out
