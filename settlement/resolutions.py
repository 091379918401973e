"""What reconciliation does about a discrepancy, the first time it is found (discrepancies.CLASSES).

Each action is applied inside the run's write transaction, right after the
discrepancy is stored for the first time; a later run finds the stored one
and does nothing, so nothing is resolved twice.
"""

from __future__ import annotations

import dataclasses

from possim.acquirer.journal import APPROVED, REVERSED, Posting, Unit

from .discrepancies import (
    AMOUNT_MISMATCH, DUPLICATE, FEE_MISMATCH, LATE_PRESENTMENT, STATUS_MISMATCH, UNREVERSED_TIMEOUT, Finding,
)
from .states import SETTLED
from .store import RECON_REVERSAL, SettlementStore

RESOLVED, SUSPENSE, EXCEPTION = "resolved", "suspense", "exception"
_REVERSIBLE_AT_HOST = ("sale", "offline")
"""Kinds an automatic reversal can undo with one posting; the rest (a completion's hold, a QR order's
wallet) are left to a person."""


def resolve(store: SettlementStore, finding: Finding, discrepancy_id: int, business_date: str, at: str) -> tuple[str, str]:
    """Apply the class's resolution; returns the discrepancy's (state, what was done)."""
    if finding.source in ("clearing", "terminal"):
        if finding.cls == AMOUNT_MISMATCH:
            return _amount_adjustment(store, finding, discrepancy_id, business_date)
        if finding.cls == FEE_MISMATCH:
            return _fee_adjustment(store, finding, discrepancy_id, business_date)
        if finding.cls in (STATUS_MISMATCH, DUPLICATE):
            return _channel_reversal(store, finding, discrepancy_id, business_date)
        if finding.cls == UNREVERSED_TIMEOUT:
            return _reverse_at_host(store, finding, discrepancy_id, business_date, at)
        if finding.cls == LATE_PRESENTMENT:
            return _late(store, finding, business_date, at)
    return SUSPENSE, "held in suspense"


def _adjust(store: SettlementStore, f: Finding, discrepancy_id: int, day: str, target: str, amount: int,
            reason: str) -> int:
    """An adjustment entry for the finding's merchant, channel and currency; returns its id."""
    return store.add_adjustment(day, target, f.merchant_id or "", f.channel or "", f.currency or "", amount, reason,
                                discrepancy_id, f.transaction_id, f.rrn, f.terminal_id)


def _amount_adjustment(store: SettlementStore, f: Finding, discrepancy_id: int, day: str) -> tuple[str, str]:
    difference = (f.file_amount or 0) - (f.host_amount or 0)
    made = _adjust(store, f, discrepancy_id, day, "merchant", difference,
                   f"amount cleared {f.file_amount}, authorized {f.host_amount}")
    return RESOLVED, f"adjustment {made}: {difference:+d} to the merchant's next settlement"


def _fee_adjustment(store: SettlementStore, f: Finding, discrepancy_id: int, day: str) -> tuple[str, str]:
    difference = (f.file_amount or 0) - (f.host_amount or 0)
    made = _adjust(store, f, discrepancy_id, day, "fee_income", difference,
                   f"fee in the file {f.file_amount}, ours {f.host_amount}")
    return RESOLVED, f"adjustment {made}: fee difference {difference:+d} booked to fee income"


def _channel_reversal(store: SettlementStore, f: Finding, discrepancy_id: int, day: str) -> tuple[str, str]:
    amount = f.file_amount or f.amount
    made = _adjust(store, f, discrepancy_id, day, "channel", -amount, f"{f.cls}: presentment reversed to the channel")
    done = [f"adjustment {made}: reversal of {amount} to the channel"]
    if f.cls == STATUS_MISMATCH and f.host_state == SETTLED:
        taken = _adjust(store, f, discrepancy_id, day, "merchant", -(f.host_amount or 0),
                        "reversed at the host after the merchant was settled")
        done.append(f"adjustment {taken}: {-(f.host_amount or 0):+d} to the merchant")
    return RESOLVED, "; ".join(done)


def _reverse_at_host(store: SettlementStore, f: Finding, discrepancy_id: int, day: str, at: str) -> tuple[str, str]:
    txn = store.journal.transaction_by_id(f.transaction_id or 0)
    if txn is None or txn.status != APPROVED or txn.kind not in _REVERSIBLE_AT_HOST:
        why = "no longer approved" if txn is not None and txn.status != APPROVED else f"a {txn.kind if txn else 'missing'} row"
        return EXCEPTION, f"not reversed automatically: {why}"
    reversed_txn = dataclasses.replace(txn, status=REVERSED, reversal_reason=RECON_REVERSAL, reversed_at=at,
                                       updated_at=at)
    postings = (Posting(txn.account_id, txn.posted_amount),) if txn.account_id and txn.posted_amount else ()
    store.journal.record(Unit(updates=(reversed_txn,), postings=postings, at=at))
    done = [f"transaction {txn.id} reversed at the host, {txn.posted_amount} back to its account"]
    made = _adjust(store, f, discrepancy_id, day, "channel", -(txn.amount or 0), "unreversed timeout reversed to the channel")
    done.append(f"adjustment {made}: reversal to the channel")
    if f.host_state == SETTLED:
        taken = _adjust(store, f, discrepancy_id, day, "merchant", -(txn.amount or 0),
                        "unreversed timeout taken back from the merchant")
        done.append(f"adjustment {taken}: {-(txn.amount or 0):+d} to the merchant")
    return RESOLVED, "; ".join(done)


def _late(store: SettlementStore, f: Finding, day: str, at: str) -> tuple[str, str]:
    open_item = store.open_missing_in_file(f.transaction_id or 0)
    if open_item is None:
        return EXCEPTION, "no missing-in-file item to clear: a person must check it"
    store.resolve(open_item.id, RESOLVED, f"presented late on {day}", at)
    return RESOLVED, f"cleared missing-in-file item {open_item.id} of {open_item.business_date}"
