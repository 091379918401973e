"""`possim demo`: the whole product in one run, self-checking, and leaving
no card data in any file it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from possim.fixtures import load_fixture
from possim.wire.trace import mask_pan


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("demo") / "day"
    result = subprocess.run(
        [sys.executable, "-m", "possim.cli", "demo", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), out


def test_every_step_answers_as_expected(demo) -> None:
    report, _ = demo
    assert report["ok"] is True
    got = {s["title"]: s["got"] for s in report["steps"]}
    assert got["answer too late: automatic reversal (rule, amount 68.01)"] == "reversed"
    codes = {s["got"] for s in report["steps"]}
    assert codes >= {"00", "05", "12", "13", "14", "15", "30", "41", "43", "51", "54", "55", "57", "58", "61",
                     "75", "77", "80", "91", "94", "96", "Y1", "in balance", "out of balance, uploaded"}


def test_summary_is_read_back_from_the_journal(demo) -> None:
    report, out = demo
    groups = {(g["response_code"], g["status"]): g for g in report["journal"]["by_response_code"]}
    # the late 68.01 reversed by its terminal; the hand-made 15.00 its terminal never counted, by reconciliation;
    # the 6,200.00 tuition fee the finance system never confirmed, by the host
    assert groups["00", "reversed"]["amounts"] == {"156": 6801 + 1500 + 620000}
    assert report["journal"]["answers_sent"]["0210 30"] == 1
    assert report["journal"]["answers_sent"]["0210 94"] == 1
    balances = {a["id"]: a["balance"] for a in report["journal"]["accounts"]}
    opening = {a["id"]: a["balance"] for a in load_fixture("accounts.yaml")["accounts"]}
    # approve (A-1001): 12.50 + 230.00 + 25.00 + 30.00 + 42.00; the 68.01 came back with its reversal
    assert balances["A-1001"] == opening["A-1001"] - (1250 + 23000 + 2500 + 3000 + 4200)
    # over-limit (A-1003): the 50.00 PIN purchase verified by IBM offset
    assert balances["A-1003"] == opening["A-1003"] - 5000
    # approve2 (A-1004): 88.00 (the retransmitted 15.00 taken once, then given back by reconciliation), then
    # terminal 2's transaction set: 18.00 chip sale voided, 6.50 contactless, 60.00 sale less a 25.00 refund,
    # 130.00 completing a 120.00 hold, a 40.00 hold cancelled, a 9.90 offline sale; two fee notices paid and
    # confirmed (200.00 and 110.00; the third, never confirmed, reversed); and 20.00 the next day
    assert balances["A-1004"] == opening["A-1004"] - 8800 - (650 + 6000 - 2500 + 13000 + 990) - (20000 + 11000) - 2000
    open_entries = {"10000001": 0, "10000002": 4, "10000003": 0}  # terminal 2's fees (card and QR), its next-day purchase
    for t in report["terminals"]:  # every batch closed: nothing owed
        assert (t["batch_number"], t["open_batch"]["count"], t["pending_reversal"], t["queued_advices"]) == \
            (2, open_entries[t["tid"]], None, 0)
    for path in report["files"].values():
        assert Path(path).is_file() and Path(path).is_relative_to(out)


def test_every_kind_is_journaled_and_every_batch_closed(demo) -> None:
    from possim.acquirer.journal import Journal

    _, out = demo
    journal = Journal(out / "journal.sqlite")
    try:
        kinds = {(t.kind, t.status) for t in journal.transactions() if t.response_code == "00"}
        assert kinds >= {("sale", "approved"), ("sale", "voided"), ("sale_void", "approved"), ("refund", "approved"),
                         ("preauth", "approved"), ("preauth", "voided"), ("preauth_void", "approved"),
                         ("completion", "approved"), ("balance", "approved"), ("offline", "approved")}
        out_of_balance = journal.closed_batch("10000001", "000001")
        assert not out_of_balance.balanced
        host, terminal = out_of_balance.host_totals["domestic"], out_of_balance.terminal_totals["domestic"]
        # the host's debits hold the hand-made retransmitted 15.00 the terminal's batch never had
        assert host["debit_amount"] - terminal["debit_amount"] == 1500 and host["debit_count"] - terminal["debit_count"] == 1
        records = sum(block["debit_count"] + block["credit_count"] for block in out_of_balance.terminal_totals.values())
        assert len(journal.uploads("10000001", "000001")) == records  # domestic and foreign (the 4000... card)
        for tid in ("10000002", "10000003"):
            closed = journal.closed_batch(tid, "000001")
            assert closed.balanced and closed.terminal_totals == closed.host_totals
    finally:
        journal.close()


def test_no_file_the_demo_wrote_holds_card_data(demo) -> None:
    """PCI: PANs appear only masked; tracks never, in any encoding, in any file (WAL included)."""
    _, out = demo
    cards = load_fixture("cards.yaml")["cards"]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name.endswith("-trace.log") for p in written)
    everything = b"".join(p.read_bytes() for p in written)
    for card in cards:
        pan = card["pan"]
        packed = bytes.fromhex(pan + "0" * (len(pan) % 2))
        assert pan.encode() not in everything, card["name"]
        assert packed[:-1] not in everything, card["name"]
        assert f"{pan}D{card['expiry']}".encode() not in everything
        assert f"{pan}={card['expiry']}".encode() not in everything
    traces = (out / "host-trace.log").read_text() + (out / "terminal-trace.log").read_text()
    assert mask_pan(cards[0]["pan"]) in traces  # card data did pass through, masked


def test_a_tampered_message_is_refused(demo) -> None:
    report, _ = demo
    [step] = [s for s in report["steps"] if s["title"].startswith("tampered message refused")]
    assert step["got"] == "A0" and step["ok"]  # cup's MAC error
    groups = {(g["response_code"], g["status"]) for g in report["journal"]["by_response_code"]}
    assert ("A0", "declined") in groups


def _written(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())


def _assert_nowhere(secrets: list[bytes], everything: bytes) -> None:
    for secret in secrets:
        for form in (secret, secret.hex().upper().encode(), secret.hex().encode()):
            assert form not in everything


def _working_keys(out: Path) -> dict[str, list[bytes]]:
    """Each terminal's clear PIN and MAC keys, recovered from the journal under the LMK (and checked
    against the terminal's copy under its TMK)."""
    from possim.acquirer.journal import Journal
    from possim.hsm_mock.key_download import clear_key
    from possim.hsm_mock.lmk import TAK, TPK, VariantLmk
    from possim.terminal.state import TerminalState

    tmks = {t["tid"]: bytes.fromhex(t["tmk"]) for t in load_fixture("terminals.yaml")["terminals"]}
    journal, lmk = Journal(out / "journal.sqlite"), VariantLmk.test()
    keys = {}
    try:
        for tid, tmk in tmks.items():
            session = journal.terminal(tid)
            host_keys = [lmk.decrypt(bytes.fromhex(session.pin_key), TPK), lmk.decrypt(bytes.fromhex(session.mac_key), TAK)]
            state = TerminalState(tid, out / "terminals" / f"{tid}.sqlite")
            terminal_keys = [clear_key(tmk, k) for k in state.working_keys()]
            state.close()
            assert terminal_keys == host_keys
            keys[tid] = host_keys
    finally:
        journal.close()
    return keys


