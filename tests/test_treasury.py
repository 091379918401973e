"""The day's government fee collections reconciled three ways (settlement/treasury.py, docs/fees.md
"Treasury reconciliation"): the host journal's confirmed fee payments, the finance system's daily list asked
over the wire, and the collection account's statement.

One real day is built per module: the finance bureau on its own thread over its own SQLite file, the host
on loopback TCP over its journal, our Terminal paying three sample notices of two agencies by card and a
fourth the finance system never confirms (every confirmation dropped: N4, rolled back), then the cut-over.
Each test works on copies of both files, against a finance bureau started over its copy.

What the day should reconcile to is worked out here from the notices paid (fixtures/finance.yaml), the RRNs
the terminal was given and the finance system's own file, never from the reconciliation's code.
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from possim.acquirer.core import build_host
from possim.acquirer.fee_desk import finance_key
from possim.acquirer.finance.bureau import FinanceBureau, open_bureau
from possim.acquirer.finance.server import FinanceThread
from possim.acquirer.server import HostServer
from possim.acquirer.settings import FeeSettings
from possim.settlement.bank_statement import StatementError
from possim.settlement.errors import SettlementError
from possim.settlement.jobs import daily_list, run_cutover, run_make_file, run_treasury
from possim.settlement.treasury import TreasuryResult
from possim.terminal import Terminal, TerminalState, load_profile, resolve_card
from possim.terminal.link import TcpLink
from possim.wire.clock import SteppingClock
from possim.wire.nontax import MSG_PAYMENT_CONFIRM

from fee_support import FEE_TID, FINE, LICENCE, PAYER_CARD, SMALL_FINE, TUITION, eventually
from settlement_support import BUILTIN_FIXTURES, D, D1, at, query

POSSIM = [sys.executable, "-m", "possim.cli"]
SEED = 7
QUICK = FeeSettings(finance_timeout=0.3, confirm_attempts=2, cancel_backoff=(1,))
"""The host gives the finance system 0.3 s an answer, twice per confirmation: the rolled-back payment is quick."""
RECONCILED = at(D1, 8, 15)
"""When the treasury reconciliation runs: the next morning."""

# What fixtures/finance.yaml says each notice is for: (agency, amount due in minor units).
PAID_NOTICES = {FINE: ("310101001", 20000), LICENCE: ("310101002", 11000), SMALL_FINE: ("310101001", 5000)}
ROLLED_BACK = (TUITION, "310101003", 620000)
FEES = yaml.safe_load((BUILTIN_FIXTURES / "host.yaml").read_text(encoding="utf-8"))["fees"]
"""host.yaml's fees: section (the accounts), read as data."""


@dataclass(frozen=True)
class Paid:
    """One fee payment of the day, as the terminal and the finance system's file have it."""

    pay_code: str
    agency: str
    amount: int
    rrn: str
    confirm_no: str


@dataclass(frozen=True)
class Day:
    folder: Path
    paid: tuple[Paid, ...]
    rolled_back_rrn: str

    @property
    def total(self) -> int:
        return sum(p.amount for p in self.paid)


# ---- the day ----


async def _business(folder: Path, finance: tuple[str, int], bureau: FinanceBureau) -> tuple[list[Any], Any]:
    clock = SteppingClock(at(D, 10), timedelta(milliseconds=5))
    core = build_host("cup", folder / "journal.sqlite", clock=clock)
    core.fees.settings = QUICK
    core.fees.connect(finance, finance_key())
    server = HostServer(core)
    address, port = await server.start("127.0.0.1", 0)
    profile = load_profile(FEE_TID, dialect="cup", host=f"{address}:{port}", timeout=5.0, reversal_retries=1)
    t = Terminal(profile, TcpLink(address, port, profile.framing), TerminalState(FEE_TID, folder / "terminal.sqlite"),
                 clock=clock)
    try:
        assert (await t.sign_on()).approved
        card = resolve_card(PAYER_CARD)
        results = [await t.fee_payment(code, amount, card) for code, (_, amount) in PAID_NOTICES.items()]
        bureau.faults.add(MSG_PAYMENT_CONFIRM, "drop", times=QUICK.confirm_attempts)
        lost = await t.fee_payment(ROLLED_BACK[0], ROLLED_BACK[2], card)
        # the confirmation may have got there: the host cancels it in the background; let that finish
        assert await eventually(lambda: all(f.state in ("confirmed", "cancelled") for f in core.journal.fee_payments()))
    finally:
        await t.link.close()
        t.state.close()
        await server.stop()
        core.close()
    return results, lost


