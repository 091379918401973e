"""Reconciliation of settled days a real host wrote (docs/settlement.md): every practice injection found,
classified and resolved as discrepancies.CLASSES says and nothing else flagged; runs that resolve nothing
twice; an unreversed timeout reversed at the host and carried into the next cut-over; an orphan reversal
ageing out of suspense; a late presentment clearing its missing item; bad input refused with nothing
written; and the report, exceptions CSV and `possim recon run --json`."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from host_support import OPENING
from possim.acquirer.journal import Journal
from possim.fixtures import load_fixture
from possim.settlement.clearing_file import ClearingHeader, ClearingReader, ClearingRecord, write_clearing_file
from possim.settlement.discrepancies import CLASSES
from possim.settlement.jobs import CutoverReport, run_cutover, run_make_file, run_recon
from possim.settlement.matching import match_terminals
from possim.settlement.recon import ReconResult
from possim.settlement.store import SettlementStore
from possim.terminal import resolve_card
from settlement_support import (
    D, D1, FULL_PANS, M1, Made, at, build_exceptions_day, build_two_days, close_all, copy_journal, day, lab,
    query, uncounted_sale,
)

POSSIM = [sys.executable, "-m", "possim.cli"]
SEED = 11
SUSPENSE_DAYS = load_fixture("host.yaml")["reconciliation"]["suspense_days"]


def possim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POSSIM, *args], capture_output=True, text=True, timeout=60)


def recon(db: Path, business_date: str, files: list[tuple[str, Path]], out: Path, hour: int = 12) -> ReconResult:
    return run_recon(db, business_date, files, out=out, clock=lambda: at(day(business_date, 1), hour))


def found(result: ReconResult) -> dict[str, int]:
    return {c["class"]: c["count"] for c in result.summary["classes"] if c["count"]}


def balances(db: Path) -> list[tuple[str, int]]:
    journal = Journal(db)
    try:
        return [(a.id, a.balance) for a in journal.balances()]
    finally:
        journal.close()


def records_of(path: Path) -> list[ClearingRecord]:
    return [record for _, record in ClearingReader(path)]


def nothing_reconciled(db: Path) -> bool:
    return query(db, "SELECT (SELECT COUNT(*) FROM discrepancies), (SELECT COUNT(*) FROM recon_runs),"
                     " (SELECT COUNT(*) FROM adjustments)") == [(0, 0, 0)]


@dataclass
class Settled:
    """Two business days of a real host, both cut over, not yet reconciled."""

    db: Path
    made: dict[str, Made]
    cutovers: dict[str, CutoverReport]

    def clearing_file(self, business_date: str) -> Path:
        return Path(self.cutovers[business_date].result.files["clearing_file"])


@pytest.fixture(scope="module")
def settled(tmp_path_factory) -> Settled:
    folder = tmp_path_factory.mktemp("two-days")
    made = build_two_days(folder)
    db = folder / "journal.sqlite"
    # the scenario gives reconciliation nothing to find on its own: batches in balance, no orphan reversal
    assert query(db, "SELECT COUNT(*), SUM(balanced) FROM batches") == [(2, 2)]
    assert query(db, "SELECT COUNT(*) FROM transactions WHERE status = 'orphan_reversal'") == [(0,)]
    cutovers = {d: run_cutover(db, d, out=folder / "settlement" / d, clock=lambda: at(D1, 20)) for d in (D, D1)}
    assert not any(c.failed for c in cutovers.values())
    return Settled(db, made, cutovers)


@pytest.fixture(scope="module")
def exceptions_day(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("exceptions-day")
    return folder / "journal.sqlite", build_exceptions_day(folder)


def test_our_own_clearing_file_reconciles_with_nothing_to_find(settled: Settled, tmp_path) -> None:
    db = copy_journal(settled.db, tmp_path)
    result = recon(db, D, [("clearing", settled.clearing_file(D))], tmp_path / "out")
    assert (found(result), result.summary["verdict"], result.new) == ({}, "balanced", 0)
    matched = {(c["channel"], c["currency"]): (c["matched_count"], c["matched_amount"], c["unmatched_count"])
               for c in result.summary["channels"]}
    expected: Counter[tuple[str, str]] = Counter()
    amounts: Counter[tuple[str, str]] = Counter()
    for r in records_of(settled.clearing_file(D)):
        expected[(r.channel, r.currency)] += 1
        amounts[(r.channel, r.currency)] += r.amount
    assert matched == {k: (n, amounts[k], 0) for k, n in expected.items()}
    assert all(i["passed"] for i in result.summary["invariants"])


# ---- every injection, exactly what was injected ----


DOCUMENTED = {  # (file kind, injection): (class, state it is left in)
    ("clearing", "missing"): ("missing_in_file", "suspense"),
    ("clearing", "amount"): ("amount_mismatch", "resolved"),
    ("clearing", "duplicate"): ("duplicate", "resolved"),
    ("clearing", "unknown"): ("missing_at_host", "suspense"),
    ("clearing", "status"): ("status_mismatch", "resolved"),
    ("clearing", "fee"): ("fee_mismatch", "resolved"),
    ("clearing", "late"): ("late_presentment", "exception"),  # nothing missing to clear: "an exception"
    ("bank", "missing"): ("missing_in_file", "suspense"),
    ("bank", "amount"): ("amount_mismatch", "suspense"),
    ("bank", "duplicate"): ("duplicate", "suspense"),
    ("bank", "unidentified"): ("unidentified_funds", "suspense"),
}


def _expected_adjustments(kind: str, inject: str, file: Path, key: str, db: Path) -> list[tuple[str, int]]:
    """What CLASSES says the resolution books, worked out from the file's record and the journal's row."""
    if kind == "bank" or inject not in ("amount", "duplicate", "status", "fee"):
        return []
    rrn = key.split("/")[0]
    record = next(r for r in records_of(file) if r.rrn == rrn)
    ((amount, fee),) = query(db, "SELECT amount, ABS(fee) FROM transactions WHERE rrn = ?", rrn)
    if inject == "amount":
        return [("merchant", record.amount - amount)]
    if inject == "fee":
        return [("fee_income", record.fee - fee)]
    return [("channel", -record.amount)]  # a repeated presentment, or one of a payment reversed before cut-over


@pytest.mark.parametrize("kind,inject", DOCUMENTED)
def test_each_injected_discrepancy_is_found_alone_and_resolved_as_documented(settled: Settled, tmp_path, kind,
                                                                             inject) -> None:
    db = copy_journal(settled.db, tmp_path)
    business_date = D1 if inject == "late" else D  # a late presentment is of a payment settled on an earlier date
    manifest = run_make_file(db, business_date, kind, f"{inject}=1", SEED, tmp_path / f"{kind}-file")
    cls, state = DOCUMENTED[(kind, inject)]
    assert manifest["expected"] == {cls: 1}
    (key,) = manifest["injected"][inject]

    result = recon(db, business_date, [(kind, Path(manifest["file"]))], tmp_path / "out")
    assert found(result) == manifest["expected"]
    (item,) = result.summary["discrepancies"]
    assert (item["class"], item["source"], item["state"]) == (cls, kind, state)
    assert item["key"] == key or item["key"].startswith(f"{key}#")  # a repeat's key counts its occurrence
    assert result.summary["verdict"] == ("open exceptions" if state == "exception" else "resolved")
    assert cls in CLASSES and all(i["passed"] for i in result.summary["invariants"])
    booked = query(db, "SELECT target, amount, discrepancy_id FROM adjustments ORDER BY id")
    assert [(t, a) for t, a, _ in booked] == _expected_adjustments(kind, inject, Path(manifest["file"]), key, db)
    assert {i for _, _, i in booked} <= {item["id"]}


def test_reconciliation_run_again_resolves_nothing_twice(settled: Settled, tmp_path) -> None:
    db = copy_journal(settled.db, tmp_path)
    clearing = run_make_file(db, D, "clearing", "missing=1,amount=1,duplicate=1,unknown=2,status=2,fee=1", SEED,
                             tmp_path / "clearing.txt")
    bank = run_make_file(db, D, "bank", "missing=1,amount=1,duplicate=1,unidentified=1", SEED, tmp_path / "bank.csv")
    files = [("clearing", Path(clearing["file"])), ("bank", Path(bank["file"]))]
    first = recon(db, D, files, tmp_path / "out")
    assert found(first) == dict(Counter(clearing["expected"]) + Counter(bank["expected"]))
    assert first.new == sum(found(first).values()) == sum(clearing["expected"].values()) + sum(bank["expected"].values())
    snapshot = (query(db, "SELECT * FROM adjustments ORDER BY id"), balances(db),
                query(db, "SELECT id, class, state, resolution FROM discrepancies ORDER BY id"),
                query(db, "SELECT id, status, settlement_state FROM transactions ORDER BY id"))
    assert snapshot[0]  # the first run did book adjustments, so "unchanged" below means something

    resent = tmp_path / "resent"  # the same files sent again under other names find the same discrepancies
    resent.mkdir()
    files = [(kind, Path(shutil.copy(path, resent / f"again-{path.name}"))) for kind, path in files]
    second = recon(db, D, files, tmp_path / "out", hour=13)
    assert (second.new, first.summary["run"], second.summary["run"]) == (0, 1, 2)
    assert found(second) == found(first)
    assert (query(db, "SELECT * FROM adjustments ORDER BY id"), balances(db),
            query(db, "SELECT id, class, state, resolution FROM discrepancies ORDER BY id"),
            query(db, "SELECT id, status, settlement_state FROM transactions ORDER BY id")) == snapshot
    assert query(db, "SELECT run FROM recon_runs WHERE business_date = ? ORDER BY run", D) == [(1,), (2,)]


# ---- from the journal alone: an unreversed timeout and an orphan reversal ----


def _cut(db: Path, business_date: str, out: Path) -> CutoverReport:
    report = run_cutover(db, business_date, out=out / business_date, clock=lambda: at(day(business_date, 1), 9))
    assert not report.failed, [i.detail for i in report.invariants if not i.passed]
    return report


def test_an_unreversed_timeout_is_reversed_at_the_host_once_and_netted_into_the_next_cutover(exceptions_day,
                                                                                            tmp_path) -> None:
    raw, made = exceptions_day
    db = copy_journal(raw, tmp_path)
    lost = made["uncounted"]
    before = dict(balances(db))["A-1001"]
    assert before == OPENING["A-1001"] - made["counted"].amount - lost["amount"]
    day_d = _cut(db, D, tmp_path)

    result = recon(db, D, [("clearing", Path(day_d.result.files["clearing_file"]))], tmp_path / "out")
    assert found(result) == {"unreversed_timeout": 1, "orphan_reversal": 1}
    (item,) = [d for d in result.summary["discrepancies"] if d["class"] == "unreversed_timeout"]
    assert (item["source"], item["state"], item["amount"]) == ("terminal", "resolved", lost["amount"])
    assert item["key"] == f"10000001/000001/{lost['stan']}"
    assert dict(balances(db))["A-1001"] == before + lost["amount"]  # the cardholder has the money back
    assert query(db, "SELECT status, reversal_reason, settlement_state FROM transactions WHERE rrn = ?", lost["rrn"]) == \
        [("reversed", "reconciliation", "settled")]  # settled it stays: the merchant was paid for it on D
    assert query(db, "SELECT target, merchant_id, channel, amount, rrn FROM adjustments ORDER BY target") == [
        ("channel", M1, "card:unionpay", -lost["amount"], lost["rrn"]),
        ("merchant", M1, "card:unionpay", -lost["amount"], lost["rrn"])]

    again = recon(db, D, [("clearing", Path(day_d.result.files["clearing_file"]))], tmp_path / "out", hour=13)
    assert again.new == 0 and dict(balances(db))["A-1001"] == before + lost["amount"]
    assert query(db, "SELECT COUNT(*) FROM adjustments") == [(2,)]

    next_day = _cut(db, D1, tmp_path)
    assert next_day.result.adjustments_applied == 2
    (batch,) = next_day.result.batches
    assert {k: batch[k] for k in ("merchant_id", "channel", "sales_amount", "adjustments", "fees", "net")} == {
        "merchant_id": M1, "channel": "card:unionpay", "sales_amount": 0, "adjustments": -lost["amount"], "fees": 0,
        "net": -lost["amount"]}
    (record,) = records_of(Path(next_day.result.files["clearing_file"]))
    assert (record.kind, record.sign, record.amount, record.rrn, record.terminal_id, record.masked_pan) == \
        ("reversal", "C", lost["amount"], lost["rrn"], "10000001", "")
    assert query(db, "SELECT COUNT(*) FROM adjustments WHERE applied_date = ?", D1) == [(2,)]

    third = recon(db, D, [("clearing", Path(day_d.result.files["clearing_file"]))], tmp_path / "out", hour=14)
    assert third.new == 0 and dict(balances(db))["A-1001"] == before + lost["amount"]


def test_the_next_days_own_clearing_file_with_its_reversal_record_reconciles(exceptions_day, tmp_path) -> None:
    db = copy_journal(exceptions_day[0], tmp_path)
    recon(db, D, [("clearing", Path(_cut(db, D, tmp_path).result.files["clearing_file"]))], tmp_path / "out-d")
    next_day = _cut(db, D1, tmp_path)
    assert [r.kind for r in records_of(Path(next_day.result.files["clearing_file"]))] == ["reversal"]
    result = recon(db, D1, [("clearing", Path(next_day.result.files["clearing_file"]))], tmp_path / "out-d1")
    assert (found(result), result.summary["verdict"]) == ({}, "balanced")


def test_an_orphan_reversal_waits_in_suspense_then_ages_into_an_exception(exceptions_day, tmp_path) -> None:
    raw, made = exceptions_day
    db = copy_journal(raw, tmp_path)
    _cut(db, D, tmp_path)
    first = recon(db, D, [], tmp_path / "out")
    (item,) = [d for d in first.summary["discrepancies"] if d["class"] == "orphan_reversal"]
    orphan = made["orphan"]
    assert (item["source"], item["key"], item["amount"], item["state"]) == \
        ("journal", f"{orphan['tid']}/{orphan['stan']}", orphan["amount"], "suspense")

    def state_after_recon_of(offset: int) -> str:
        for n in range(1, offset + 1):
            if not query(db, "SELECT 1 FROM settlement_days WHERE business_date = ?", day(D, n)):
                _cut(db, day(D, n), tmp_path)  # days without a payment: cut over all the same
        result = recon(db, day(D, offset), [], tmp_path / f"out-{offset}")
        assert found(result) == {}  # the later days have nothing of their own
        ((state, resolution),) = query(db, "SELECT state, resolution FROM discrepancies WHERE id = ?", item["id"])
        return f"{state}: {resolution}"

    assert state_after_recon_of(SUSPENSE_DAYS - 1) == "suspense: held in suspense"
    assert state_after_recon_of(SUSPENSE_DAYS) == "exception: held in suspense; aged out: exception"


# ---- late presentment ----


def test_a_late_presentment_clears_the_earlier_days_missing_item(settled: Settled, tmp_path) -> None:
    db = copy_journal(settled.db, tmp_path)
    manifest = run_make_file(db, D, "clearing", "missing=1", SEED, tmp_path / "clearing-d.txt")
    first = recon(db, D, [("clearing", Path(manifest["file"]))], tmp_path / "out-d")
    (missing,) = first.summary["discrepancies"]
    assert (missing["class"], missing["state"]) == ("missing_in_file", "suspense")

    rrn = missing["key"].split("/")[0]
    (late,) = [r for r in records_of(settled.clearing_file(D)) if r.rrn == rrn]
    next_file = tmp_path / "clearing-d1.txt"
    write_clearing_file(next_file, ClearingHeader(business_date=D1, created_at=f"{D1}T23:59:59", sender_id="48021000"),
                        [*records_of(settled.clearing_file(D1)), replace(late, business_date=D1)])
    second = recon(db, D1, [("clearing", next_file)], tmp_path / "out-d1")
    assert found(second) == {"late_presentment": 1}
    (item,) = second.summary["discrepancies"]
    assert (item["state"], item["transaction_id"]) == ("resolved", missing["transaction_id"])
    assert query(db, "SELECT state, resolution FROM discrepancies WHERE id = ?", missing["id"]) == \
        [("resolved", f"presented late on {D1}")]
    assert second.summary["verdict"] == "resolved"


# ---- bad input: refused, nothing written ----


def _bad_trailer(settled: Settled, folder: Path) -> tuple[Path, list[str]]:
    path = folder / "bad-trailer.txt"
    lines = settled.clearing_file(D).read_text().splitlines(keepends=True)
    count = int(lines[-1][1:10])
    lines[-1] = f"T{count + 1:09d}{lines[-1][10:]}"
    path.write_text("".join(lines))
    return path, [f"{path} line {len(lines)}", "record_count"]


def _unknown_merchant(settled: Settled, folder: Path) -> tuple[Path, list[str]]:
    path = folder / "stranger.txt"
    records = records_of(settled.clearing_file(D))
    records[1] = replace(records[1], merchant_id="898310048169999")
    write_clearing_file(path, ClearingHeader(business_date=D, created_at=f"{D}T23:59:59", sender_id="48021000"), records)
    return path, [f"{path} line 3", "merchant_id", "898310048169999"]


BAD_INPUT = {
    "trailer count": lambda s, f: ("clearing", *_bad_trailer(s, f), D),
    "unknown merchant": lambda s, f: ("clearing", *_unknown_merchant(s, f), D),
    "header of another date": lambda s, f: ("clearing", s.clearing_file(D1), [f"{s.clearing_file(D1)} line 1",
                                                                               "business_date", D1], D),
    "date not cut over": lambda s, f: ("clearing", s.clearing_file(D), [day(D1, 1), "no cut-over"], day(D1, 1)),
    "unknown file kind": lambda s, f: ("scheme", s.clearing_file(D), [f"--file scheme={s.clearing_file(D)}"], D),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_line_on_stderr_and_leaves_nothing_written(settled: Settled, tmp_path, case) -> None:
    db = copy_journal(settled.db, tmp_path)
    kind, path, words, business_date = BAD_INPUT[case](settled, tmp_path)
    out = tmp_path / "out"
    refused = possim("recon", "run", "--db", str(db), "--date", business_date, "--file", f"{kind}={path}",
                     "--out", str(out))
    assert refused.returncode == 1 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith("possim: error: ") and "Traceback" not in refused.stderr
    assert [w for w in words if w not in line] == [], line
    assert nothing_reconciled(db)
    assert not out.exists()


# ---- outputs ----


class _Bars(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.bars: list[tuple[str, str, str, int]] = []
        self.verdict: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "rect" and "bar" in (a.get("class") or "").split():
            self.bars.append((a["data-channel"] or "", a["data-currency"] or "", a["data-kind"] or "",
                              int(a["data-amount"] or "")))
        if a.get("data-verdict"):
            self.verdict = a["data-verdict"]


@dataclass
class Reported:
    db: Path
    run: subprocess.CompletedProcess[str]
    folder: Path
    out: Path


@pytest.fixture(scope="module")
def reported(settled: Settled, tmp_path_factory) -> Reported:
    folder = tmp_path_factory.mktemp("reported")
    db = copy_journal(settled.db, folder)
    clearing = run_make_file(db, D, "clearing", "missing=1,amount=1,unknown=1,status=1", SEED, folder / "clearing.txt")
    bank = run_make_file(db, D, "bank", "unidentified=1", SEED, folder / "bank.csv")
    out = folder / "out"
    run = possim("recon", "run", "--db", str(db), "--date", D, "--file", f"clearing={clearing['file']}",
                 "--file", f"bank={bank['file']}", "--out", str(out), "--json")
    return Reported(db, run, folder, out)


def test_recon_run_json_prints_exactly_one_object(reported: Reported) -> None:
    assert reported.run.returncode == 0, reported.run.stderr
    (line,) = reported.run.stdout.splitlines()
    result = json.loads(line)
    assert (result["business_date"], result["run"], result["verdict"], result["new"]) == (D, 1, "resolved", 5)
    assert {c: v["count"] for c, v in result["classes"].items()} == {
        "missing_in_file": 1, "amount_mismatch": 1, "missing_at_host": 1, "status_mismatch": 1, "unidentified_funds": 1}
    assert sorted(Path(p).name for p in result["files"].values()) == sorted(p.name for p in reported.out.iterdir())


def test_the_report_parses_with_one_bar_of_each_kind_per_channel(reported: Reported, settled: Settled) -> None:
    parser = _Bars()
    parser.feed((reported.out / f"recon-{D}.html").read_text(encoding="utf-8"))
    parser.close()
    assert parser.verdict == "resolved"
    day_channels = {(r.channel, r.currency) for r in records_of(settled.clearing_file(D))}
    assert len(day_channels) == 4  # card:unionpay, card:visa, qr:wechat in CNY; card:mastercard in USD
    assert Counter((ch, cur, kind) for ch, cur, kind, _ in parser.bars) == \
        Counter((ch, cur, kind) for ch, cur in day_channels for kind in ("matched", "unmatched"))
    summary = json.loads((reported.out / f"recon-{D}.json").read_text())
    shown = {(ch, cur, kind): amount for ch, cur, kind, amount in parser.bars}
    for c in summary["channels"]:
        assert shown[(c["channel"], c["currency"], "matched")] == c["matched_amount"]
        assert shown[(c["channel"], c["currency"], "unmatched")] == c["unmatched_amount"]
    from_clearing = [d for d in summary["discrepancies"] if d["source"] == "clearing"]
    assert sum(c["unmatched_count"] for c in summary["channels"]) == len(from_clearing) == 4


def test_the_exceptions_csv_lists_every_discrepancy_with_its_state(reported: Reported) -> None:
    with (reported.out / f"exceptions-{D}.csv").open(newline="", encoding="utf-8") as source:
        listed = {(int(r["id"]), r["class"], r["state"], r["resolution"]) for r in csv.DictReader(source)}
    stored = set(query(reported.db, "SELECT id, class, state, resolution FROM discrepancies"))
    assert listed == stored and len(stored) == 5
    assert {state for _, _, state, _ in listed} == {"resolved", "suspense"}


def test_no_output_file_carries_a_full_pan(reported: Reported, settled: Settled) -> None:
    outputs = [*reported.out.iterdir(), reported.folder / "clearing.txt", reported.folder / "bank.csv",
               *(Path(p) for c in settled.cutovers.values() for p in c.result.files.values())]
    assert len(outputs) == 9
    assert "622848*********0017" in settled.clearing_file(D).read_text()  # PANs appear, masked
    leaks = {p.name: [pan for pan in FULL_PANS if pan in p.read_text(encoding="utf-8")] for p in outputs}
    assert leaks == {p.name: [] for p in outputs}


# ---- found while testing ----


def test_a_voided_sale_in_a_batch_out_of_balance_is_not_missing_at_host(tmp_path) -> None:
    """cup terminals upload a voided sale with the rest of the batch; the host has it, voided."""
    with lab(tmp_path, at(D, 9)) as lb:
        async def close_out_of_balance() -> dict[str, Any]:
            pos = lb.pos("10000001")
            try:
                assert (await pos.sign_on()).approved
                voided = await pos.purchase(1500, resolve_card("approve"))
                assert (await pos.void(voided.stan)).approved
                lost = await uncounted_sale(pos, 2300)
                closed = await pos.batch_close()
                assert closed.closed and closed.balanced is False
                return lost
            finally:
                await close_all(pos)

        lost = asyncio.run(close_out_of_balance())
    _cut(lb.db, D, tmp_path)
    store = SettlementStore(lb.db)
    try:
        findings = [(f.cls, f.key) for f in match_terminals(store, D)]
    finally:
        store.close()
    assert findings == [("unreversed_timeout", f"10000001/000001/{lost['stan']}")]


def test_a_terminal_upload_the_host_never_approved_is_held_in_suspense(tmp_path) -> None:
    """The terminal's state file worked against a standby host first: its batch holds a sale this host never
    saw, so the close is out of balance and the upload names a STAN this host never approved."""
    state = tmp_path / "terminal-10000001.sqlite"
    with lab(tmp_path / "standby", at(D, 9)) as standby:
        async def elsewhere() -> None:
            pos = standby.pos("10000001", state)
            try:
                assert (await pos.sign_on()).approved
                assert (await pos.purchase(3300, resolve_card("approve"))).approved
            finally:
                await close_all(pos)

        asyncio.run(elsewhere())
    with lab(tmp_path / "host", at(D, 10)) as lb:
        async def here() -> None:
            pos = lb.pos("10000001", state)
            try:
                assert (await pos.sign_on()).approved
                assert (await pos.purchase(4100, resolve_card("approve"))).approved
                closed = await pos.batch_close()
                assert closed.closed and closed.balanced is False and closed.uploaded == 2
            finally:
                await close_all(pos)

        asyncio.run(here())
    _cut(lb.db, D, tmp_path)
    out = tmp_path / "out"
    result = recon(lb.db, D, [], out)
    assert found(result) == {"missing_at_host": 1}
    (item,) = result.summary["discrepancies"]
    assert (item["source"], item["key"], item["state"]) == ("terminal", "10000001/000001/000002", "suspense")
    assert (out / f"recon-{D}.html").is_file()