def test_no_file_the_demo_wrote_holds_a_clear_key(demo) -> None:
    """The TMKs, the working keys sent at sign-on, the issuers' PIN keys, the BDK and every DUKPT key
    appear nowhere in clear: not hex, not binary."""
    from possim.hsm_mock import dukpt_tdes

    _, out = demo
    terminals = load_fixture("terminals.yaml")["terminals"]
    secrets = [bytes.fromhex(t["tmk"]) for t in terminals]
    for keys in _working_keys(out).values():
        secrets += keys
    for issuer in load_fixture("accounts.yaml")["issuers"]:
        if "pin" in issuer:
            secrets += [bytes.fromhex(issuer["pin"]["pvk"]), bytes.fromhex(issuer["pin"]["zpk"])]
    [dukpt] = [t["dukpt"] for t in terminals if "dukpt" in t]
    bdk, ksn = bytes.fromhex(dukpt["bdk"]), bytes.fromhex(dukpt["ksn"])
    secrets += [bdk, dukpt_tdes.initial_key(bdk, ksn)]
    for _ in range(3):
        ksn = dukpt_tdes.next_ksn(ksn)
        keys = dukpt_tdes.derive_keys(bdk, ksn)
        secrets += [keys.transaction_key, keys.pin_key]
    _assert_nowhere(secrets, _written(out))


def test_no_file_the_demo_wrote_holds_a_pin_block(demo) -> None:
    """Every PIN block the demo's PIN pads sent (format 0 is deterministic, so the test can rebuild
    them) and the same PINs under each issuer's ZPK appear in no file."""
    from possim.hsm_mock import dukpt_tdes, pinblock
    from possim.terminal import resolve_card

    report, out = demo
    keys = _working_keys(out)
    cards = {c["name"]: c for c in load_fixture("cards.yaml")["cards"]}
    typed = [("approve", "1234"), ("over-limit", "1357"), ("insufficient", "0000"), ("insufficient", "1234"),
             ("approve2", "1111")]
    assert {s["got"] for s in report["steps"] if "PIN" in s["title"]} == {"00", "55", "75"}
    [dukpt] = [t["dukpt"] for t in load_fixture("terminals.yaml")["terminals"] if "dukpt" in t]
    bdk, ksn = bytes.fromhex(dukpt["bdk"]), bytes.fromhex(dukpt["ksn"])
    pin_keys = [key for key, _ in keys.values()]
    for _ in range(3):
        ksn = dukpt_tdes.next_ksn(ksn)
        pin_keys.append(dukpt_tdes.derive_keys(bdk, ksn).pin_key)
    pin_keys += [bytes.fromhex(i["pin"]["zpk"]) for i in load_fixture("accounts.yaml")["issuers"] if "pin" in i]
    blocks = [
        pinblock.encipher(key, 0, pin, cards[name]["pan"]) for key in pin_keys for name, pin in typed
    ] + [pinblock.encode(0, pin, cards[name]["pan"]) for name, pin in typed]
    assert resolve_card("approve").pin == "1234"
    _assert_nowhere(blocks, _written(out))


