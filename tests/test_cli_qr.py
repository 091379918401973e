"""`possim pos qr-*` as a user runs them: each command its own process, against a real host (with its wallet
entry) on loopback; one JSON object per --json, exit 0 answered / 3 no answer / 1 error / 2 usage."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from possim.acquirer.core import build_host
from possim.acquirer.journal import Journal
from possim.acquirer.server import HostThread
from possim.wire.payment_code import generate
from possim.wire.qr_image import qr_png, qr_text, read_qr_png
from test_terminal_qr import ALICE, WALLETS, wallet_call

POSSIM = [sys.executable, "-m", "possim.cli"]


class CliLab:
    """A cup host on its own thread (real clock: the commands run on it too) and one terminal's state file."""

    def __init__(self, tmp_path: Path):
        self.db = tmp_path / "journal.sqlite"
        self.core = build_host("cup", self.db)
        self.thread = HostThread(self.core, http=("127.0.0.1", 0))
        host, port = self.thread.start()
        http = self.thread.http_address
        assert http is not None
        self.http = f"http://{http[0]}:{http[1]}"
        self.terminal = ["--tid", "10000001", "--state", str(tmp_path / "t.sqlite")]
        self.common = ["--host", f"{host}:{port}", *self.terminal]
        self._nonces = random.Random(3)

    def pos(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*POSSIM, "pos", *args, *self.common], capture_output=True, text=True, timeout=timeout)

    def json(self, *args: str, code: int = 0) -> dict[str, Any]:
        """The one JSON object a --json command prints, after checking its exit status."""
        done = self.pos(*args, "--json")
        assert done.returncode == code, done.stderr
        (line,) = done.stdout.splitlines()
        return json.loads(line)

    def status(self) -> dict[str, Any]:
        """What `possim pos status` says the terminal remembers (it sends nothing, so takes no --host)."""
        done = subprocess.run([*POSSIM, "pos", "status", *self.terminal, "--json"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def pays(self, payload: str, name: str = "alice") -> dict[str, Any]:
        return wallet_call(self.http, name, "POST", "/wallet/v1/payments", {"payload": payload}, datetime.now(),
                           self._nonces)

    def balance(self, account: str) -> int | None:
        journal = Journal(self.db)
        try:
            return journal.balance(account)
        finally:
            journal.close()


@pytest.fixture
def lab(tmp_path: Path):
    made = CliLab(tmp_path)
    assert made.json("signon")["response_code"] == "00"
    yield made
    made.thread.stop()
    made.core.close()


def code_of(name: str) -> str:
    account = WALLETS.account(name)
    assert account is not None
    return generate(account.provider, account.number, account.secret, datetime.now())


def one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("possim: error: ") and "Traceback" not in done.stderr
    return lines[0]


def test_qr_order_writes_a_png_the_wallet_pays_and_query_refund_and_batch_close_follow(lab, tmp_path):
    png = tmp_path / "order.png"
    order = lab.json("qr-order", "--amount", "12.50", "--png", str(png))
    assert (order["operation"], order["response_code"], order["status"], order["amount"]) == ("qr_order", "00", "created", 1250)
    assert order["png"] == str(png.resolve()) and read_qr_png(png.read_bytes()) == order["payload"]
    assert order["expires_at"] and order["channel"] is None
    assert lab.pays(order["payload"])["status"] == "paid"

    paid = lab.json("qr-query", "--order", order["order_no"])
    assert (paid["status"], paid["approved"], paid["channel"]) == ("paid", True, "wechat")
    refund = lab.json("qr-refund", "--order", order["order_no"], "--amount", "5.00")
    assert (refund["request_mti"], refund["response_code"], refund["refunded"]) == ("0220", "00", 500)
    too_much = lab.json("qr-refund", "--order", order["order_no"], "--amount", "7.51")
    assert too_much["response_code"] == "13"

    status = lab.status()
    assert [(t["kind"], t["order_no"]) for t in status["open_batch"]["transactions"]] == [
        ("qr_order", order["order_no"]), ("qr_refund", order["order_no"])]
    closed = lab.json("batch", "close")
    assert closed["closed"] and closed["balanced"]
    assert lab.balance("wallet:alice") == ALICE - 1250 + 500

    text = lab.pos("qr-query", "--order", order["order_no"])
    assert text.returncode == 0 and text.stdout.startswith(f"ORDER {order['order_no']} PAID — qr_query")


def test_qr_order_in_text_mode_shows_the_code_and_its_screen_image(lab, tmp_path):
    png = tmp_path / "screen.png"
    done = lab.pos("qr-order", "--amount", "8.80", "--png", str(png), "--screen")
    assert done.returncode == 0, done.stderr
    payload = read_qr_png(png.read_bytes())
    assert qr_text(payload) in done.stdout and payload in done.stdout
    assert f"written to {png.resolve()}" in done.stdout and "ORDER " in done.stdout and " CREATED — qr_order 8.80 CNY" in done.stdout
    assert lab.status()["open_qr_orders"][0]["status"] == "created"


def test_qr_order_wait_sees_an_unpaid_order_closed(lab):
    final = lab.json("qr-order", "--amount", "3.00", "--wait", "0.6", "--poll", "0.2")
    assert (final["operation"], final["status"], final["approved"], final["response_code"]) == ("qr_close", "closed", False, "00")
    assert final["png"] is None and lab.status()["open_qr_orders"] == []
    text = lab.pos("qr-order", "--amount", "3.10", "--wait", "0.3", "--poll", "0.2")
    assert text.returncode == 0
    assert "possim: qr_query: order " in text.stderr and "possim: qr_close: order " in text.stderr
    assert text.stdout.rstrip().splitlines()[-2].endswith("CLOSED — qr_close")


def test_qr_order_left_unanswered_exits_3_after_its_reversal(lab):
    lost = lab.json("qr-order", "--amount", "68.02", "--timeout", "0.5", code=3)  # fixtures/host_rules.yaml drops it
    assert lost["response_code"] is None and lost["timed_out"] and lost["reversal"]["acknowledged"]


def test_qr_scan_by_code_and_by_image(lab, tmp_path):
    paid = lab.json("qr-scan", "--amount", "20.00", "--code", code_of("alice"))
    assert (paid["operation"], paid["response_code"], paid["status"], paid["channel"]) == ("qr_sale", "00", "paid", "wechat")
    shown = tmp_path / "bob.png"
    shown.write_bytes(qr_png(code_of("bob")))
    poor = lab.json("qr-scan", "--amount", "20.00", "--image", str(shown))
    assert (poor["response_code"], poor["approved"]) == ("51", False)
    assert lab.balance("wallet:alice") == ALICE - 2000


def test_qr_scan_waiting_for_the_password_is_cancelled_at_the_deadline(lab):
    final = lab.json("qr-scan", "--amount", "300.01", "--code", code_of("alice"), "--wait", "0.4", "--poll", "0.2")
    assert (final["operation"], final["approved"], final["status"]) == ("reversal", True, "reversed")
    assert lab.balance("wallet:alice") == ALICE
    kept = lab.json("qr-scan", "--amount", "300.02", "--code", code_of("alice"), "--wait", "0")
    assert (kept["response_code"], kept["status"]) == ("09", "paying")


def test_qr_close_and_an_unknown_order(lab):
    order = lab.json("qr-order", "--amount", "4.00")
    closed = lab.json("qr-close", "--order", order["order_no"])
    assert (closed["status"], closed["approved"]) == ("closed", False)
    assert lab.pays(order["payload"])["error"]["code"] == "ORDER_CLOSED"
    unknown = lab.json("qr-query", "--order", "2001019999999999")
    assert (unknown["response_code"], unknown["order_no"], unknown["status"]) == ("25", "2001019999999999", None)


def test_qr_usage_errors_exit_2_and_bad_input_exits_1_on_one_line(lab, tmp_path):
    code = code_of("alice")
    both = lab.pos("qr-scan", "--amount", "1.00", "--code", code, "--image", __file__)
    assert "exactly one of --code" in one_line_error(both, 2)
    assert "--screen needs --png" in one_line_error(lab.pos("qr-order", "--amount", "1.00", "--screen"), 2)
    assert "--order" in one_line_error(lab.pos("qr-refund", "--amount", "1.00"), 2)
    assert "--amount" in one_line_error(lab.pos("qr-order", "--amount", "1.001"), 2)
    garbled = lab.pos("qr-scan", "--amount", "1.00", "--code", code[:5] + "x" + code[6:], "--json")
    assert "offset 5" in one_line_error(garbled, 1) and code[6:] not in garbled.stderr + garbled.stdout
    assert json.loads(garbled.stdout).keys() == {"error"}
    not_png = tmp_path / "not.png"
    not_png.write_bytes(b"not an image")
    assert "not a readable image" in one_line_error(lab.pos("qr-scan", "--amount", "1.00", "--image", str(not_png)), 1)
