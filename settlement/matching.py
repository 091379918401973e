"""The matchers: each compares the host's settled day with one source and returns what disagrees.

They read and compare only; nothing here writes. Reconciliation runs them all
before it stores or resolves anything, so a file that turns out to be bad
on its last line leaves nothing changed.

The clearing matcher is a hash join in plain Python: the day's rows go into
a dict keyed by the match key, and the file streams past it line by line.
Measured against SQL in SQLite, DuckDB and Polars on a million rows
(benchmarks/recon.py, docs/settlement.md) it was fast enough by a wide
margin without another dependency, and it keeps the per-line checks (what
makes a line a duplicate, a late presentment or a fee mismatch) in one
readable loop.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from .bank_statement import read_bank_statement
from .clearing_file import ClearingReader, ClearingRecord
from .cutover import channel_settlement_id
from .discrepancies import (
    AMOUNT_MISMATCH, DUPLICATE, FEE_MISMATCH, LATE_PRESENTMENT, MISSING_AT_HOST, MISSING_IN_FILE, ORPHAN_REVERSAL,
    STATUS_MISMATCH, UNIDENTIFIED_FUNDS, UNREVERSED_TIMEOUT, Finding,
)
from .errors import SettlementError
from .states import SETTLED
from .store import SettlementStore

_RECORD_FIELD = {"rrn": "rrn", "terminal_id": "terminal_id", "stan": "stan", "merchant_id": "merchant_id",
                 "auth_code": "auth_code", "reference": "reference"}
_UPLOADED_KINDS = ("sale", "completion", "offline", "fee_payment")


@dataclass
class Matched:
    """What matched, per (channel, currency): count and amount."""

    by_channel: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    records: dict[str, int] = field(default_factory=dict)
    """Records read, per file."""


def match_clearing(store: SettlementStore, business_date: str, paths: list[Path], key: tuple[str, ...],
                   tolerance: int, merchants: Collection[str] | None) -> tuple[list[Finding], Matched]:
    """Clearing files (one per channel, or one for all) against the date's journal rows.

    The loop is the hot path of a million-line file: a line that matches
    takes one dict lookup and a few comparisons; everything else is worked
    out after the loop, for the few lines and rows that disagree.
    """
    width = len(key)
    # Settled rows are loaded last, so a declined try that shares a settled payment's key gives way to it.
    host: dict[tuple[str, ...], tuple] = {row[:width]: row[width:] for row in store.host_rows(business_date, key, False)}
    host.update({row[:width]: row[width:] for row in store.host_rows(business_date, key, True)})
    key_of: Callable = operator.attrgetter(*(_RECORD_FIELD[c] for c in key))
    single = width == 1
    # Reversal records an earlier reconciliation ordered, as the acquirer's own file of the date carries them.
    reversals = {f"ADJ{a.id}": (abs(a.amount), "C" if a.amount < 0 else "D")
                 for a in store.adjustments(applied_date=business_date) if a.target == "channel"}
    seen: dict[tuple[str, ...], tuple[str, int]] = {}
    repeats: dict[tuple[str, ...], int] = defaultdict(lambda: 1)
    findings: list[Finding] = []
    unmatched: list[tuple[str, tuple[str, ...], ClearingRecord]] = []
    disagreeing: list[tuple[str, tuple[str, ...], ClearingRecord, tuple]] = []
    records: dict[str, int] = {}
    for path in paths:
        reader = ClearingReader(path, merchants)
        if reader.header.business_date != business_date:
            raise SettlementError(f"{path} line 1, field business_date: the file is for {reader.header.business_date},"
                                  f" not {business_date}")
        name = path.name
        lines = 0
        for line, rec in reader:
            lines += 1
            k = (key_of(rec),) if single else key_of(rec)
            if rec.kind == "reversal":
                if reversals.pop(rec.reference, None) != (rec.amount, rec.sign):
                    findings.append(Finding(MISSING_AT_HOST, "clearing", f"{rec.reference}/{rec.rrn}/{rec.amount}",
                                            f"{name} line {line}: reversal {rec.reference} of {rec.amount} was not"
                                            f" ordered for {business_date}", rec.amount, rec.currency, None,
                                            rec.merchant_id, rec.channel, None, rec.amount, rrn=rec.rrn,
                                            terminal_id=rec.terminal_id))
                continue
            if k in seen:
                first = seen[k]
                repeats[k] += 1  # keyed by occurrence, not by file and line: a file sent again finds the same ones
                findings.append(Finding(DUPLICATE, "clearing", f"{'/'.join(k)}#{repeats[k]}",
                                        f"{name} line {line}: presented again (first at {first[0]} line {first[1]})",
                                        rec.amount, rec.currency, None, rec.merchant_id, rec.channel, None, rec.amount,
                                        rrn=rec.rrn, terminal_id=rec.terminal_id))
                continue
            seen[k] = (name, line)
            h = host.get(k)
            if h is None:
                unmatched.append((f"{name} line {line}", k, rec))
            elif not (h[3] == rec.sign and (rec.amount == h[1] or abs(rec.amount - h[1]) <= tolerance)
                      and rec.fee == h[2]):
                disagreeing.append((f"{name} line {line}", k, rec, h))
        records[str(path)] = lines
    missing = [(k, h) for k, h in host.items() if h[3] != "X" and k not in seen]
    details = store.row_details([h[0] for *_, h in disagreeing] + [h[0] for _, h in missing])
    findings += [_disagreement(where, k, rec, h, details[h[0]], tolerance) for where, k, rec, h in disagreeing]
    findings += [_late_or_missing(store, business_date, key, where, k, rec) for where, k, rec in unmatched]
    for k, (txn_id, amount, _fee, _sign) in missing:
        merchant, channel, currency, state, *_ = details[txn_id]
        findings.append(Finding(MISSING_IN_FILE, "clearing", "/".join(k),
                                f"transaction {txn_id} settled on {business_date} is in no clearing file",
                                amount or 0, currency, txn_id, merchant, channel, amount, None, state))
    return findings, _matched(store, business_date, findings, records)


def _matched(store: SettlementStore, business_date: str, findings: list[Finding], records: dict[str, int]) -> Matched:
    """What matched per channel: the day's settled rows (from its batches) less those found disagreeing —
    worked out from the few, not counted over the million."""
    matched = Matched(records=records)
    for b in store.batches(business_date):
        entry = matched.by_channel[(b.channel, b.currency)]
        entry[0] += b.sales_count + b.refunds_count
        entry[1] += b.sales_amount + b.refunds_amount
    for f in findings:  # a fee mismatch matched on the amount: only its fee is off
        if f.host_state == SETTLED and f.cls in (MISSING_IN_FILE, AMOUNT_MISMATCH, STATUS_MISMATCH):
            entry = matched.by_channel[(f.channel or "", f.currency or "")]
            entry[0] -= 1
            entry[1] -= f.host_amount or 0
    return matched


def _late_or_missing(store: SettlementStore, business_date: str, key: tuple[str, ...], where: str,
                     k: tuple[str, ...], rec: ClearingRecord) -> Finding:
    """A line no row of the date has: a presentment of an earlier date's payment, or one the host never made."""
    earlier = store.find_by_key(key, k)
    if earlier is not None and earlier[3] < business_date:
        txn_id, amount, state, settled_on = earlier
        return Finding(LATE_PRESENTMENT, "clearing", "/".join(k), f"{where}: transaction {txn_id} was settled on {settled_on}",
                       rec.amount, rec.currency, txn_id, rec.merchant_id, rec.channel, amount, rec.amount, state,
                       rec.rrn, rec.terminal_id)
    return Finding(MISSING_AT_HOST, "clearing", "/".join(k),
                   f"{where}: no transaction with {'/'.join(key)} {'/'.join(k)} settled on {business_date}",
                   rec.amount, rec.currency, None, rec.merchant_id, rec.channel, None, rec.amount,
                   rrn=rec.rrn, terminal_id=rec.terminal_id)


