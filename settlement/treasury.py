"""The day's government fee collections, reconciled three ways (docs/fees.md, "Treasury reconciliation").

Item by item, by the bank's trade number: the host journal's confirmed fee
payments, the finance system's confirmation list for the date, and the
credits on the collection account's bank statement. Per collecting agency
the three totals must agree. What does not match becomes a discrepancy of
the reconciliation engine's classes (source `finance` or `collection`), held
in suspense for a person — an unidentified credit goes to the suspense
account, never to an agency. Then the files the day ends with are written:
a confirmation file per agency, and the sweep instruction that empties the
collection account by next morning (identified money to the clearing
account, unidentified money to suspense).

A date is reconciled once: a second run is refused (the interface's
"cannot reconcile twice").
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from possim.acquirer.settings import FeeSettings
from possim.wire.money import currency as find_currency, format_major
from possim.wire.nontax import parse_amount

from possim.wire.atomic import atomic_text
from .bank_statement import StatementLine
from .discrepancies import (
    AMOUNT_MISMATCH, DUPLICATE, MISSING_AT_HOST, MISSING_IN_FILE, UNIDENTIFIED_FUNDS, Finding,
)
from .errors import SettlementError
from .resolutions import resolve
from .store import SettlementStore


@dataclass
class TreasuryResult:
    summary: dict[str, Any]
    files: dict[str, str]

    @property
    def balanced(self) -> bool:
        return self.summary["verdict"] == "balanced"

    def to_json(self) -> dict[str, Any]:
        return {**self.summary, "files": self.files}


def reconcile_collections(store: SettlementStore, business_date: str, daily_list: dict[str, Any],
                          statement: list[StatementLine], statement_name: str, settings: FeeSettings,
                          out_dir: Path, now: datetime) -> TreasuryResult:
    """`daily_list` is the body of the finance system's 2004 answer: its confirmations and their currency."""
    cur = find_currency(daily_list.get("currency") or "CNY")
    confirmations = daily_list.get("confirmations", [])
    listed = sum(parse_amount(e["amount"], cur.alpha, f"finance list of {business_date}") for e in confirmations)
    if confirmations and parse_amount(daily_list.get("total", "0"), cur.alpha, "finance list total") != listed:
        raise SettlementError(f"the finance system's list of {business_date} says its total is {daily_list.get('total')}"
                              f" {cur.alpha}, but its {len(confirmations)} confirmations add up to"
                              f" {format_major(listed, cur)}: ask for it again")
    done = store.treasury_day(business_date)
    if done is not None:
        raise SettlementError(f"{business_date} was reconciled with the treasury at {done}: a day is reconciled once")
    if store.cutover_of(business_date) is None:
        raise SettlementError(f"{business_date} has no cut-over: run `possim settle cutover --date {business_date}` first")
    host = {trade: (code, agency, amount, cur, confirm_no, created) for trade, code, agency, amount, cur, confirm_no, _id,
            created in store.collections(business_date)}
    finance: dict[str, tuple[str, str, int]] = {}
    findings: list[Finding] = []
    for entry in confirmations:
        where = f"finance list of {business_date}, trade {entry['channelTradeNo']}"
        amount = parse_amount(entry["amount"], cur.alpha, where)
        finance[entry["channelTradeNo"]] = (entry["payCode"], entry["agencyCode"], amount)
    bank: dict[str, int] = {}
    seen: dict[str, int] = defaultdict(int)
    credited_in_all = 0
    for line in statement:
        if line.account != settings.collection_account or line.direction != "CR" or line.value_date != business_date:
            continue  # another account's, a debit, or another day's: not this day's collections
        credited_in_all += line.amount if line.currency == cur.numeric else 0
        where = f"{statement_name} line {line.line}"
        if not line.reference or line.currency != cur.numeric:  # nothing to match it by: suspense
            anonymous = f"(no reference) {line.amount} {line.currency} {line.value_date}"
            seen[anonymous] += 1
            findings.append(Finding(UNIDENTIFIED_FUNDS, "collection", f"{line.reference or anonymous}#{seen[anonymous]}",
                                    f"{where}: credit {format_major(line.amount, find_currency(line.currency))}"
                                    f" {find_currency(line.currency).alpha}"
                                    + (" in another currency" if line.currency != cur.numeric else " without a reference")
                                    + ": to the suspense account", line.amount, line.currency, file_amount=line.amount))
            continue
        seen[line.reference] += 1
        if seen[line.reference] > 1:
            findings.append(Finding(DUPLICATE, "collection", f"{line.reference}#{seen[line.reference]}",
                                    f"{where}: credit {line.reference} received again", line.amount, line.currency,
                                    file_amount=line.amount))
        elif line.reference not in host and line.reference not in finance:
            findings.append(Finding(UNIDENTIFIED_FUNDS, "collection", f"{line.reference or '(no reference)'}#1",
                                    f"{where}: credit {format_major(line.amount, cur)} {cur.alpha} with reference"
                                    f" {line.reference!r} matches no fee payment of {business_date}: to the suspense"
                                    " account", line.amount,
                                    line.currency, file_amount=line.amount))
        else:
            bank[line.reference] = line.amount
    agencies: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    matched: list[tuple[str, tuple[Any, ...]]] = []
    for trade in sorted(set(host) | set(finance) | set(bank)):
        ours, theirs, credited = host.get(trade), finance.get(trade), bank.get(trade)
        agency = (ours or (None, None))[1] or (theirs or (None, None))[1] or "?"
        totals = agencies[agency]
        for side, amount in (("host", ours[2] if ours else None), ("finance", theirs[2] if theirs else None),
                             ("collection", credited)):
            if amount is not None:
                totals[f"{side}_count"] += 1
                totals[f"{side}_amount"] += amount
        findings += _three_way(trade, ours, theirs, credited, business_date, statement_name, cur.numeric)
        if ours is not None and theirs is not None and credited is not None and ours[2] == theirs[2] == credited:
            matched.append((trade, ours))
    at = now.isoformat(timespec="seconds")
    outputs = {"summary_json": out_dir / f"treasury-{business_date}.json", "sweep_csv": out_dir / f"sweep-{business_date}.csv"}
    by_agency: dict[str, list[tuple[str, tuple[Any, ...]]]] = defaultdict(list)
    for trade, ours in matched:
        by_agency[ours[1] or "?"].append((trade, ours))
    for agency in by_agency:
        outputs[f"confirmations_{agency}"] = out_dir / f"confirmations-{business_date}-{agency}.csv"
    identified = sum(ours[2] for _, ours in matched)
    # Everything else credited to the account that day (unknown, repeated, wrong or unconfirmed money) goes to
    # suspense until a person explains it, so the sweep always empties the collection account.
    unidentified = credited_in_all - identified
    with store.writing():
        for f in findings:
            discrepancy_id = store.add_discrepancy(business_date, f.cls, f.source, f.key, f.transaction_id, None, None,
                                                   f.currency, f.host_amount, f.file_amount, f.amount, f.detail, at)
            if discrepancy_id is not None:
                state, done_text = resolve(store, f, discrepancy_id, business_date, at)
                store.resolve(discrepancy_id, state, done_text, at)
        rows = [{"agency": agency, **{k: totals.get(k, 0) for k in _TOTALS},
                 "balanced": totals.get("host_amount", 0) == totals.get("finance_amount", 0) == totals.get("collection_amount", 0)
                 and totals.get("host_count", 0) == totals.get("finance_count", 0) == totals.get("collection_count", 0)}
                for agency, totals in sorted(agencies.items())]
        unexplained = [f for f in findings if f.cls != UNIDENTIFIED_FUNDS]
        summary = {
            "business_date": business_date, "reconciled_at": at, "agencies": rows,
            "identified": identified, "unidentified": unidentified, "currency": cur.numeric,
            "finance_count": len(finance), "finance_amount": listed,
            "discrepancies": [{"class": f.cls, "source": f.source, "key": f.key, "amount": f.amount, "detail": f.detail}
                              for f in findings],
            "verdict": "balanced" if not unexplained and all(r["balanced"] for r in rows) else "differences",
        }
        for agency, items in by_agency.items():
            _write_confirmations(outputs[f"confirmations_{agency}"], items)
        value_date = (date.fromisoformat(business_date) + timedelta(days=1)).isoformat()
        _write_sweep(outputs["sweep_csv"], settings, business_date, value_date, identified, unidentified, cur.numeric)
        with atomic_text(outputs["summary_json"]) as out:
            json.dump(summary, out, indent=1, ensure_ascii=False, sort_keys=True)
        store.record_treasury_day(business_date, at, summary)
    return TreasuryResult(summary, {k: str(v) for k, v in outputs.items()})