@pytest.mark.parametrize("dialect", ["iso87ascii", "iso87binary"])
def test_the_business_day_runs_in_every_built_in_dialect(dialect: str, tmp_path: Path) -> None:
    import asyncio

    from possim.demo import run_demo

    report = asyncio.run(run_demo(tmp_path / "day", dialect))
    failed = [(s.title, s.expected, s.got) for s in report.steps if not s.ok]
    assert failed == []
    assert report.dialect == dialect
    assert report.steps[0].got == "58"  # iso87 says "not signed on" with 58, cup with 77
    assert [s.got for s in report.steps if s.title.startswith("tampered")] == ["63"]  # iso87's security violation


def test_one_terminal_trades_over_a_virtual_serial_cable(demo) -> None:
    from possim.acquirer.journal import Journal

    report, out = demo
    assert report["serial"]["link_profile"] == "stx-etx-lrc"
    journal = Journal(out / "journal.sqlite")
    try:
        peers = {m.peer for m in journal.messages("10000003")}
        assert peers == {f"serial:{report['serial']['host']}"}  # every one of its messages came over the cable
        assert journal.closed_batch("10000003", "000001").balanced
    finally:
        journal.close()


def test_the_day_is_cut_over_reconciled_and_the_next_day_nets_the_adjustments(demo) -> None:
    import csv

    report, out = demo
    files = report["files"]
    titles = [s["title"] for s in report["steps"]]
    assert any(t.startswith("cut-over of ") for t in titles) and any(t.startswith("reconciliation run again") for t in titles)
    with open(files["settlement_csv"], newline="") as source:
        day_one = list(csv.DictReader(source))
    with open(files["next_settlement_csv"], newline="") as source:
        day_two = list(csv.DictReader(source))
    assert sum(int(b["adjustments"]) for b in day_one) == 0
    # reconciliation's merchant adjustments of day one: the amount mismatch it found (+) and the unreversed
    # timeout it took back (−15.00), netted into day two's batches
    recon = json.loads(Path(files["recon_report"]).with_suffix(".json").read_text())
    merchant = [a for a in recon["adjustments"] if a["target"] == "merchant"]
    assert -1500 in [a["amount"] for a in merchant]
    assert sum(int(b["adjustments"]) for b in day_two) == sum(a["amount"] for a in merchant)
    assert all(i["passed"] for i in recon["invariants"])
    html = Path(files["recon_report"]).read_text()
    assert "<svg" in html and "unreversed_timeout" in html


def test_fee_payments_end_paid_everywhere_or_nowhere(demo) -> None:
    """Read back from both parties' own files: what the host confirmed is paid at the finance system, and the
    payment it could not confirm is reversed at the host and unpaid at the finance system."""
    from possim.acquirer.finance.notices import NoticeStore
    from possim.acquirer.journal import Journal

    _, out = demo
    journal, store = Journal(out / "journal.sqlite"), NoticeStore(out / "finance.sqlite")
    try:
        fees = {f.pay_code: f for f in journal.fee_payments()}
        assert {code: (f.channel, f.state) for code, f in fees.items()} == {
            "31010157462740291971": ("POS", "confirmed"), "31010156080501553255": ("POS", "confirmed"),
            "31010195281670669848": ("POS", "cancelled"), "31010120407659736338": ("QR", "confirmed")}
        for code, fee in fees.items():
            row = journal.transaction_by_id(fee.transaction_id)
            notice = store.get(code)
            if fee.state == "confirmed":
                assert (row.status, notice.status, notice.paid_trade_no) == ("approved", "paid", row.rrn)
            else:
                assert (row.status, notice.status) == ("reversed", "unpaid")
        assert fees["31010156080501553255"].attempts == 2  # the late answer was retried, and confirmed once
    finally:
        journal.close()
        store.close()


def test_the_load_run_reports_every_kind_approved_with_its_plots(demo) -> None:
    report, out = demo
    [step] = [s for s in report["steps"] if s["title"].startswith("load:")]
    assert step["ok"] and set(step["result"]["kinds"]) == {"purchase", "refund", "qr"}
    written = json.loads(Path(report["files"]["load_report_json"]).read_text())
    figures = written["figures"]
    assert figures["transactions"] == step["result"]["transactions"] == figures["approved"] > 0
    assert written["run"]["signed_on"] == written["run"]["terminals"]
    assert Path(report["files"]["load_report"]).read_text().count("data:image/png;base64,") == 2
