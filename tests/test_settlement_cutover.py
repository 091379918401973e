"""Cut-over of a business date on journals a real host wrote (docs/settlement.md): the business date a
message belongs to, one settlement state per row, batches per merchant, channel and currency with the fees
of fixtures/fees.yaml, the settlement CSV and clearing file, idempotence, refusals that leave nothing
half-done, and the money invariants, through the API and through `possim settle cutover`."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from host_support import purchase, sign_on
from possim.settlement.clearing_file import ClearingReader
from possim.settlement.errors import SettlementError
from possim.settlement.invariants import check_invariants
from possim.settlement.jobs import CutoverReport, run_cutover
from possim.settlement.states import STATES
from possim.settlement.store import SettlementStore
from possim.terminal import resolve_card
from settlement_support import (
    D, D1, FULL_PANS, M1, M2, Made, at, build_two_days, close_all, copy_journal, day, expected_fee, lab,
    lab_fixtures, move_to, query,
)

POSSIM = [sys.executable, "-m", "possim.cli"]
CUT_AT = at(D1, 1)
"""When the tests' cut-over of D runs: the host's business date is D+1 by then."""


def possim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POSSIM, *args], capture_output=True, text=True, timeout=60)


def cut(db: Path, business_date: str = D, out: Path | None = None, when=CUT_AT) -> CutoverReport:
    return run_cutover(db, business_date, out=out, clock=lambda: when)


@dataclass
class Settled:
    db: Path
    made: dict[str, Made]
    report: CutoverReport

    def row(self, name: str) -> dict[str, Any]:
        with closing(sqlite3.connect(self.db)) as conn:
            conn.row_factory = sqlite3.Row
            return dict(conn.execute("SELECT * FROM transactions WHERE rrn = ?", (self.made[name].rrn,)).fetchone())


@pytest.fixture(scope="module")
def two_days(tmp_path_factory) -> tuple[Path, dict[str, Made]]:
    folder = tmp_path_factory.mktemp("two-days")
    return folder / "journal.sqlite", build_two_days(folder)


@pytest.fixture(scope="module")
def settled(two_days, tmp_path_factory) -> Settled:
    raw, made = two_days
    folder = tmp_path_factory.mktemp("settled")
    db = copy_journal(raw, folder)
    return Settled(db, made, cut(db, out=folder / "out"))


# ---- the business date ----


def test_a_message_from_the_cutover_time_on_belongs_to_the_next_business_date(tmp_path) -> None:
    fixtures = lab_fixtures(tmp_path / "fixtures", cutover_time="23:00")
    with lab(tmp_path / "host", at(D, 22, 59), fixtures) as lb, lb.raw() as pos:
        dialect = lb.host.dialect
        assert pos.exchange(sign_on(dialect, "000001"))[39] == "00"
        before = pos.exchange(purchase(dialect, "000002", amount=1001, when=at(D, 22, 59)))
        move_to(lb.clock, at(D, 23, 0))
        at_the_hour = pos.exchange(purchase(dialect, "000003", amount=1002, when=at(D, 23, 0)))
        assert pos.exchange(sign_on(dialect, "000004", when=at(D, 23, 0)))[39] == "00"
        move_to(lb.clock, at(D, 23, 30))
        after = pos.exchange(purchase(dialect, "000005", amount=1003, when=at(D, 23, 30)))
    # signed on for D, the terminal is not signed on for D+1, which began at 23:00
    assert (before[39], at_the_hour[39], after[39]) == ("00", dialect.response_code("not_signed_on"), "00")
    assert dialect.response_code("not_signed_on") == "77"  # cup's own code (wire/dialects/cup.yaml)
    dates = dict(query(lb.db, "SELECT amount, business_date FROM transactions"))
    assert dates == {1001: D, 1002: D1, 1003: D1}


def test_after_cutover_the_running_host_puts_the_next_message_on_the_next_date(tmp_path) -> None:
    """Closing D at 10:05, long before midnight: the host's next message, at 10:06 of the same calendar day,
    belongs to D+1, needs a sign-on for D+1, and may void D's sale, which is then money back (a credit)."""
    approve = resolve_card("approve")
    with lab(tmp_path / "host", at(D, 10)) as lb:
        async def day_and_next() -> dict[str, Any]:
            pos = lb.pos("10000001")
            try:
                assert (await pos.sign_on()).approved
                seen: dict[str, Any] = {"sale": await pos.purchase(3500, approve)}
                seen["cutover"] = cut(lb.db, out=tmp_path / "out-d", when=at(D, 10, 5))  # the host keeps running
                move_to(lb.clock, at(D, 10, 6))
                seen["unsigned"] = await pos.purchase(1200, approve)
                seen["sign_on"] = await pos.sign_on()
                seen["next"] = await pos.purchase(1200, approve)
                seen["void"] = await pos.void(seen["sale"].stan)
                return seen
            finally:
                await close_all(pos)

        seen = asyncio.run(day_and_next())
    assert not seen["cutover"].failed
    codes = [seen[k].response_code for k in ("sale", "unsigned", "sign_on", "next", "void")]
    assert codes == ["00", "77", "00", "00", "00"]
    rows = query(lb.db, "SELECT stan, kind, amount, business_date, settlement_state FROM transactions ORDER BY id")
    assert rows[0] == (seen["sale"].stan, "sale", 3500, D, "settled")
    assert {r[3] for r in rows[1:]} == {D1} and all(r[4] is None for r in rows[1:])
    assert query(lb.db, "SELECT business_date FROM business_days") == [(D,)]

    later = cut(lb.db, D1, out=tmp_path / "out-d1", when=at(D1, 1))
    assert not later.failed, [i.detail for i in later.invariants if not i.passed]
    states = dict(query(lb.db, "SELECT kind, settlement_state FROM transactions"
                               " WHERE business_date = ? AND status = 'approved'", D1))
    assert states == {"sale": "settled", "sale_void": "settled"}  # the void of D's sale is a credit on D+1
    (batch,) = later.result.batches
    counts = (batch["sales_count"], batch["sales_amount"], batch["refunds_count"], batch["refunds_amount"])
    assert counts == (1, 1200, 1, 3500)
    back = expected_fee(M1, "card:unionpay", 3500, refund=True)
    assert batch["fees"] == expected_fee(M1, "card:unionpay", 1200) - back


