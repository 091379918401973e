"""The `possim` command as a user runs it: separate processes, real TCP,
one JSON object per --json, one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from possim.acquirer.journal import Journal
from possim.terminal.cards import fixture_cards

POSSIM = [sys.executable, "-m", "possim.cli"]


def possim(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POSSIM, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert result.stdout == "" or json.loads(result.stdout).keys() == {"error"}
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("possim: error: ")
    return lines[0]


@pytest.fixture
def host(tmp_path: Path):
    """`possim host run` in its own process on an ephemeral port."""
    db = tmp_path / "journal.sqlite"
    process = subprocess.Popen(
        [*POSSIM, "host", "run", "--listen", "127.0.0.1:0", "--dialect", "cup", "--db", str(db), "--json",
         "--trace", str(tmp_path / "host-trace.log")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    ready = json.loads(process.stdout.readline())
    yield ready["listening"], db
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_host_run_and_pos_purchase_in_separate_processes(host, tmp_path: Path) -> None:
    address, db = host
    state = str(tmp_path / "t1.sqlite")
    common = ["--host", address, "--tid", "10000001", "--state", state, "--json"]

    signon = possim("pos", "signon", *common)
    assert signon.returncode == 0, signon.stderr
    assert json.loads(signon.stdout)["response_code"] == "00"

    bought = possim("pos", "purchase", "--amount", "12.50", "--card", "approve", *common)
    assert bought.returncode == 0, bought.stderr
    result = json.loads(bought.stdout)  # exactly one JSON object
    assert result["mti"] == "0210"
    assert result["approved"] is True and result["response_code"] == "00"
    assert result["amount"] == 1250 and result["currency"] == "156"
    assert len(result["rrn"]) == 12 and len(result["auth_code"]) == 6
    assert result["stan"] == "000002"  # the sign-on took 000001: state persists between processes

    declined = possim("pos", "purchase", "--amount", "20.00", "--card", "insufficient", *common)
    assert declined.returncode == 0
    assert json.loads(declined.stdout)["response_code"] == "51"

    reversed_ = possim("pos", "reverse", *common)
    assert json.loads(reversed_.stdout)["response_code"] == "00"

    journal = Journal(db)
    try:
        rows = {t.stan: t for t in journal.transactions()}
        assert rows["000002"].status == "reversed" and rows["000002"].amount == 1250
        assert rows["000003"].response_code == "51"
        assert journal.balance("A-1001") == 5000000  # the reversal restored the purchase
    finally:
        journal.close()


def test_pos_purchase_text_output_names_the_verdict(host, tmp_path: Path) -> None:
    address, _ = host
    common = ["--host", address, "--tid", "10000002", "--state", str(tmp_path / "t2.sqlite")]
    assert possim("pos", "signon", *common).returncode == 0
    out = possim("pos", "purchase", "--amount", "3.20", "--card", "expired", *common).stdout
    assert out.startswith("DECLINED 54")
    assert "3.20 CNY" in out
    assert "6228480010000000033" not in out and "622848*********0033" in out


def test_pos_against_a_closed_port_is_one_line(tmp_path: Path) -> None:
    result = possim("pos", "signon", "--host", "127.0.0.1:1", "--state", str(tmp_path / "s.sqlite"))
    assert "127.0.0.1:1" in one_line_error(result)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["pos", "purchase", "--amount", "12.345", "--host", "127.0.0.1:1"], "decimal places"),
        (["pos", "purchase", "--amount", "ten", "--host", "127.0.0.1:1"], "not a number"),
        (["pos", "purchase", "--amount", "1", "--card", "nosuchcard", "--host", "127.0.0.1:1"], "nosuchcard"),
        (["pos", "signon", "--tid", "99999999"], "99999999"),
        (["host", "run", "--listen", "nonsense"], "HOST:PORT"),
        (["dialect", "show", "nosuch"], "nosuch"),
        (["iso", "decode", "--dialect", "cup", "zz"], "character 0"),
        (["iso", "decode", "--dialect", "cup", "123"], "odd number of digits"),
        (["iso", "decode", "--dialect", "cup", ""], "HEX is empty"),
        (["pos", "purchase", "--host", "127.0.0.1:1"], "Missing option '--amount'"),
        (["pos", "signon", "--timeout", "abc", "--host", "127.0.0.1:1"], "--timeout"),
        (["host", "run", "--db", "."], "--db"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: list[str], names: str, tmp_path: Path) -> None:
    if args[0] == "pos":
        args = [*args, "--state", str(tmp_path / "s.sqlite")]
    assert names in one_line_error(possim(*args))


def test_usage_errors_exit_2_and_json_callers_still_get_an_object(tmp_path: Path) -> None:
    result = possim("pos", "purchase", "--json", "--state", str(tmp_path / "s.sqlite"))
    assert result.returncode == 2
    assert json.loads(result.stdout) == {"error": one_line_error(result).removeprefix("possim: error: ")}


def test_host_refuses_a_busy_port_in_one_line(host, tmp_path: Path) -> None:
    address, _ = host
    line = one_line_error(possim("host", "run", "--listen", address, "--db", str(tmp_path / "other.sqlite")))
    assert f"cannot listen on {address}" in line and "127.0.0.1:0" in line


def test_pos_status_shows_what_the_terminal_remembers(host, tmp_path: Path) -> None:
    address, _ = host
    common = ["--tid", "10000001", "--state", str(tmp_path / "t1.sqlite")]
    possim("pos", "signon", "--host", address, *common)
    possim("pos", "purchase", "--host", address, "--amount", "7.00", *common)
    possim("pos", "purchase", "--host", address, "--amount", "3.00", *common)
    possim("pos", "void", "--host", address, *common)
    possim("pos", "offline", "--host", address, "--amount", "2.00", *common)
    status = json.loads(possim("pos", "status", "--json", *common).stdout)
    assert status["last_stan"] == "000005" and status["pending_reversal"] is None
    batch = status["open_batch"]
    assert (batch["debit_count"], batch["debit_amount"], batch["credit_count"], batch["credit_amount"]) == (3, 1200, 1, 300)
    assert [(t["kind"], t["voided"]) for t in batch["transactions"]] == [
        ("sale", False), ("sale", True), ("sale_void", False), ("offline", False)]
    assert batch["transactions"][0]["masked_pan"] == "622848*********0017"
    assert [(a["kind"], a["stan"]) for a in status["queued_advices"]] == [("offline", "000005")]
    text = possim("pos", "status", *common).stdout
    assert "advices queued: 1" in text and "(voided)" in text


def test_iso_decode_reads_hex_from_stdin() -> None:
    framed = _purchase_hex("iso87ascii", manual=True)
    result = subprocess.run([*POSSIM, "iso", "decode", "--dialect", "iso87ascii", "--json", "-"],
                            input=framed, capture_output=True, text=True, timeout=60)
    assert json.loads(result.stdout)["fields"]["11"] == "000042"


def _purchase_hex(dialect: str, manual: bool) -> str:
    from datetime import datetime

    from possim.terminal.messages import build_purchase
    from possim.wire.codec import Codec
    from possim.wire.dialect import load_dialect
    from possim.wire.framing import frame

    d = load_dialect(dialect)
    card = fixture_cards()["approve"]
    message = build_purchase(
        d, tid="10000001", mid="898310048160001", stan="000042", now=datetime(2026, 12, 3, 9, 30),
        amount=1250, currency="156", card=card, manual=manual, pin_pad=True, batch_number=1,
    )
    return frame(d.framing, Codec(d).encode(message)).hex()


@pytest.mark.parametrize("dialect", ["cup", "iso87ascii", "iso87binary"])
@pytest.mark.parametrize("manual", [False, True])
def test_iso_decode_masks_card_data_frame_or_message(dialect: str, manual: bool) -> None:
    framed = _purchase_hex(dialect, manual)
    pan = fixture_cards()["approve"].pan
    for hexdata in (framed, framed[4:] if dialect != "cup" else framed):
        result = possim("iso", "decode", "--dialect", dialect, hexdata, "--json")
        assert result.returncode == 0, result.stderr
        decoded = json.loads(result.stdout)
        assert decoded["mti"] == "0200"
        assert decoded["fields"]["4"] == "000000001250" and decoded["fields"]["11"] == "000042"
        if manual:
            assert decoded["fields"]["2"] == "622848*********0017"
        else:
            assert decoded["fields"]["35"].startswith("[redacted")
        text = possim("iso", "decode", "--dialect", dialect, hexdata).stdout
        assert pan not in result.stdout and pan not in text
        assert pan[:-1] not in text.replace(" ", "")


def test_iso_decode_truncated_frame_names_the_length_header() -> None:
    framed = _purchase_hex("cup", manual=False)
    line = one_line_error(possim("iso", "decode", "--dialect", "cup", framed[:-10]))
    assert f"announces {len(framed) // 2 - 2} bytes, but {len(framed) // 2 - 7} follow" in line


@pytest.mark.parametrize("dialect", ["cup", "iso87binary"])
def test_iso_decode_bad_field_names_field_and_offset(dialect: str) -> None:
    from possim.wire.codec import Codec
    from possim.wire.dialect import load_dialect

    d = load_dialect(dialect)
    framed = bytearray.fromhex(_purchase_hex(dialect, manual=False))
    prefix = d.framing.length_size + d.framing.envelope_size
    body = bytes(framed[prefix:])
    start, end = Codec(d).spans(body)["4"]
    framed[prefix + end - 1] = 0x0A  # a non-digit nibble in the amount
    line = one_line_error(possim("iso", "decode", "--dialect", dialect, framed.hex()))
    assert f"field 4 at byte offset {end - 1}" in line
    assert f"(byte {prefix + end - 1} of the frame)" in line


def test_dialect_list_and_show_json() -> None:
    listed = json.loads(possim("dialect", "list", "--json").stdout)
    assert {d["name"] for d in listed["dialects"]} >= {"cup", "iso87ascii", "iso87binary"}
    shown = json.loads(possim("dialect", "show", "cup", "--json").stdout)
    assert shown["framing"]["tpdu"] == "6000000000"
    assert shown["roles"]["network_code"] == "60.3"
    assert shown["fields"]["4"]["len_count"] == "nibbles"


def test_files_the_user_names_need_an_existing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    assert "does not exist" in one_line_error(possim("pos", "signon", "--state", str(missing / "t.sqlite")))
    assert "does not exist" in one_line_error(possim("host", "run", "--db", str(missing / "j.sqlite")))
    assert not missing.exists()


def test_pos_status_without_a_state_file_writes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "typo.sqlite"
    assert "no state for terminal" in one_line_error(possim("pos", "status", "--state", str(state)))
    assert not state.exists()


def test_demo_with_a_bad_dialect_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "day"
    assert "no dialect 'nosuch'" in one_line_error(possim("demo", "--dialect", "nosuch", "--out", str(out)))
    assert not out.exists()


def _serve(*args: str) -> tuple[subprocess.Popen[str], dict]:
    process = subprocess.Popen([*POSSIM, *args, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else ""
    return process, json.loads(line)


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_a_pin_purchase_flows_terminal_host_hsm_in_three_processes(tmp_path: Path) -> None:
    """`possim hsm serve`, `possim host run --hsm` and `possim pos`: PIN and MAC checked across real TCP."""
    hsm, hsm_ready = _serve("hsm", "serve", "--listen", "127.0.0.1:0")
    try:
        db = tmp_path / "journal.sqlite"
        host, ready = _serve("host", "run", "--listen", "127.0.0.1:0", "--db", str(db), "--hsm", hsm_ready["listening"])
        try:
            assert ready["hsm"] == hsm_ready["listening"]
            common = ["--host", ready["listening"], "--tid", "10000001", "--state", str(tmp_path / "t.sqlite"), "--json"]
            assert json.loads(possim("pos", "signon", *common).stdout)["response_code"] == "00"
            right = possim("pos", "purchase", "--amount", "12.50", "--card", "approve", "--pin", "1234", *common)
            wrong = possim("pos", "purchase", "--amount", "12.50", "--card", "approve", "--pin", "9999", *common)
            assert json.loads(right.stdout)["response_code"] == "00", right.stderr
            assert json.loads(wrong.stdout)["response_code"] == "55", wrong.stderr
        finally:
            _stop(host)
    finally:
        _stop(hsm)
    journal = Journal(db)
    try:
        assert journal.balance("A-1001") == 5000000 - 1250
    finally:
        journal.close()
    hsm_log = hsm.stderr.read() if hsm.stderr else ""
    assert "EC" in hsm_log or "'EC'" in hsm_log  # the wrong PIN's failed verification is logged by command, not content
    assert "9999" not in hsm_log and "1234" not in hsm_log


def test_host_refuses_an_hsm_it_cannot_use_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    error = one_line_error(possim("host", "run", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "j.sqlite"), "--hsm", closed))
    assert error.startswith("possim: error: --hsm: ") and closed in error
    lmk = tmp_path / "other.lmk"
    from possim.hsm_mock.key_download import odd_parity

    lmk.write_text("\n".join(odd_parity(bytes([n]) * 16).hex() for n in range(20)))  # a valid LMK, not the test one
    hsm, hsm_ready = _serve("hsm", "serve", "--listen", "127.0.0.1:0")
    try:
        error = one_line_error(possim("host", "run", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "j.sqlite"),
                                      "--hsm", hsm_ready["listening"], "--lmk", str(lmk)))
        assert "must hold the same LMK" in error
    finally:
        _stop(hsm)


def test_the_whole_transaction_set_from_the_command_line_with_receipts(host, tmp_path: Path) -> None:
    address, db = host
    common = ["--host", address, "--tid", "10000001", "--state", str(tmp_path / "t.sqlite"), "--json"]
    receipt = tmp_path / "receipts.txt"
    run = lambda *args: json.loads(possim("pos", *args, *common).stdout)  # noqa: E731
    assert run("signon")["approved"]
    sale = run("purchase", "--amount", "20.00", "--entry", "chip", "--receipt", str(receipt))
    assert sale["approved"] and sale["operation"] == "sale"
    assert run("refund", "--amount", "5.00", "--rrn", sale["rrn"])["approved"]
    hold = run("preauth", "--amount", "30.00")
    assert run("completion", "--amount", "32.00", "--rrn", hold["rrn"], "--auth", hold["auth_code"])["approved"]
    cancel = run("preauth", "--amount", "9.00")
    assert run("preauth-cancel", "--amount", "9.00", "--rrn", cancel["rrn"], "--auth", cancel["auth_code"])["approved"]
    assert run("balance")["balance"] == 5000000 - 2000 + 500 - 3200
    assert run("offline", "--amount", "1.00")["queued"]
    advices = run("send-advices")
    assert advices["remaining"] == 0
    closed = run("batch", "close", "--receipt", str(receipt))
    assert closed["closed"] and closed["balanced"] and closed["next_batch_number"] == 2
    text = receipt.read_text()
    assert "SALE" in text and "APPROVED" in text and "BATCH BALANCED" in text
    assert "6228480010000000017" not in text
    again = possim("pos", "refund", "--amount", "99.00", "--rrn", sale["rrn"], *common)
    assert json.loads(again.stdout)["response_code"] == "13"  # above what remains of the 20.00


def test_the_demo_prints_its_day_as_text(tmp_path: Path) -> None:
    result = possim("demo", "--out", str(tmp_path / "day"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "All steps answered as expected."
    assert any(line.strip().startswith("10000003") and "open batch 000002" in line for line in lines)


@pytest.mark.parametrize(("args", "complaint"), [
    (["refund", "--amount", "1.00", "--rrn", "abc"], "an RRN is 12 letters or digits"),
    (["completion", "--amount", "1.00", "--rrn", "633700000001", "--auth", "12"], "an authorization code is 6"),
    (["purchase", "--amount", "-1"], "--amount"),
    (["purchase", "--amount", "1.001"], "--amount"),
])
def test_bad_values_are_usage_errors_and_nothing_is_sent(args: list[str], complaint: str, tmp_path: Path) -> None:
    state = tmp_path / "t.sqlite"
    result = possim("pos", *args, "--host", "127.0.0.1:9", "--state", str(state))
    assert result.returncode == 2
    assert complaint in one_line_error(result)


def test_qr_encode_writes_a_png_that_qr_decode_reads_back(tmp_path: Path) -> None:
    png = tmp_path / "order.png"
    made = possim("qr", "encode", "--amount", "12.50", "--reference", "ORD-42", "--png", str(png), "--screen", "--json")
    assert made.returncode == 0, made.stderr
    payload = json.loads(made.stdout)["payload"]
    read = possim("qr", "decode", "--image", str(png), "--json")
    decoded = json.loads(read.stdout)
    assert read.returncode == 0 and decoded["valid"] and decoded["mode"] == "mpm"
    assert decoded["fields"]["54"] == "12.50" and decoded["fields"]["62"] == {"05": "ORD-42"}
    assert possim("qr", "decode", payload, "--strict", "--json").returncode == 0


def test_qr_decode_names_the_tag_and_offset_and_exits_1() -> None:
    broken = possim("qr", "decode", "00020101021226180014com.possim.pay6304abcd", "--json")
    assert broken.returncode == 1
    errors = json.loads(broken.stdout)["errors"]
    assert {"tag": "63", "offset": 34} in [{"tag": e["tag"], "offset": e["offset"]} for e in errors]


def test_qr_decode_reads_a_consumer_presented_code_and_masks_its_pan() -> None:
    # The EMVCo CPM specification's example (as other libraries' tests copy it)
    cpm = possim("qr", "decode", "hQVDUFYwMWEaTwegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF8=", "--json")
    result = json.loads(cpm.stdout)
    assert cpm.returncode == 0 and result["mode"] == "cpm"
    assert result["fields"]["masked_pan"] == "123456******3458" and "1234567890123458" not in cpm.stdout
