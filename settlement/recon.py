"""Reconciliation of one settled business date: run every matcher, store what they found, resolve what is
new, age what waits in suspense, check the money invariants, and write the report.

Order matters for "nothing half-written": all files are read and matched
first (a bad line raises before anything changes); then one write
transaction stores discrepancies, adjustments and reversals; the report
files are written atomically inside it, so a failure leaves the day as it
was.
"""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from collections import defaultdict
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from possim.wire.atomic import atomic_text
from .discrepancies import CLASSES, Finding
from .errors import SettlementError
from .invariants import check_invariants
from .matching import Matched, match_bank, match_clearing, match_journal, match_terminals
from .report import render_report
from .resolutions import EXCEPTION, RESOLVED, SUSPENSE, resolve
from .settings import ReconSettings
from .store import SettlementStore, read_day_totals

FILE_KINDS = ("clearing", "bank")
EXCEPTION_COLUMNS = ("id", "business_date", "class", "source", "key", "state", "merchant_id", "channel", "currency",
                     "host_amount", "file_amount", "amount", "resolution", "detail", "first_seen", "updated_at")


@dataclass
class ReconResult:
    summary: dict[str, Any]
    files: dict[str, str]
    new: int
    """Discrepancies found for the first time in this run (and resolved now)."""

    @property
    def failed(self) -> bool:
        return self.summary["verdict"] == "invariant failed"

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        return {
            "business_date": s["business_date"], "run": s["run"], "verdict": s["verdict"], "new": self.new,
            "classes": {c["class"]: {k: c[k] for k in ("count", "amounts", "resolved", "suspense", "exception")}
                        for c in s["classes"] if c["count"]},
            "invariants": [{k: i[k] for k in ("name", "currency", "passed", "left", "right", "detail")} for i in s["invariants"]],
            "sources": s["sources"], "files": self.files,
        }


def reconcile(store: SettlementStore, business_date: str, files: list[tuple[str, Path]], settings: ReconSettings,
              merchants: Collection[str] | None, now: datetime, out_dir: Path,
              clearing_key: tuple[str, ...] | None = None) -> ReconResult:
    day = store.cutover_of(business_date)
    if day is None:
        raise SettlementError(f"{business_date} has no cut-over: run `possim settle cutover --date {business_date}` first")
    for kind, path in files:
        if kind not in FILE_KINDS:
            raise SettlementError(f"--file {kind}={path}: the kind must be one of {', '.join(FILE_KINDS)}")
        if not path.is_file():
            raise SettlementError(f"--file {kind}={path}: no such file")
    clearing = [p for k, p in files if k == "clearing"]
    bank = [p for k, p in files if k == "bank"]
    with ThreadPoolExecutor(1) as reader:  # the invariants' pass over the day, on the other core meanwhile
        day_totals = reader.submit(read_day_totals, store.path, business_date)
        findings, matched, bank_records = _match(store, business_date, clearing, bank, settings, merchants, clearing_key)
        groups = day_totals.result()
    at = now.isoformat(timespec="seconds")
    run = store.next_run(business_date)
    outputs = {"report_html": out_dir / f"recon-{business_date}.html",
               "exceptions_csv": out_dir / f"exceptions-{business_date}.csv",
               "summary_json": out_dir / f"recon-{business_date}.json"}
    new = 0
    with store.writing():
        for f in findings:
            discrepancy_id = store.add_discrepancy(business_date, f.cls, f.source, f.key, f.transaction_id,
                                                   f.merchant_id, f.channel, f.currency, f.host_amount,
                                                   f.file_amount, f.amount, f.detail, at)
            if discrepancy_id is not None:
                new += 1
                state, done = resolve(store, f, discrepancy_id, business_date, at)
                store.resolve(discrepancy_id, state, done, at)
        oldest = (date.fromisoformat(business_date) - timedelta(days=settings.suspense_days)).isoformat()
        store.age_suspense(oldest, at)
        invariants = check_invariants(store, business_date, day[1]["files"], whole_clearing_file=False, groups=groups)
        sources = [{"kind": "journal", "path": str(store.path), "records": day[1]["rows"]},
                   {"kind": "terminal", "path": str(store.path), "records": len(store.terminal_batches(business_date))}]
        sources += [{"kind": "clearing", "path": str(p), "records": matched.records[str(p)]} for p in clearing]
        sources += [{"kind": "bank", "path": str(p), "records": bank_records[str(p)]} for p in bank]
        summary = _summary(store, business_date, run, at, sources, matched, [i.to_json() for i in invariants],
                           settings.suspense_days)
        store.record_run(business_date, run, at, summary["verdict"], summary)
        _write_exceptions(outputs["exceptions_csv"], summary["discrepancies"])
        with atomic_text(outputs["report_html"]) as out:
            out.write(render_report(summary))
        with atomic_text(outputs["summary_json"]) as out:
            json.dump(summary, out, indent=1, sort_keys=True)
    return ReconResult(summary, {k: str(v) for k, v in outputs.items()}, new)