# ---- states, batches, fees ----


EXPECTED_STATES = {
    "m1_unionpay": "settled", "m1_unionpay_min": "settled", "m1_unionpay_max": "settled", "m1_visa": "settled",
    "m1_qr": "settled", "m1_usd": "settled", "m2_unionpay": "settled", "m2_refund": "settled",
    "m2_reversed": "reversed", "m2_voided": "voided", "m2_void": "void", "m2_declined": "declined", "m2_qr": "settled",
}


def test_every_row_of_the_day_gets_exactly_one_settlement_state(settled: Settled) -> None:
    rows = query(settled.db, "SELECT rrn, settlement_state, settlement_date FROM transactions"
                             " WHERE business_date = ?", D)
    assert len(rows) == len(EXPECTED_STATES) and all(state in STATES and when == D for _, state, when in rows)
    by_rrn = {rrn: state for rrn, state, _ in rows}
    assert {name: by_rrn[settled.made[name].rrn] for name in EXPECTED_STATES} == EXPECTED_STATES
    assert settled.report.result.states == dict(Counter(EXPECTED_STATES.values()))
    # D+1's rows wait for their own cut-over
    next_day = query(settled.db, "SELECT COUNT(*), COUNT(settlement_state) FROM transactions WHERE business_date = ?", D1)
    assert next_day == [(2, 0)]
    assert settled.row("m2_refund")["kind"] == "refund"