def _finance_file(db: Path) -> dict[str, tuple[str, str, int, str]]:
    """Every confirmation in the finance system's file by trade number: (pay code, confirm no, amount, state)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT trade_no, pay_code, confirm_no, amount, state FROM confirmations").fetchall()
    return {trade: (code, number, amount, state) for trade, code, number, amount, state in rows}


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Day:
    folder = tmp_path_factory.mktemp("fee-day")
    bureau = open_bureau(folder / "finance.sqlite", clock=SteppingClock(at(D, 9)), rng=random.Random(SEED))
    thread = FinanceThread(bureau)
    try:
        results, lost = asyncio.run(_business(folder, thread.start("127.0.0.1", 0), bureau))
    finally:
        thread.stop()
        bureau.store.close()
    cut = run_cutover(folder / "journal.sqlite", D, out=folder / "settlement", clock=lambda: at(D1, 0, 30))
    assert not cut.failed, cut.to_json()

    at_finance = _finance_file(folder / "finance.sqlite")
    paid = []
    for result, (code, (agency, amount)) in zip(results, PAID_NOTICES.items()):
        assert result.approved and result.response_code == "00" and result.rrn, result.message
        assert at_finance[result.rrn][::2] == (code, amount) and at_finance[result.rrn][3] == "confirmed"
        assert result.notice["confirm_no"] == at_finance[result.rrn][1]
        paid.append(Paid(code, agency, amount, result.rrn, at_finance[result.rrn][1]))
    assert lost.response_code == "N4" and not lost.approved
    assert [c for c in at_finance.values() if c[0] == ROLLED_BACK[0] and c[3] == "confirmed"] == []
    return Day(folder, tuple(paid), lost.rrn or "")


def _copy(src: Path, dest: Path) -> Path:
    """A SQLite file with its WAL, should one be left beside it."""
    for suffix in ("", "-wal"):
        if Path(f"{src}{suffix}").exists():
            shutil.copy(f"{src}{suffix}", f"{dest}{suffix}")
    return dest


@dataclass
class Lab:
    """One test's copies of the day's books, the finance bureau running over its copy."""

    folder: Path
    journal: Path
    bureau: FinanceBureau
    finance: tuple[str, int]

    @property
    def out(self) -> Path:
        return self.folder / "treasury"

    def statement(self, inject: str | None = None) -> dict[str, Any]:
        return run_make_file(self.journal, D, "collection", inject, SEED, self.folder / "collection.csv")

    def finance_list(self, business_date: str = D) -> dict[str, Any]:
        return asyncio.run(daily_list(self.finance, business_date, clock=lambda: RECONCILED))

    def reconcile(self, statement: str | Path, business_date: str = D, when: Any = RECONCILED) -> TreasuryResult:
        return run_treasury(self.journal, business_date, self.finance_list(business_date), statement, out=self.out,
                            clock=lambda: when)

    def cli(self, statement: str | Path, *extra: str, finance: str | None = None) -> subprocess.CompletedProcess[str]:
        address = finance or f"{self.finance[0]}:{self.finance[1]}"
        return subprocess.run([*POSSIM, "fees", "reconcile", "--db", str(self.journal), "--date", D, "--finance",
                               address, "--file", f"collection={statement}", *extra],
                              capture_output=True, text=True, timeout=60)

    def recorded(self) -> tuple[list[Any], list[Any]]:
        """What the reconciliation left in the journal: treasury days and discrepancies."""
        return (query(self.journal, "SELECT business_date, reconciled_at FROM treasury_days"),
                query(self.journal, "SELECT business_date, class, source, key, amount FROM discrepancies"))


@pytest.fixture
def lab(day: Day, tmp_path: Path) -> Iterator[Lab]:
    journal = _copy(day.folder / "journal.sqlite", tmp_path / "journal.sqlite")
    bureau = open_bureau(_copy(day.folder / "finance.sqlite", tmp_path / "finance.sqlite"),
                         clock=SteppingClock(RECONCILED), rng=random.Random(SEED))
    thread = FinanceThread(bureau)
    try:
        yield Lab(tmp_path, journal, bureau, thread.start("127.0.0.1", 0))
    finally:
        thread.stop()
        bureau.store.close()


# ---- reading what was written, independently of the code that wrote it ----


def rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def minor(text: str) -> int:
    """"200.00" → 20000 (CNY has two decimals)."""
    return int(Decimal(text) * 100)


def major(amount: int) -> str:
    return f"{amount // 100}.{amount % 100:02d}"


def credit(statement: str | Path, reference: str) -> int:
    """The amount of the one credit `reference` has on the statement."""
    (line,) = [r for r in rows(statement) if r["reference"] == reference]
    return minor(line["amount"])


def agency_rows(paid: list[Paid] | tuple[Paid, ...], **changes: dict[str, int]) -> list[dict[str, Any]]:
    """The summary's per-agency rows when host, finance and collection account each saw `paid`; `changes`
    overrides fields per agency (keyed "a" + agency code) for a side that saw something else."""
    by_agency: dict[str, list[Paid]] = {}
    for p in paid:
        by_agency.setdefault(p.agency, []).append(p)
    out = []
    for agency in sorted(set(by_agency) | {k[1:] for k in changes}):
        items = by_agency.get(agency, [])
        row: dict[str, Any] = {f"{side}_{what}": value for side in ("host", "finance", "collection")
                               for what, value in (("count", len(items)), ("amount", sum(p.amount for p in items)))}
        row.update(changes.get(f"a{agency}", {}))
        sides = {(row[f"{s}_count"], row[f"{s}_amount"]) for s in ("host", "finance", "collection")}
        out.append({"agency": agency, **row, "balanced": len(sides) == 1})
    return out


def sweep(result: TreasuryResult) -> list[tuple[str, str, str, str, str]]:
    return [(r["from_account"], r["to_account"], r["amount"], r["currency"], r["value_date"])
            for r in rows(result.files["sweep_csv"])]


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode not in (0, None)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("possim: error: "), result.stderr
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- 1. a balanced day ----


def test_balanced_day_every_agency_agrees_and_the_files_say_exactly_what_was_paid(lab: Lab, day: Day) -> None:
    made = lab.statement()
    assert (made["records"], made["expected"]) == (3, {})
    assert sorted((r["reference"], minor(r["amount"])) for r in rows(made["file"])) == \
        sorted((p.rrn, p.amount) for p in day.paid)
    finance = lab.finance_list()
    assert sorted(c["channelTradeNo"] for c in finance["confirmations"]) == sorted(p.rrn for p in day.paid)

    result = lab.reconcile(made["file"])

    s = result.summary
    assert result.balanced and s["verdict"] == "balanced" and s["discrepancies"] == []
    assert s["agencies"] == agency_rows(day.paid)
    assert [(a["agency"], a["host_count"], a["host_amount"]) for a in s["agencies"]] == \
        [("310101001", 2, 25000), ("310101002", 1, 11000)]
    assert (s["business_date"], s["identified"], s["unidentified"], s["currency"]) == (D, day.total, 0, "156")
    assert json.loads(Path(result.files["summary_json"]).read_text(encoding="utf-8")) == s
    assert lab.recorded() == ([(D, s["reconciled_at"])], [])

    # one confirmation file per agency, listing exactly that agency's paid notices
    assert set(result.files) == {"summary_json", "sweep_csv", "confirmations_310101001", "confirmations_310101002"}
    for agency in ("310101001", "310101002"):
        listed = sorted((r["pay_code"], r["agency_code"], r["amount"], r["currency"], r["trade_no"], r["confirm_no"])
                        for r in rows(result.files[f"confirmations_{agency}"]))
        assert listed == sorted((p.pay_code, agency, major(p.amount), "CNY", p.rrn, p.confirm_no)
                                for p in day.paid if p.agency == agency)
        assert all(r["paid_at"].startswith(D) for r in rows(result.files[f"confirmations_{agency}"]))

    # the sweep empties the collection account into the clearing account the next day, nothing to suspense
    assert sweep(result) == [(FEES["collection_account"], FEES["clearing_account"], major(day.total), "CNY", D1)]

    # the rolled-back payment appears nowhere
    assert day.rolled_back_rrn and ROLLED_BACK[1] not in {a["agency"] for a in s["agencies"]}
    for path in (made["file"], *result.files.values()):
        text = Path(path).read_text(encoding="utf-8")
        assert day.rolled_back_rrn not in text and ROLLED_BACK[0] not in text


# ---- 2. each injection of the practice collection statement, alone ----


@pytest.mark.parametrize("injection, cls", [
    ("missing", "missing_in_file"), ("amount", "amount_mismatch"), ("duplicate", "duplicate"),
    ("unidentified", "unidentified_funds"),
])
def test_each_collection_injection_alone_is_found_and_nothing_else(lab: Lab, day: Day, injection: str,
                                                                   cls: str) -> None:
    made = lab.statement(f"{injection}=1")
    (ref,) = made["injected"][injection]
    assert made["expected"] == {cls: 1}

    result = lab.reconcile(made["file"])

    s = result.summary
    (found,) = s["discrepancies"]
    assert (found["class"], found["source"]) == (cls, "collection")
    assert lab.recorded()[1] == [(D, cls, "collection", found["key"], found["amount"])]
    by_rrn = {p.rrn: p for p in day.paid}
    if injection == "unidentified":
        amount = credit(made["file"], ref)
        assert found["key"].startswith(ref) and found["amount"] == amount
        assert s["verdict"] == "balanced" and s["agencies"] == agency_rows(day.paid)  # never to an agency
        assert (s["identified"], s["unidentified"]) == (day.total, amount)
        assert sweep(result) == [
            (FEES["collection_account"], FEES["clearing_account"], major(day.total), "CNY", D1),
            (FEES["collection_account"], FEES["suspense_account"], major(amount), "CNY", D1),
        ]
        for name, path in result.files.items():
            if name.startswith("confirmations_"):
                assert ref not in Path(path).read_text(encoding="utf-8")
        return
    paid = by_rrn[ref]
    assert s["verdict"] == "differences" and not result.balanced
    if injection == "duplicate":
        assert found["key"] == f"{ref}#2" and found["amount"] == paid.amount
        assert [r["reference"] for r in rows(made["file"])].count(ref) == 2
        return
    assert found["key"] == ref
    others = [p for p in day.paid if p.agency == paid.agency and p is not paid]
    if injection == "missing":
        assert found["amount"] == paid.amount
        seen = {"collection_count": len(others), "collection_amount": sum(p.amount for p in others)}
    else:
        credited = credit(made["file"], ref)
        assert credited != paid.amount and found["amount"] == abs(credited - paid.amount)
        seen = {"collection_count": len(others) + 1, "collection_amount": sum(p.amount for p in others) + credited}
    assert s["agencies"] == agency_rows(day.paid, **{f"a{paid.agency}": seen})
    listed = result.files.get(f"confirmations_{paid.agency}")
    assert listed is None or ref not in Path(listed).read_text(encoding="utf-8")


@pytest.mark.parametrize("injection, cls", [("missing", "missing_in_file"), ("amount", "amount_mismatch")])
def test_cli_exits_1_on_differences_with_the_summary_as_one_json_object(lab: Lab, injection: str, cls: str) -> None:
    made = lab.statement(f"{injection}=1")
    done = lab.cli(made["file"], "--out", str(lab.out), "--json")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["verdict"] == "differences"
    assert [(d["class"], d["source"], d["key"]) for d in result["discrepancies"]] == \
        [(cls, "collection", made["injected"][injection][0])]
    assert [r[0] for r in lab.recorded()[0]] == [D]


# ---- 3. the finance system disagrees with the host ----


def test_confirmation_the_host_never_made_is_missing_at_host(lab: Lab, day: Day) -> None:
    code, agency, amount = ROLLED_BACK  # unpaid at the finance system since the host rolled it back
    foreign = "OTHERBANK-000000000001"
    assert foreign not in {p.rrn for p in day.paid} | {day.rolled_back_rrn}
    lab.bureau.store.confirm(code, amount, "POS", foreign, at(D, 15), date.fromisoformat(D), terminal_id="99999999",
                             currency_numeric="156")
    made = lab.statement()

    result = lab.reconcile(made["file"])

    s = result.summary
    assert [(d["class"], d["source"], d["key"], d["amount"]) for d in s["discrepancies"]] == \
        [("missing_at_host", "finance", foreign, amount)]
    assert s["verdict"] == "differences"
    assert s["agencies"] == agency_rows(day.paid, **{f"a{agency}": {"finance_count": 1, "finance_amount": amount}})
    assert f"confirmations_{agency}" not in result.files


def test_confirmation_cancelled_behind_the_hosts_back_is_missing_in_file(lab: Lab, day: Day) -> None:
    (paid,) = [p for p in day.paid if p.pay_code == LICENCE]
    lab.bureau.store.cancel(paid.pay_code, paid.rrn, "refunded at the agency's counter")
    made = lab.statement()

    result = lab.reconcile(made["file"])

    s = result.summary
    assert [(d["class"], d["source"], d["key"], d["amount"]) for d in s["discrepancies"]] == \
        [("missing_in_file", "finance", paid.rrn, paid.amount)]
    assert s["verdict"] == "differences"
    assert s["agencies"] == agency_rows(day.paid, **{f"a{paid.agency}": {"finance_count": 0, "finance_amount": 0}})
    assert f"confirmations_{paid.agency}" not in result.files


# ---- 4. once per date ----


def test_a_date_is_reconciled_once_and_the_second_run_writes_nothing(lab: Lab) -> None:
    first = lab.reconcile(lab.statement()["file"])
    written = {p: (Path(p).stat().st_mtime_ns, Path(p).read_bytes()) for p in first.files.values()}
    listing, recorded = sorted(lab.out.iterdir()), lab.recorded()
    other = lab.statement("unidentified=1")["file"]  # a second run, had it gone on, would write a suspense line

    with pytest.raises(SettlementError) as refused:
        lab.reconcile(other, when=RECONCILED + timedelta(hours=1))

    assert D in str(refused.value) and first.summary["reconciled_at"] in str(refused.value)
    assert {p: (Path(p).stat().st_mtime_ns, Path(p).read_bytes()) for p in first.files.values()} == written
    assert sorted(lab.out.iterdir()) == listing and lab.recorded() == recorded


def test_a_date_without_cut_over_is_refused_and_nothing_is_recorded(lab: Lab) -> None:
    statement = lab.statement()["file"]
    with pytest.raises(SettlementError, match="cut-over") as refused:
        lab.reconcile(statement, business_date=D1)
    assert D1 in str(refused.value)
    assert lab.recorded() == ([], []) and not lab.out.exists()


# ---- 5. bad input ----


@pytest.mark.parametrize("damage, line, field", [("second header", 3, "header"), ("bad amount", 3, "amount")])
def test_bad_statement_is_one_error_naming_file_and_line_and_nothing_is_recorded(lab: Lab, damage: str, line: int,
                                                                                 field: str) -> None:
    path = Path(lab.statement()["file"])
    with open(path, encoding="utf-8", newline="") as f:
        table = list(csv.reader(f))
    if damage == "second header":
        table.insert(2, table[0])
    else:
        table[2][table[0].index("amount")] = "11O.00"
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(table)

    with pytest.raises(StatementError) as bad:
        lab.reconcile(path)
    assert f"{path.name} line {line}, field {field}" in str(bad.value)

    done = lab.cli(path)
    assert f"{path.name} line {line}, field {field}" in one_line_error(done) and "Traceback" not in done.stderr
    assert lab.recorded() == ([], []) and not lab.out.exists() and not (lab.folder / "treasury").exists()


def test_cli_with_the_finance_system_down_is_one_line_and_records_nothing(lab: Lab) -> None:
    statement = lab.statement()["file"]
    address = f"127.0.0.1:{closed_port()}"
    done = lab.cli(statement, "--json", finance=address)
    assert address in one_line_error(done)
    assert json.loads(done.stdout).keys() == {"error"}
    assert lab.recorded() == ([], []) and not (lab.folder / "treasury").exists()


# ---- 6. --json ----


def test_cli_json_is_exactly_one_object_and_the_day_balances(lab: Lab, day: Day) -> None:
    done = lab.cli(lab.statement()["file"], "--out", str(lab.out), "--json")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1
    result = json.loads(done.stdout)
    assert isinstance(result, dict) and result["verdict"] == "balanced" and result["business_date"] == D
    assert (result["identified"], result["agencies"]) == (day.total, agency_rows(day.paid))
    files = result.pop("files")
    assert all(Path(p).is_file() and Path(p).parent == lab.out for p in files.values())
    assert (result.pop("finance_day_closed"), result.pop("finance_result")) == (True, "0000")  # the day closed there too
    assert lab.bureau.store.is_reconciled(date.fromisoformat(D))
    assert json.loads(Path(files["summary_json"]).read_text(encoding="utf-8")) == result
    assert lab.recorded()[0] == [(D, result["reconciled_at"])]


# ---- found while testing ----


def test_a_finance_list_whose_total_is_not_the_sum_of_its_confirmations_is_refused(lab: Lab) -> None:
    answer = lab.bureau._daily_list

    def wrong_total(body: dict[str, Any]) -> dict[str, Any]:
        return answer(body) | {"total": "1.00"}

    lab.bureau._daily_list = wrong_total  # type: ignore[method-assign]
    statement = lab.statement()["file"]
    with pytest.raises((SettlementError, RuntimeError, ValueError), match=r"1\.00"):
        lab.reconcile(statement)
    assert lab.recorded() == ([], []) and not lab.out.exists()


def test_a_credit_in_another_currency_does_not_pay_a_fee(lab: Lab, day: Day) -> None:
    path = Path(lab.statement()["file"])
    with open(path, encoding="utf-8", newline="") as f:
        table = list(csv.reader(f))
    rrn = table[1][table[0].index("reference")]
    table[1][table[0].index("currency")] = "USD"
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(table)

    result = lab.reconcile(path)

    assert not result.balanced
    assert any(d["source"] == "collection" and d["key"].startswith(rrn) for d in result.summary["discrepancies"])
    assert result.summary["identified"] == day.total - next(p.amount for p in day.paid if p.rrn == rrn)


def test_every_credit_without_a_reference_goes_to_suspense(lab: Lab, day: Day) -> None:
    path = Path(lab.statement()["file"])
    with open(path, "a", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([FEES["collection_account"], D, "CR", "123.45", "156", "", "cash deposit, no reference"])
        writer.writerow([FEES["collection_account"], D, "CR", "67.89", "156", "", "another one"])

    result = lab.reconcile(path)

    s = result.summary
    assert sorted((d["class"], d["amount"]) for d in s["discrepancies"]) == \
        [("unidentified_funds", 6789), ("unidentified_funds", 12345)]
    assert s["verdict"] == "balanced" and s["unidentified"] == 19134
    assert sweep(result)[1:] == [(FEES["collection_account"], FEES["suspense_account"], "191.34", "CNY", D1)]
