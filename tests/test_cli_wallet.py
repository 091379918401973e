"""`possim wallet` and `possim host run --http` as a user runs them: real processes, a real HTTP port."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pytest

from possim.acquirer.wallets import WalletNetwork
from possim.wire.payment_code import verify

POSSIM = [sys.executable, "-m", "possim.cli"]


def possim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POSSIM, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def host(tmp_path):
    process = subprocess.Popen([*POSSIM, "host", "run", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                                "--db", str(tmp_path / "journal.sqlite"), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = json.loads(process.stdout.readline())
        yield ready
    finally:
        process.terminate()
        process.wait(10)


def test_wallet_list_shows_accounts_without_secrets() -> None:
    run = possim("wallet", "list", "--json")
    assert run.returncode == 0
    accounts = {a["account"]: a for a in json.loads(run.stdout)["accounts"]}
    assert accounts["alice"]["channel"] == "wechat" and accounts["dave"]["frozen"] is True
    assert "secret" not in run.stdout and "123456" not in run.stdout


def test_wallet_code_is_a_fresh_code_of_the_account() -> None:
    run = possim("wallet", "code", "--account", "carol", "--json")
    code = json.loads(run.stdout)["code"]
    carol = WalletNetwork.from_fixtures().account("carol")
    assert len(code) == 19 and code.startswith("62") and verify(code, carol.secret, datetime.now())


def test_host_serves_http_and_the_wallet_pays_a_static_code_and_reads_its_balance(host) -> None:
    assert host["http"] and host["listening"]
    payload = possim("qr", "encode", "--json").stdout
    static = json.loads(payload)["payload"]
    paid = possim("wallet", "pay", static, "--account", "alice", "--amount", "12.00", "--http", host["http"], "--json")
    assert paid.returncode == 0, paid.stderr
    assert json.loads(paid.stdout)["status"] == "paid"
    balance = json.loads(possim("wallet", "balance", "--account", "alice", "--http", host["http"], "--json").stdout)
    assert balance["balance"] == WalletNetwork.from_fixtures().account("alice").opening_balance - 1200
    poor = possim("wallet", "pay", static, "--account", "bob", "--amount", "99.00", "--http", host["http"], "--json")
    assert poor.returncode == 1 and json.loads(poor.stdout)["response_code"] == "51"


def test_wallet_errors_are_one_line() -> None:
    run = possim("wallet", "balance", "--account", "nobody", "--http", "127.0.0.1:9")
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "nobody" in run.stderr
    down = possim("wallet", "balance", "--account", "alice", "--http", "127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach" in down.stderr
    assert possim("host", "run", "--serial", "/dev/null", "--http", "127.0.0.1:0").returncode == 2