def test_batches_are_per_merchant_channel_and_currency(settled: Settled) -> None:
    batches = {(b["merchant_id"], b["channel"], b["currency"]): b for b in settled.report.result.batches}
    m = settled.made
    m1_unionpay = m["m1_unionpay"].amount + m["m1_unionpay_min"].amount + m["m1_unionpay_max"].amount
    counted = {k: (b["sales_count"], b["sales_amount"], b["refunds_count"], b["refunds_amount"])
               for k, b in batches.items()}
    assert counted == {
        (M1, "card:unionpay", "156"): (3, m1_unionpay, 0, 0),
        (M1, "card:visa", "156"): (1, m["m1_visa"].amount, 0, 0),
        (M1, "card:mastercard", "840"): (1, m["m1_usd"].amount, 0, 0),
        (M1, "qr:wechat", "156"): (1, m["m1_qr"].amount, 0, 0),
        (M2, "card:unionpay", "156"): (1, m["m2_unionpay"].amount, 1, m["m2_refund"].amount),
        (M2, "qr:wechat", "156"): (1, m["m2_qr"].amount, 0, 0),
    }
    rows = query(settled.db, "SELECT merchant_id, settlement_channel, currency, settlement_batch FROM transactions"
                             " WHERE settlement_state = 'settled'")
    assert {(mid, ch, cur): bid for mid, ch, cur, bid in rows} == {k: b["batch_id"] for k, b in batches.items()}


def test_fees_follow_fees_yaml_rounded_half_up(settled: Settled) -> None:
    cases = {  # name: merchant, channel, refund
        "m1_unionpay": (M1, "card:unionpay", False), "m1_unionpay_min": (M1, "card:unionpay", False),
        "m1_unionpay_max": (M1, "card:unionpay", False), "m1_visa": (M1, "card:visa", False),
        "m1_usd": (M1, "card:mastercard", False), "m1_qr": (M1, "qr:wechat", False),
        "m2_unionpay": (M2, "card:unionpay", False), "m2_refund": (M2, "card:unionpay", True),
        "m2_qr": (M2, "qr:wechat", False),
    }
    fees = {name: abs(settled.row(name)["fee"]) for name in cases}
    assert fees == {n: expected_fee(mid, ch, settled.made[n].amount, refund) for n, (mid, ch, refund) in cases.items()}
    # the amounts sit on exact halves where half to even would round down (34.5 -> 35, 100.5 -> 101, 4.5 -> 5,
    # 28.5 -> 29, ...), and M1's own unionpay rule takes its min (10) and its max (2000)
    assert fees == {"m1_unionpay": 35, "m1_unionpay_min": 10, "m1_unionpay_max": 2000, "m1_visa": 101, "m1_usd": 15,
                    "m1_qr": 5, "m2_unionpay": 11, "m2_refund": 5, "m2_qr": 29}
    batch_fees = defaultdict(int)
    for name, (mid, ch, refund) in cases.items():
        batch_fees[(mid, ch)] += -fees[name] if refund else fees[name]
    assert {(b["merchant_id"], b["channel"]): b["fees"] for b in settled.report.result.batches} == dict(batch_fees)


def test_net_is_sales_less_refunds_plus_adjustments_less_fees_paid_the_next_day(settled: Settled) -> None:
    for b in settled.report.result.batches:
        assert b["net"] == b["sales_amount"] - b["refunds_amount"] + b["adjustments"] - b["fees"], b
        assert b["value_date"] == D1 and b["business_date"] == D and b["adjustments"] == 0


# ---- files ----