def _match(store: SettlementStore, business_date: str, clearing: list[Path], bank: list[Path],
           settings: ReconSettings, merchants: Collection[str] | None,
           clearing_key: tuple[str, ...] | None) -> tuple[list[Finding], Matched, dict[str, int]]:
    findings: list[Finding] = []
    matched = Matched()
    if clearing:
        found, matched = match_clearing(store, business_date, clearing, clearing_key or settings.key("clearing"),
                                        settings.tolerance, merchants)
        findings += found
    bank_records: dict[str, int] = {}
    if bank:
        found, bank_records = match_bank(store, business_date, bank, settings.tolerance)
        findings += found
    findings += match_terminals(store, business_date)
    findings += match_journal(store, business_date)
    return findings, matched, bank_records


def _summary(store: SettlementStore, business_date: str, run: int, at: str, sources: list[dict[str, Any]],
             matched: Matched, invariants: list[dict[str, Any]], suspense_days: int) -> dict[str, Any]:
    discrepancies = [d.to_json() for d in store.discrepancies(business_date)]
    today = date.fromisoformat(business_date)
    for d in discrepancies:
        d["age_days"] = (today - date.fromisoformat(d["first_seen"])).days
    classes = []
    for cls, (title, resolution) in CLASSES.items():
        of_class = [d for d in discrepancies if d["class"] == cls]
        amounts: dict[str, int] = defaultdict(int)
        for d in of_class:
            amounts[d["currency"] or ""] += d["amount"]
        classes.append({
            "class": cls, "title": title, "count": len(of_class), "amount": sum(d["amount"] for d in of_class),
            "amounts": dict(amounts),
            "currency": of_class[0]["currency"] if of_class and of_class[0]["currency"] else "156",
            "resolution": resolution.replace("the ageing period", f"{suspense_days} days"),
            "resolved": sum(d["state"] == RESOLVED for d in of_class),
            "suspense": sum(d["state"] == SUSPENSE for d in of_class),
            "exception": sum(d["state"] == EXCEPTION for d in of_class),
        })
    unmatched: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for d in discrepancies:
        if d["source"] == "clearing":
            entry = unmatched[(d["channel"] or "unknown", d["currency"] or "156")]
            entry[0] += 1
            entry[1] += d["amount"]
    channels = [{"channel": ch, "currency": cur,
                 "matched_count": matched.by_channel.get((ch, cur), [0, 0])[0],
                 "matched_amount": matched.by_channel.get((ch, cur), [0, 0])[1],
                 "unmatched_count": unmatched.get((ch, cur), [0, 0])[0],
                 "unmatched_amount": unmatched.get((ch, cur), [0, 0])[1]}
                for ch, cur in sorted(set(matched.by_channel) | set(unmatched))]
    if not all(i["passed"] for i in invariants):
        verdict = "invariant failed"
    elif any(d["state"] == EXCEPTION for d in discrepancies):
        verdict = "open exceptions"
    elif discrepancies:
        verdict = "resolved"
    else:
        verdict = "balanced"
    return {
        "business_date": business_date, "generated_at": at, "run": run, "verdict": verdict, "sources": sources,
        "channels": channels, "classes": classes, "invariants": invariants,
        "batches": [asdict(b) for b in store.batches(business_date)],
        "discrepancies": discrepancies,
        "adjustments": [asdict(a) for a in store.adjustments(created_date=business_date)],
    }


def _write_exceptions(path: Path, discrepancies: list[dict[str, Any]]) -> None:
    with atomic_text(path) as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(EXCEPTION_COLUMNS)
        for d in discrepancies:
            writer.writerow([d[c] if d[c] is not None else "" for c in EXCEPTION_COLUMNS])
