"""Cut-over: close a business date and settle it.

Closing comes first, inside the same write transaction as everything else:
from the moment the date is marked closed the host puts new messages on the
next date, so nothing can join a day whose batches are being written. Every
row of the date then gets its settlement state (states.py), settled rows go
into one batch per merchant, channel and currency with their fees, earlier
reconciliations' adjustments are netted in, and the settlement CSV and the
clearing file are written. Files are written before the commit, each
atomically: a failure leaves neither a half-written file nor a half-closed
day.

A second cut-over of the same date changes nothing and writes nothing: it
reports the first one.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from possim.wire.atomic import atomic_text
from .channels import channel_of
from .clearing_file import ClearingHeader, ClearingRecord, write_clearing_file
from .errors import SettlementError
from .fees import FeeSchedule
from .settings import SettlementSettings
from .states import CREDIT, QR_KINDS, SETTLED, VOID_KINDS, settlement_state
from .store import BATCH_COLUMNS, HOST_COLUMNS, Adjustment, Batch, SettlementStore

_COL = {name: i for i, name in enumerate(HOST_COLUMNS)}
_FINANCIAL_STATES = ("settled", "reversed", "voided", "void")


@dataclass
class CutoverResult:
    business_date: str
    cutover_at: str
    already: bool
    """True when the date had been cut over before: nothing was changed or written this time."""
    rows: int
    states: dict[str, int]
    batches: list[dict[str, Any]]
    files: dict[str, str]
    adjustments_applied: int
    clearing: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def settlement_files(out_dir: Path, business_date: str) -> dict[str, Path]:
    return {"settlement_csv": out_dir / f"settlement-{business_date}.csv",
            "clearing_file": out_dir / f"clearing-{business_date}.txt"}


def cut_over(store: SettlementStore, business_date: str, *, settings: SettlementSettings, fees: FeeSchedule,
             out_dir: Path, now: datetime, today: str) -> CutoverResult:
    """Close `business_date` (ISO) and settle it; `today` is the host's business date now (a date not yet
    begun cannot be closed; the current one can, ahead of its cut-over time)."""
    _check_date(business_date)
    done = store.cutover_of(business_date)
    if done is not None:
        return CutoverResult(**{**done[1], "already": True})
    if business_date > today:
        raise SettlementError(f"{business_date} has not begun: the host's business date is {today}")
    if (last := store.journal.last_cutover()) is not None and business_date < last:
        raise SettlementError(f"{business_date} is before {last}, which is already cut over: the host has put"
                              f" nothing on it since, and closing it now would book later adjustments into it")
    if (earlier := store.earlier_open_date(business_date)) is not None:
        raise SettlementError(f"{earlier} has rows and no cut-over: cut it over before {business_date}")
    at = now.isoformat(timespec="seconds")
    value_date = (date.fromisoformat(business_date) + timedelta(days=settings.value_days)).isoformat()
    files = settlement_files(out_dir, business_date)
    written: list[Path] = []
    try:
        with store.writing():
            store.close_day(business_date, at)
            day = _Day(business_date, value_date, fees)
            rows = list(store.rows_to_settle(business_date))
            voided = {r[_COL["original_id"]] for r in rows if r[_COL["kind"]] in VOID_KINDS and r[_COL["original_id"]]}
            earlier = store.settled_earlier(voided, business_date)
            store.set_states(day.settle(row, row[_COL["original_id"]] in earlier) for row in rows)
            pending = store.pending_adjustments()
            for adjustment in pending:
                store.apply_adjustment(adjustment.id, business_date, day.adjust(adjustment))
            batches = day.batches()
            store.insert_batches(batches)
            _write_settlement_csv(files["settlement_csv"], batches)
            written.append(files["settlement_csv"])
            reversals = [a for a in pending if a.target == "channel"]
            trailer = write_clearing_file(
                files["clearing_file"],
                ClearingHeader(business_date=business_date, created_at=at, sender_id=settings.acquirer_id),
                _clearing_records(store, business_date, reversals, at),
            )
            written.append(files["clearing_file"])
            result = CutoverResult(
                business_date=business_date, cutover_at=at, already=False, rows=len(rows), states=dict(day.states),
                batches=[asdict(b) for b in batches], files={k: str(v) for k, v in files.items()},
                adjustments_applied=len(pending),
                clearing={"records": trailer.record_count, "debit_total": trailer.debit_total,
                          "credit_total": trailer.credit_total},
            )
            store.record_day(business_date, at, {k: v for k, v in result.to_json().items() if k != "already"})
    except BaseException:
        for path in written:  # each file is whole, but without the day they describe they would mislead
            path.unlink(missing_ok=True)
        raise
    return result


class _Day:
    """The batches of one date as its rows are settled."""

    def __init__(self, business_date: str, value_date: str, fees: FeeSchedule):
        self.business_date = business_date
        self.value_date = value_date
        self.fees = fees
        self.states: dict[str, int] = defaultdict(int)
        self._sums: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
        """(merchant, channel, currency) → sales count and amount, refunds count and amount, adjustments, fees."""

    def settle(self, row: tuple[Any, ...], original_settled_earlier: bool) -> tuple[str, str, str | None, str | None, int | None, int]:
        kind, status = row[_COL["kind"]], row[_COL["status"]]
        state, sign = settlement_state(kind, status, original_settled_earlier)
        self.states[state] += 1
        channel = fee = batch_id = None
        if state in _FINANCIAL_STATES:
            channel = channel_of(row[_COL["pan_masked"]], row[_COL["channel"]], kind in QR_KINDS)
        if state == SETTLED:
            merchant, currency, amount = row[_COL["merchant_id"]] or "", row[_COL["currency"]] or "", row[_COL["amount"]] or 0
            rule = self.fees.rule(merchant, channel or "")
            sums = self._sums[(merchant, channel or "", currency)]
            if sign == CREDIT:
                fee = rule.refund_fee(amount)
                sums[2] += 1
                sums[3] += amount
                sums[5] -= fee
            else:
                fee = rule.fee(amount)
                sums[0] += 1
                sums[1] += amount
                sums[5] += fee
            batch_id = batch_id_of(self.business_date, merchant, channel or "", currency)
        return state, self.business_date, batch_id, channel, fee, row[_COL["id"]]

    def adjust(self, adjustment: Adjustment) -> str | None:
        """Net a merchant adjustment into its batch (made if the day has none); a channel one goes in the
        clearing file instead and belongs to no batch."""
        if adjustment.target != "merchant":
            return None
        self._sums[(adjustment.merchant_id, adjustment.channel, adjustment.currency)][4] += adjustment.amount
        return batch_id_of(self.business_date, adjustment.merchant_id, adjustment.channel, adjustment.currency)

    def batches(self) -> list[Batch]:
        batches = []
        for (merchant, channel, currency), (sc, sa, rc, ra, adj, fees) in sorted(self._sums.items()):
            batches.append(Batch(
                batch_id=batch_id_of(self.business_date, merchant, channel, currency), business_date=self.business_date,
                merchant_id=merchant, channel=channel, currency=currency, sales_count=sc, sales_amount=sa,
                refunds_count=rc, refunds_amount=ra, adjustments=adj, fees=fees, net=sa - ra + adj - fees,
                value_date=self.value_date,
            ))
        return batches


def batch_id_of(business_date: str, merchant_id: str, channel: str, currency: str) -> str:
    """What the settlement CSV, the merchant's payment and the bank statement call a batch."""
    return f"{business_date.replace('-', '')}-{merchant_id}-{channel}-{currency}"