def test_settlement_csv_and_clearing_file_agree_with_the_batches(settled: Settled) -> None:
    files = settled.report.result.files
    with open(files["settlement_csv"], newline="", encoding="utf-8") as source:
        csv_rows = list(csv.DictReader(source))
    batches = {b["batch_id"]: b for b in settled.report.result.batches}
    assert csv_rows == [{k: str(v) for k, v in b.items()} for b in settled.report.result.batches]

    reader = ClearingReader(Path(files["clearing_file"]), {M1, M2})
    records = [record for _, record in reader]
    assert reader.header.business_date == D and reader.trailer is not None
    sums: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for r in records:
        entry = sums[(r.merchant_id, r.channel, r.currency)]
        entry[0 if r.sign == "D" else 2] += 1
        entry[1 if r.sign == "D" else 3] += r.amount
        entry[4] += r.fee if r.sign == "D" else -r.fee
    assert dict(sums) == {(b["merchant_id"], b["channel"], b["currency"]): [
        b["sales_count"], b["sales_amount"], b["refunds_count"], b["refunds_amount"], b["fees"]] for b in batches.values()}
    settled_rrns = {r for (r,) in query(settled.db, "SELECT rrn FROM transactions WHERE settlement_state = 'settled'")}
    assert sorted(r.rrn for r in records) == sorted(settled_rrns)
    assert reader.trailer.record_count == len(records) == settled.report.result.clearing["records"]
    assert {r.rrn: r.sign for r in records}[settled.made["m2_refund"].rrn] == "C"


def test_no_settlement_file_carries_a_full_pan(settled: Settled) -> None:
    clearing = Path(settled.report.result.files["clearing_file"]).read_text()
    assert "622848*********0017" in clearing  # masked PANs are what the file carries
    for name in settled.report.result.files.values():
        text = Path(name).read_text()
        assert not [pan for pan in FULL_PANS if pan in text]


def test_a_second_cutover_changes_nothing_and_writes_nothing(two_days, tmp_path) -> None:
    db = copy_journal(two_days[0], tmp_path)
    first = cut(db, out=tmp_path / "out")
    files = [Path(p) for p in first.result.files.values()]
    stamps = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in files]
    row_states = query(db, "SELECT id, settlement_state, settlement_date, settlement_batch, settlement_channel, fee"
                           " FROM transactions ORDER BY id")
    batches = query(db, "SELECT * FROM settlement_batches ORDER BY batch_id")

    again = cut(db, out=tmp_path / "elsewhere", when=at(D1, 2))
    assert again.result.already and not first.result.already
    assert (again.result.cutover_at, again.result.batches, again.result.files) == \
        (first.result.cutover_at, first.result.batches, first.result.files)
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in files] == stamps
    assert not (tmp_path / "elsewhere").exists()
    assert query(db, "SELECT id, settlement_state, settlement_date, settlement_batch, settlement_channel, fee"
                     " FROM transactions ORDER BY id") == row_states
    assert query(db, "SELECT * FROM settlement_batches ORDER BY batch_id") == batches
    assert not again.failed


def test_the_later_date_cannot_be_cut_over_first_and_nothing_settles_twice(two_days, tmp_path) -> None:
    raw, made = two_days
    db = copy_journal(raw, tmp_path)
    with pytest.raises(SettlementError, match=f"{D} has rows and no cut-over: cut it over before {D1}"):
        cut(db, D1, out=tmp_path / "d1")
    assert query(db, "SELECT COUNT(*) FROM business_days") == [(0,)]
    assert query(db, "SELECT COUNT(*) FROM transactions WHERE settlement_state IS NOT NULL") == [(0,)]
    first, later = cut(db, D, out=tmp_path / "d"), cut(db, D1, out=tmp_path / "d1")
    assert not first.failed and not later.failed
    debits = sum(m.amount for name, m in made.items() if EXPECTED_STATES.get(name, "settled") == "settled"
                 and name != "m2_refund")
    assert query(db, "SELECT SUM(sales_amount) FROM settlement_batches") == [(debits,)]
    assert all(_invariants(db, later.result.files, D1).values())