def _disagreement(where: str, k: tuple[str, ...], rec: ClearingRecord, h: tuple, detail: tuple, tolerance: int) -> Finding:
    """Why a line and its journal row do not match: the row was not settled (or was reversed since), the amounts
    differ, or the fees do."""
    txn_id, amount, fee, flag = h
    merchant, channel, currency, state, status, sign = detail
    key = "/".join(k)
    if flag == "X":
        at_host = f"{status} before cut-over" if state != SETTLED else "reversed after cut-over"
        return Finding(STATUS_MISMATCH, "clearing", key,
                       f"{where}: settled in the file, {at_host} at the host (transaction {txn_id})",
                       rec.amount, currency or rec.currency, txn_id, merchant, channel or rec.channel,
                       amount, rec.amount, state, rec.rrn, rec.terminal_id)
    if abs(rec.amount - (amount or 0)) > tolerance or rec.sign != sign:
        return Finding(AMOUNT_MISMATCH, "clearing", key,
                       f"{where}: {rec.sign} {rec.amount} in the file, {sign} {amount} at the host",
                       abs(rec.amount - (amount or 0)), currency, txn_id, merchant, channel, amount,
                       rec.amount, state, rec.rrn, rec.terminal_id)
    return Finding(FEE_MISMATCH, "clearing", key, f"{where}: fee {rec.fee} in the file, {fee} at the host",
                   abs(rec.fee - fee), currency, txn_id, merchant, channel, fee, rec.fee, state, rec.rrn, rec.terminal_id)


