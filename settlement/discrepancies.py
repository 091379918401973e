"""The discrepancy classes reconciliation tells apart, and what it does about each (docs/settlement.md).

A Finding is what a matcher saw; it becomes a stored discrepancy once, keyed
by (date, class, source, key), so running reconciliation again finds the same
thing without acting on it twice.
"""

from __future__ import annotations

from dataclasses import dataclass

MISSING_AT_HOST = "missing_at_host"
MISSING_IN_FILE = "missing_in_file"
AMOUNT_MISMATCH = "amount_mismatch"
STATUS_MISMATCH = "status_mismatch"
DUPLICATE = "duplicate"
ORPHAN_REVERSAL = "orphan_reversal"
UNREVERSED_TIMEOUT = "unreversed_timeout"
LATE_PRESENTMENT = "late_presentment"
FEE_MISMATCH = "fee_mismatch"
UNIDENTIFIED_FUNDS = "unidentified_funds"

CLASSES: dict[str, tuple[str, str]] = {
    MISSING_AT_HOST: ("Missing at host",
                      "suspense; still unexplained after the ageing period, an exception for a person"),
    MISSING_IN_FILE: ("Missing in file",
                      "suspense until the channel presents it late (that clears it); after the ageing period, an exception"),
    AMOUNT_MISMATCH: ("Amount mismatch",
                      "clearing: an adjustment entry nets the difference into the merchant's next settlement;"
                      " bank: suspense, then an exception"),
    STATUS_MISMATCH: ("Status mismatch",
                      "auto-reversal: a reversal record to the channel in the next clearing file, and an adjustment"
                      " taking it back from the merchant if the merchant was paid"),
    DUPLICATE: ("Duplicate",
                "clearing: auto-reversal of the repeated presentment in the next clearing file;"
                " bank: suspense, then an exception"),
    ORPHAN_REVERSAL: ("Orphan reversal",
                      "suspense: its original may still arrive; after the ageing period, an exception"),
    UNREVERSED_TIMEOUT: ("Unreversed timeout",
                         "auto-reversal at the host (the cardholder's account credited), a reversal record to the"
                         " channel, and an adjustment taking it back from the merchant"),
    LATE_PRESENTMENT: ("Late presentment",
                       "matched to the earlier date's missing-in-file item, which it clears; with none to clear,"
                       " an exception"),
    FEE_MISMATCH: ("Fee mismatch", "an adjustment entry books the fee difference to fee income"),
    UNIDENTIFIED_FUNDS: ("Unidentified funds",
                         "held in the suspense account, never credited to a merchant; after the ageing period, an exception"),
}

SOURCES = ("journal", "terminal", "clearing", "bank")


@dataclass(frozen=True)
class Finding:
    cls: str
    source: str
    key: str
    detail: str
    amount: int
    """The money at stake, minor units, never negative."""
    currency: str | None = None
    transaction_id: int | None = None
    merchant_id: str | None = None
    channel: str | None = None
    host_amount: int | None = None
    file_amount: int | None = None
    host_state: str | None = None
    """The host row's settlement state, where the resolution depends on it."""
    rrn: str | None = None
    terminal_id: str | None = None