_TOTALS = ("host_count", "host_amount", "finance_count", "finance_amount", "collection_count", "collection_amount")


def _three_way(trade: str, ours: tuple[Any, ...] | None, theirs: tuple[str, str, int] | None, credited: int | None,
               business_date: str, statement_name: str, currency: str) -> list[Finding]:
    """What one trade number's three records disagree on."""
    found = []
    if ours is not None and theirs is None:
        found.append(Finding(MISSING_IN_FILE, "finance", trade, f"fee {ours[0]} confirmed at the host (trade {trade})"
                             f" is not in the finance system's list of {business_date}", ours[2], currency,
                             host_amount=ours[2]))
    if theirs is not None and ours is None:
        found.append(Finding(MISSING_AT_HOST, "finance", trade, f"the finance system lists fee {theirs[0]} (trade {trade})"
                             f" that the host has not confirmed on {business_date}", theirs[2], currency,
                             file_amount=theirs[2]))
    if ours is not None and theirs is not None and ours[2] != theirs[2]:
        found.append(Finding(AMOUNT_MISMATCH, "finance", trade, f"trade {trade}: {theirs[2]} in the finance list,"
                             f" {ours[2]} at the host", abs(ours[2] - theirs[2]), currency, host_amount=ours[2],
                             file_amount=theirs[2]))
    if ours is not None and credited is None:
        found.append(Finding(MISSING_IN_FILE, "collection", trade, f"fee {ours[0]} (trade {trade}) has no credit on"
                             f" {statement_name}", ours[2], currency, host_amount=ours[2]))
    if ours is not None and credited is not None and ours[2] != credited:
        found.append(Finding(AMOUNT_MISMATCH, "collection", trade, f"trade {trade}: credited {credited}, collected"
                             f" {ours[2]}", abs(ours[2] - credited), currency, host_amount=ours[2], file_amount=credited))
    return found