def match_bank(store: SettlementStore, business_date: str, paths: list[Path],
               tolerance: int) -> tuple[list[Finding], dict[str, int]]:
    """The settlement account's statement: one credit per channel and currency from the channel, for the day's
    sales less refunds. Lines for other days are left to their own reconciliation."""
    expected: dict[str, tuple[int, str, str]] = {}
    for b in store.batches(business_date):
        ref = channel_settlement_id(business_date, b.channel, b.currency)
        amount, _, _ = expected.get(ref, (0, b.channel, b.currency))
        expected[ref] = (amount + b.sales_amount - b.refunds_amount, b.channel, b.currency)
    prefix = business_date.replace("-", "")
    seen: dict[str, str] = {}
    occurrences: dict[str, int] = defaultdict(int)
    """How often a reference (or, without one, an amount on a date) came: the 2nd time is keyed #2, so a
    statement sent again under another name finds the same discrepancies instead of new ones."""
    findings = []
    records = {}
    for path in paths:
        lines = read_bank_statement(path)
        records[str(path)] = len(lines)
        for line in lines:
            where = f"{path.name} line {line.line}"
            signed = line.amount if line.direction == "CR" else -line.amount
            ref = line.reference
            day = ref[:8]
            if day.isdigit() and len(day) == 8 and day != prefix and ref not in expected:
                continue
            ident = ref or f"(no reference) {line.direction} {line.amount} {line.value_date}"
            occurrences[ident] += 1
            nth = occurrences[ident]
            if ref in seen:
                findings.append(Finding(DUPLICATE, "bank", f"{ref}#{nth}",
                                        f"{where}: {ref} received again (first at {seen[ref]})", line.amount,
                                        line.currency, channel=expected.get(ref, (0, None, None))[1],
                                        file_amount=signed))
                continue
            seen[ref] = where
            if ref not in expected:
                findings.append(Finding(UNIDENTIFIED_FUNDS, "bank", f"{ident}#{nth}",
                                        f"{where}: {line.direction} {line.amount} with reference {ref!r} matches no"
                                        f" settlement of {business_date}", line.amount, line.currency, file_amount=signed))
                continue
            amount, channel, currency = expected[ref]
            if abs(signed - amount) > tolerance or line.currency != currency:
                findings.append(Finding(AMOUNT_MISMATCH, "bank", ref,
                                        f"{where}: {signed} {line.currency} on the statement, {amount} {currency} expected",
                                        abs(signed - amount), currency, channel=channel, host_amount=amount,
                                        file_amount=signed))
    for ref, (amount, channel, currency) in expected.items():
        if ref not in seen and amount != 0:
            findings.append(Finding(MISSING_IN_FILE, "bank", ref, f"no statement line for {ref} ({amount} {currency})",
                                    abs(amount), currency, channel=channel, host_amount=amount))
    return findings, records


def match_terminals(store: SettlementStore, business_date: str) -> list[Finding]:
    """Terminal batches that closed out of balance: their uploads list what the terminal counted. An approval
    the terminal never counted is a lost answer whose reversal never came; a counted payment the host has
    no row of is missing at the host."""
    findings = []
    for terminal_id, batch_number, balanced in store.terminal_batches(business_date):
        if balanced:
            continue
        counted = store.uploads(terminal_id, batch_number)
        if not counted:
            continue
        rows = store.batch_rows(terminal_id, batch_number)
        for txn_id, stan, amount, currency, kind, merchant, channel, state, rrn, status in rows:
            if status == "approved" and kind in _UPLOADED_KINDS and stan not in counted:
                findings.append(Finding(UNREVERSED_TIMEOUT, "terminal", f"{terminal_id}/{batch_number}/{stan}",
                                        f"terminal {terminal_id} batch {batch_number}: approved {kind} STAN {stan}"
                                        f" (transaction {txn_id}) is not among the terminal's {len(counted)} uploaded",
                                        amount or 0, currency, txn_id, merchant, channel, amount, None, state, rrn,
                                        terminal_id))
        known = {row[1] for row in rows}
        currency = store.terminal_currency(terminal_id)
        for stan in sorted(set(counted) - known):
            findings.append(Finding(MISSING_AT_HOST, "terminal", f"{terminal_id}/{batch_number}/{stan}",
                                    f"terminal {terminal_id} batch {batch_number} uploaded STAN {stan}, which the host"
                                    f" never approved", counted[stan] or 0, currency, file_amount=counted[stan],
                                    terminal_id=terminal_id))
    return findings


def match_journal(store: SettlementStore, business_date: str) -> list[Finding]:
    return [Finding(ORPHAN_REVERSAL, "journal", f"{terminal_id}/{stan}",
                    f"reversal from terminal {terminal_id} of STAN {stan} (transaction {txn_id}) whose original the"
                    f" host never saw", amount or 0, currency, txn_id, merchant, terminal_id=terminal_id)
            for txn_id, terminal_id, stan, amount, currency, merchant in store.orphan_reversals(business_date)]
