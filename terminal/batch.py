"""The open batch seen as totals: what counts, on which side, domestic or foreign.

Pure functions over the batch entries a terminal keeps, shared by batch
close (what the 0500 says), `possim pos status` and the demo's summary, so
all three count the same way (docs/transactions.md, "Batch close").
"""

from __future__ import annotations

from collections.abc import Iterable

from possim.wire.batch_totals import BatchTotals, Totals, UploadRecord
from possim.wire.dialect import Dialect

from .state import BatchEntry


def settled_entries(dialect: Dialect, entries: Iterable[BatchEntry]) -> list[BatchEntry]:
    """The entries that count in the totals (and are uploaded): debits and credits, not pre-auths."""
    return [e for e in entries if dialect.transaction(e.kind).totals != "none"]


def is_domestic(dialect: Dialect, masked_pan: str) -> bool:
    """Whether a card is domestic by its BIN. A QR entry has no card (its masked PAN is empty): it is not, as the
    host counts a row without a PAN."""
    return masked_pan.startswith(tuple(str(b) for b in dialect.convention("domestic_bins", ["62"])))


def batch_totals(dialect: Dialect, entries: Iterable[BatchEntry]) -> BatchTotals:
    """Debits (sales, completions, offline sales, paid QR orders and payments) and credits (voids, refunds, QR
    refunds), domestic and foreign cards. A voided sale still counts as a debit: its void is a credit of its own."""
    domestic, foreign = Totals(), Totals()
    for entry in settled_entries(dialect, entries):
        side = dialect.transaction(entry.kind).totals
        if is_domestic(dialect, entry.masked_pan):
            domestic = domestic.add(side, entry.amount)
        else:
            foreign = foreign.add(side, entry.amount)
    return BatchTotals(domestic, foreign)


def upload_record(dialect: Dialect, entry: BatchEntry) -> UploadRecord:
    """A QR entry has no card: its record carries the order number where a card's masked PAN goes."""
    shown = entry.masked_pan or entry.order_no or ""
    return UploadRecord("00" if is_domestic(dialect, entry.masked_pan) else "01", entry.stan, shown, entry.amount)