def channel_settlement_id(business_date: str, channel: str, currency: str) -> str:
    """The reference a channel's settlement credit carries on the bank statement: one per channel, currency, day."""
    return f"{business_date.replace('-', '')}-{channel}-{currency}"


def _clearing_records(store: SettlementStore, business_date: str, reversals: list[Adjustment],
                      at: str) -> Iterator[ClearingRecord]:
    for (day, merchant, terminal, channel, kind, stan, rrn, pan, amount, currency, fee, created, auth, reference,
         _id, sign) in store.settled_rows(business_date):
        yield ClearingRecord(
            business_date=business_date, merchant_id=merchant or "", terminal_id=terminal, channel=channel or "",
            kind=kind or "", sign=sign, stan=stan, rrn=rrn or "", masked_pan=pan or "", amount=amount or 0,
            currency=currency or "", fee=abs(fee or 0), transacted_at=created[:19], auth_code=auth or "",
            reference=reference,
        )
    for a in reversals:
        yield ClearingRecord(
            business_date=business_date, merchant_id=a.merchant_id, terminal_id=a.terminal_id or "", channel=a.channel,
            kind="reversal", sign=CREDIT if a.amount < 0 else "D", stan="", rrn=a.rrn or "", masked_pan="",
            amount=abs(a.amount), currency=a.currency, fee=0, transacted_at=at[:19], auth_code="",
            reference=f"ADJ{a.id}",
        )


def _write_settlement_csv(path: Path, batches: list[Batch]) -> None:
    with atomic_text(path) as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(BATCH_COLUMNS)
        for b in batches:
            writer.writerow([getattr(b, c) for c in BATCH_COLUMNS])


def read_settlement_csv(path: Path) -> list[Batch]:
    """The batches as written, read back for the money invariant (which must not trust memory)."""
    with path.open(newline="", encoding="utf-8") as source:
        rows = list(csv.reader(source))
    if not rows or tuple(rows[0]) != BATCH_COLUMNS:
        raise SettlementError(f"{path} line 1: not a settlement CSV header ({','.join(BATCH_COLUMNS)})")
    batches = []
    ints = {i for i, c in enumerate(BATCH_COLUMNS) if c.endswith(("count", "amount")) or c in ("adjustments", "fees", "net")}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(BATCH_COLUMNS):
            raise SettlementError(f"{path} line {number}: {len(row)} columns, expected {len(BATCH_COLUMNS)}")
        values: list[Any] = []
        for i, value in enumerate(row):
            if i in ints:
                try:
                    values.append(int(value))
                except ValueError:
                    raise SettlementError(f"{path} line {number}, field {BATCH_COLUMNS[i]}: {value!r} is not a whole number") from None
            else:
                values.append(value)
        batches.append(Batch(*values))
    return batches


def _check_date(text: str) -> None:
    try:
        date.fromisoformat(text)
    except ValueError:
        raise SettlementError(f"date {text!r} is not a date such as 2026-12-04") from None
    if len(text) != 10:
        raise SettlementError(f"date {text!r} is not a date such as 2026-12-04")
