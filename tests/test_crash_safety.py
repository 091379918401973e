"""A terminal process killed (SIGKILL) mid-transaction and mid-upload, then run again: the host's journal
and the terminal's batch still agree. The terminal is `possim pos` in its own process; the host runs on
a loopback port with scenario rules that hold answers back long enough to kill the terminal while it waits."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from host_support import OPENING, running_host
from possim.fixtures import fixture_path

POSSIM = [sys.executable, "-m", "possim.cli"]
RULES = """rules:
  - {name: slow purchase, when: {amount: 4403}, delay: 6}
  - {name: slow upload, when: {mti: "0320"}, delay: 6}
"""


def fixtures(tmp_path: Path) -> Path:
    folder = tmp_path / "fixtures"
    folder.mkdir()
    for name in ("merchants.yaml", "terminals.yaml", "cards.yaml", "accounts.yaml", "host.yaml"):
        (folder / name).write_bytes(fixture_path(name).read_bytes())
    (folder / "host_rules.yaml").write_text(RULES)
    return folder


def pos(address: str, state: Path, *args: str) -> dict:
    result = subprocess.run([*POSSIM, "pos", *args, "--host", address, "--tid", "10000001", "--state", str(state),
                             "--timeout", "60", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 3), result.stderr
    return json.loads(result.stdout)


def kill_when(process: subprocess.Popen, ready, what: str, timeout: float = 20.0) -> None:
    """SIGKILL `process` as soon as `ready()` holds: the terminal is then waiting for an answer."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"terminal exited before {what}: {process.stderr.read() if process.stderr else ''}"
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.02)
    process.kill()
    process.wait(timeout=10)


def spawn(address: str, state: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*POSSIM, "pos", *args, "--host", address, "--tid", "10000001", "--state", str(state),
                             "--timeout", "60", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_mid_purchase_the_next_run_reverses_it_and_the_batch_balances(tmp_path) -> None:
    with running_host(tmp_path, "cup", fixtures(tmp_path)) as host:
        address, state = f"127.0.0.1:{host.port}", tmp_path / "t.sqlite"
        assert pos(address, state, "signon")["response_code"] == "00"
        assert pos(address, state, "purchase", "--amount", "12.00")["approved"]
        journal = host.journal()
        try:
            slow = spawn(address, state, "purchase", "--amount", "44.03")
            kill_when(slow, lambda: any(t.amount == 4403 for t in journal.transactions()), "the purchase reached the host")
            assert host.balance("A-1001") == OPENING["A-1001"] - 1200 - 4403  # posted, its answer never delivered

            closed = pos(address, state, "batch", "close")
            assert closed["closed"] and closed["balanced"], closed["message"]
            assert closed["prior_reversal"]["acknowledged"]
            assert host.balance("A-1001") == OPENING["A-1001"] - 1200
            late = next(t for t in journal.transactions() if t.amount == 4403)
            assert late.status == "reversed"
            assert journal.closed_batch("10000001", "000001").balanced
        finally:
            journal.close()


def test_killed_mid_upload_the_next_run_finishes_it_without_sending_a_record_twice(tmp_path) -> None:
    folder = fixtures(tmp_path)
    with running_host(tmp_path, "cup", folder) as host:
        address, state = f"127.0.0.1:{host.port}", tmp_path / "t.sqlite"
        assert pos(address, state, "signon")["response_code"] == "00"
        for amount in ("10.00", "11.00", "12.00", "13.00", "14.00", "15.00", "16.00", "17.00", "18.00"):
            assert pos(address, state, "purchase", "--amount", amount)["approved"]
        journal = host.journal()
        try:
            closing = spawn(address, state, "batch", "close")
            kill_when(closing, lambda: any(m.mti == "0320" for m in journal.messages()), "the first upload reached the host")
            assert journal.closed_batch("10000001", "000001") is not None  # totals answered before the upload began
            (folder / "host_rules.yaml").write_text("rules: []\n")  # the tester lifts the delay; the host rereads it
            time.sleep(1.2)

            resumed = pos(address, state, "batch", "close")
            assert resumed["closed"], resumed["message"]
            uploads = journal.uploads("10000001", "000001")
            # 9 records, 8 in the first 0320 (its answer was lost with the process) and 1 in the second
            assert sorted(u.amount for u in uploads) == [1000, 1100, 1200, 1300, 1400, 1500, 1600, 1700, 1800]
            sent = [m for m in journal.messages() if m.mti == "0320" and m.direction == "in"]
            assert len(sent) == 3  # two record messages and the end of upload, none repeated
            assert journal.closed_batch("10000001", "000001").balanced
            assert journal.terminal("10000001").batch_number == "000002"
            status = subprocess.run([*POSSIM, "pos", "status", "--tid", "10000001", "--state", str(state), "--json"],
                                    capture_output=True, text=True, timeout=60)
            assert json.loads(status.stdout)["batch_number"] == "000002"
        finally:
            journal.close()


def test_killed_waiting_for_the_totals_answer_the_next_run_resends_the_same_0500(tmp_path) -> None:
    """iso87's 0500 names no batch: only its STAN tells the host it is the same close. The resumed close must
    resend that STAN, or the host would close the next, empty batch as well."""
    folder = fixtures(tmp_path)
    (folder / "host_rules.yaml").write_text('rules:\n  - {name: slow close, when: {mti: "0500"}, delay: 6}\n')
    with running_host(tmp_path, "iso87ascii", folder) as host:
        address, state = f"127.0.0.1:{host.port}", tmp_path / "t.sqlite"
        assert pos(address, state, "signon", "--dialect", "iso87ascii")["response_code"] == "00"
        assert pos(address, state, "purchase", "--amount", "12.00", "--dialect", "iso87ascii")["approved"]
        journal = host.journal()
        try:
            closing = spawn(address, state, "batch", "close", "--dialect", "iso87ascii")
            kill_when(closing, lambda: journal.closed_batch("10000001", "000001") is not None, "the host closed the batch")
            (folder / "host_rules.yaml").write_text("rules: []\n")
            time.sleep(1.2)
            resumed = pos(address, state, "batch", "close", "--dialect", "iso87ascii")
            assert resumed["closed"] and resumed["balanced"], resumed["message"]
            closes = [m for m in journal.messages() if m.mti == "0500" and m.direction == "in"]
            assert len(closes) == 2 and closes[0].stan == closes[1].stan  # the same 0500, sent again
            assert journal.closed_batch("10000001", "000002") is None  # no phantom second close
            assert journal.terminal("10000001").batch_number == "000002"
        finally:
            journal.close()