def test_a_date_before_the_last_one_cut_over_is_refused(two_days, tmp_path) -> None:
    """The host put nothing on it since (its dates only move on), so closing it could only be a typo that
    would book the next adjustments into the past."""
    db = copy_journal(two_days[0], tmp_path)
    cut(db, D, out=tmp_path / "d")
    states = query(db, "SELECT id, settlement_state, settlement_date FROM transactions ORDER BY id")
    with pytest.raises(SettlementError, match=f"{day(D, -3)} is before {D}, which is already cut over"):
        cut(db, day(D, -3), out=tmp_path / "past")
    assert query(db, "SELECT business_date FROM business_days ORDER BY 1") == [(D,)]
    assert query(db, "SELECT id, settlement_state, settlement_date FROM transactions ORDER BY id") == states
    assert not (tmp_path / "past").exists()


# ---- refusals ----


def _blocked_clearing_file(out: Path) -> None:
    (out / f"clearing-{D}.txt").mkdir(parents=True)


REFUSALS = {
    "a date not begun": (day(D1, 1), None, SettlementError, "has not begun"),
    "no zero padding": ("2026-6-15", None, SettlementError, "not a date"),
    "no such day": ("2026-02-30", None, SettlementError, "not a date"),
    "day first": ("15/06/2026", None, SettlementError, "not a date"),
    "compact": ("20260615", None, SettlementError, "not a date"),
    "out is a file": (D, lambda out: out.write_text("not a folder"), FileExistsError, None),
    "clearing file cannot be written": (D, _blocked_clearing_file, IsADirectoryError, None),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refused_cutover_leaves_nothing_half_done(two_days, tmp_path, case) -> None:
    business_date, arrange, error, words = REFUSALS[case]
    db = copy_journal(two_days[0], tmp_path)
    out = tmp_path / "out"
    if arrange is not None:
        arrange(out)
    with pytest.raises(error, match=words):
        cut(db, business_date, out=out)
    assert query(db, "SELECT COUNT(*) FROM business_days") == [(0,)]
    assert query(db, "SELECT COUNT(*) FROM settlement_days") == [(0,)]
    assert query(db, "SELECT COUNT(*) FROM settlement_batches") == [(0,)]
    assert query(db, "SELECT COUNT(*) FROM transactions WHERE settlement_state IS NOT NULL"
                     " OR settlement_date IS NOT NULL") == [(0,)]
    assert not [p.name for p in tmp_path.rglob(".*") if p.is_file()]  # no temporary file left behind
    assert not list(tmp_path.rglob("settlement-*.csv"))  # nor a settlement CSV of a day that was not cut over

    retried = cut(db, out=tmp_path / "retry")
    assert not retried.result.already and not retried.failed
    assert retried.result.states == dict(Counter(EXPECTED_STATES.values()))


# ---- invariants ----


def test_every_invariant_passes_on_a_real_day(settled: Settled) -> None:
    names = [(i.name, i.currency) for i in settled.report.invariants]
    assert names == [("money balances", "156"), ("money balances", "840"), ("one settlement state per row", ""),
                     ("one batch per settled row", ""), ("clearing file agrees", "156"), ("clearing file agrees", "840")]
    assert all(i.passed for i in settled.report.invariants), [i.detail for i in settled.report.invariants]
    money = {i.currency: i for i in settled.report.invariants if i.name == "money balances"}
    m = settled.made
    sales_156 = sum(m[n].amount for n in ("m1_unionpay", "m1_unionpay_min", "m1_unionpay_max", "m1_visa", "m1_qr",
                                           "m2_unionpay", "m2_qr"))
    assert money["156"].left == money["156"].right == sales_156 - m["m2_refund"].amount
    assert money["840"].left == m["m1_usd"].amount


def _copy_settled(settled: Settled, folder: Path) -> tuple[Path, dict[str, str]]:
    db = copy_journal(settled.db, folder)
    files = {k: str(Path(shutil.copy(v, folder / Path(v).name))) for k, v in settled.report.result.files.items()}
    return db, files


def _invariants(db: Path, files: dict[str, str], business_date: str = D) -> dict[tuple[str, str], bool]:
    store = SettlementStore(db)
    try:
        return {(i.name, i.currency): i.passed for i in check_invariants(store, business_date, files)}
    finally:
        store.close()


def test_a_changed_net_in_the_settlement_csv_fails_the_money_invariant(settled: Settled, tmp_path) -> None:
    db, files = _copy_settled(settled, tmp_path)
    assert all(_invariants(db, files).values())
    path = Path(files["settlement_csv"])
    with path.open(newline="") as source:
        rows = list(csv.reader(source))
    net = rows[0].index("net")
    rows[1][net] = str(int(rows[1][net]) + 1)
    with path.open("w", newline="") as target:
        csv.writer(target, lineterminator="\n").writerows(rows)
    checked = _invariants(db, files)
    assert checked.pop(("money balances", rows[1][rows[0].index("currency")])) is False
    assert all(checked.values())


def test_a_row_without_a_state_fails_the_one_state_invariant(settled: Settled, tmp_path) -> None:
    db, files = _copy_settled(settled, tmp_path)
    query(db, "UPDATE transactions SET settlement_state = NULL WHERE rrn = ?", settled.made["m2_declined"].rrn)
    checked = _invariants(db, files)
    assert checked.pop(("one settlement state per row", "")) is False
    assert all(checked.values())


def test_cli_cutover_prints_one_json_object_and_exits_1_once_an_invariant_fails(two_days, tmp_path) -> None:
    db = copy_journal(two_days[0], tmp_path)
    out = tmp_path / "out"
    done = possim("settle", "cutover", "--db", str(db), "--date", D, "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1
    result = json.loads(done.stdout)
    assert (result["business_date"], result["already"]) == (D, False)
    assert result["states"] == dict(Counter(EXPECTED_STATES.values()))
    assert all(i["passed"] for i in result["invariants"])
    assert sorted(p.name for p in out.iterdir()) == [f"clearing-{D}.txt", f"settlement-{D}.csv"]

    query(db, "UPDATE transactions SET settlement_state = NULL"
              " WHERE id = (SELECT MIN(id) FROM transactions WHERE status = 'declined')")
    tampered = possim("settle", "cutover", "--db", str(db), "--date", D, "--out", str(out), "--json")
    assert tampered.returncode == 1
    again = json.loads(tampered.stdout)  # still exactly one object: the report, saying which invariant failed
    assert again["already"] is True
    assert [i["name"] for i in again["invariants"] if not i["passed"]] == ["one settlement state per row"]
    assert "Traceback" not in tampered.stderr


@pytest.mark.parametrize("case", ["a date not begun", "--out is a file"])
def test_cli_refuses_in_one_line_and_closes_nothing(two_days, tmp_path, case) -> None:
    db = copy_journal(two_days[0], tmp_path)
    out = tmp_path / "out"
    business_date = "2999-01-01" if case == "a date not begun" else D  # the CLI runs on the system clock
    if case == "--out is a file":
        out.write_text("not a folder")
    refused = possim("settle", "cutover", "--db", str(db), "--date", business_date, "--out", str(out), "--json")
    assert refused.returncode == (1 if case == "a date not begun" else 2)  # 2: a usage error
    (line,) = refused.stderr.splitlines()
    assert json.loads(refused.stdout) == {"error": line.removeprefix("possim: error: ")}
    if case == "a date not begun":
        assert line.startswith(f"possim: error: {business_date} has not begun: the host's business date is ")
    else:
        assert line.startswith("possim: error: ") and str(out) in line and "Traceback" not in refused.stderr
        assert out.read_text() == "not a folder"
    assert query(db, "SELECT COUNT(*), (SELECT COUNT(*) FROM transactions WHERE settlement_state IS NOT NULL)"
                     " FROM business_days") == [(0, 0)]
    assert not out.is_dir()