def _write_confirmations(path: Path, items: list[tuple[str, tuple[Any, ...]]]) -> None:
    """The agency's confirmation file: what it was paid on the date, item by item."""
    with atomic_text(path) as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("pay_code", "agency_code", "amount", "currency", "trade_no", "confirm_no", "paid_at"))
        for trade, (code, agency, amount, cur, confirm_no, created) in items:
            writer.writerow((code, agency, format_major(amount, find_currency(cur)), find_currency(cur).alpha, trade,
                             confirm_no or "", created[:19]))


def _write_sweep(path: Path, settings: FeeSettings, business_date: str, value_date: str, identified: int,
                 unidentified: int, currency: str) -> None:
    """The collection account emptied by next morning: collections to clearing, the unexplained to suspense."""
    with atomic_text(path) as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("from_account", "to_account", "amount", "currency", "value_date", "reference"))
        cur = find_currency(currency)
        writer.writerow((settings.collection_account, settings.clearing_account, format_major(identified, cur),
                         cur.alpha, value_date, f"FEES-{business_date.replace('-', '')}"))
        if unidentified:
            writer.writerow((settings.collection_account, settings.suspense_account, format_major(unidentified, cur),
                             cur.alpha, value_date, f"SUSPENSE-{business_date.replace('-', '')}"))
