"""`possim load` as a tester runs it: a separate process, a real host in a process of its own, real TCP, the
report files, the exit code — and the host's journal agreeing with what the report counted."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
from base64 import b64decode
from pathlib import Path

import pytest
from PIL import Image

from possim.fixtures import load_fixture
from possim.lab import fleet_fixtures, host_process

POSSIM = [sys.executable, "-m", "possim.cli"]
LOST = 6802
"""An amount the rules file below makes the host journal and post but never answer."""


def load(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POSSIM, "load", *args], capture_output=True, text=True, timeout=timeout)


def approved_rows(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as journal:
        rows = journal.execute("SELECT kind, COUNT(*) FROM transactions WHERE status IN ('approved', 'refunded', "
                               "'partially_refunded') GROUP BY kind").fetchall()
    return {kind: count for kind, count in rows}


def test_an_embedded_run_writes_its_report_and_prints_one_json_object(tmp_path: Path) -> None:
    out = tmp_path / "report"
    run = load("--embedded", "--terminals", "4", "--duration", "1.5s", "--mix", "purchase:70,refund:15,qr:15",
               "--amount", "1.00-20.00", "--out", str(out), "--json", "--max-error-rate", "0%")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    figures = report["figures"]
    assert report["run"]["terminals"] == report["run"]["signed_on"] == 4
    assert figures["transactions"] > 20 and figures["approved"] == figures["transactions"]
    assert set(figures["kinds"]) == {"purchase", "refund", "qr"}
    assert figures["response_codes"] == {"00": figures["transactions"]}
    assert all(figures["latency_ms"][p] > 0 for p in ("p50", "p90", "p99", "p99.9", "max"))
    assert figures["latency_ms"]["p50"] <= figures["latency_ms"]["p99"] <= figures["latency_ms"]["max"]
    assert report["verdict"] == "PASS"
    assert json.loads((out / "report.json").read_text()) == report
    page = (out / "report.html").read_text()
    pictures = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pictures) == 2
    for picture in pictures:
        assert Image.open(io.BytesIO(b64decode(picture))).size[0] >= 400
    assert "p99.9" in page and "4 terminals" in page


def test_against_a_separate_host_the_journal_holds_what_the_report_counted(tmp_path: Path) -> None:
    """Two runs in a row with the same amount: the second carries on the first one's STANs (the STAN book), so
    the host approves each request anew instead of answering it as a retransmission of the first run's."""
    fixtures = fleet_fixtures(tmp_path / "fixtures", 6)
    stans = tmp_path / "stans.json"
    with host_process("iso87binary", tmp_path / "host", fixtures_dir=fixtures) as host:
        address = f"{host.address[0]}:{host.address[1]}"
        common = ["--host", address, "--fixtures", str(fixtures), "--dialect", "iso87binary", "--terminals", "6",
                  "--stans", str(stans), "--json"]
        run = load(*common, "--duration", "1s", "--mix", "purchase:80,refund:20", "--out", str(tmp_path / "r"))
        assert run.returncode == 0, run.stderr
        after_first = json.loads(stans.read_text())[address]
        again = load(*common, "--duration", "0.5s", "--out", str(tmp_path / "r2"))
        assert again.returncode == 0, again.stderr
    book = json.loads(stans.read_text())[address]
    assert set(book) == {f"{90000001 + n:08d}" for n in range(6)}
    assert all(book[tid] > after_first[tid] for tid in book)
    first, second = json.loads(run.stdout)["figures"], json.loads(again.stdout)["figures"]
    assert first["approved"] == first["transactions"] and second["approved"] == second["transactions"]
    journal = approved_rows(tmp_path / "host" / "journal.sqlite")
    refunds = first["kinds"].get("refund", {}).get("approved", 0)
    purchases = first["kinds"]["purchase"]["approved"] + second["kinds"]["purchase"]["approved"]
    assert sum(journal.values()) == purchases + refunds
    assert journal.get("refund", 0) == refunds


def test_unanswered_requests_are_reversed_and_a_bad_run_exits_1(tmp_path: Path) -> None:
    fixtures = fleet_fixtures(tmp_path / "fixtures", 2)
    (fixtures / "host_rules.yaml").write_text(f"rules:\n  - name: lost\n    when: {{amount: {LOST}}}\n    drop: true\n")
    with host_process("cup", tmp_path / "host", fixtures_dir=fixtures) as host:
        run = load("--host", f"{host.address[0]}:{host.address[1]}", "--fixtures", str(fixtures), "--terminals", "2",
                   "--duration", "1s", "--amount", f"{LOST / 100:.2f}", "--timeout", "0.3", "--json",
                   "--out", str(tmp_path / "r"), "--max-error-rate", "1%", "--stans", str(tmp_path / "stans.json"))
    assert run.returncode == 1, run.stderr
    figures = json.loads(run.stdout)["figures"]
    assert figures["timeouts"] == figures["transactions"] > 0
    assert figures["latency_ms"] is None and figures["response_codes"] == {}
    assert sum(figures["tps_per_second"]) == figures["transactions"]
    assert figures["reversals"] == {"sent": figures["timeouts"], "approved": figures["timeouts"]}
    assert json.loads(run.stdout)["verdict"].startswith("FAIL: error rate 100.00% above 1.00%")
    with sqlite3.connect(tmp_path / "host" / "journal.sqlite") as journal:
        statuses = dict(journal.execute("SELECT status, COUNT(*) FROM transactions GROUP BY status").fetchall())
    assert statuses == {"reversed": figures["timeouts"]}, "every sale the host posted was reversed"


def test_open_loop_sends_the_rate_asked_for(tmp_path: Path) -> None:
    run = load("--embedded", "--terminals", "5", "--rate", "40/s", "--duration", "2s", "--json",
               "--out", str(tmp_path / "r"))
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["run"]["mode"] == "open loop at 40/s"
    assert 76 <= report["figures"]["transactions"] <= 80  # 8 slots a terminal in 2 s; the fleet keeps up


def test_the_text_report_and_live_progress(tmp_path: Path) -> None:
    run = load("--embedded", "--terminals", "2", "--duration", "2.2s", "--out", str(tmp_path / "r"))
    assert run.returncode == 0, run.stderr
    assert "2 of 2 terminals" in run.stdout and "latency ms: p50" in run.stdout and "codes: 00 " in run.stdout
    assert re.search(r"^\s+1 s\s+[\d,]+ tps\s+[\d,]+ tx\s+0 errors\s+p99 [\d.]+ ms$", run.stderr, re.M)


def test_no_card_data_in_the_report_files(tmp_path: Path) -> None:
    pan = next(c["pan"] for c in load_fixture("cards.yaml")["cards"] if c["name"] == "approve")
    run = load("--embedded", "--terminals", "2", "--duration", "0.5s", "--out", str(tmp_path / "r"))
    assert run.returncode == 0, run.stderr
    for path in (tmp_path / "r").iterdir():
        assert pan not in path.read_text() and pan[6:] not in path.read_text()


@pytest.mark.parametrize("args, message", [
    (["--duration", "1s"], "exactly one of --host"),
    (["--embedded", "--host", "127.0.0.1:1"], "exactly one of --host"),
    (["--embedded", "--mix", "purchase:80,void:20"], "--mix item 2"),
    (["--embedded", "--rate", "fast"], "--rate 'fast'"),
    (["--embedded", "--max-error-rate", "lots"], "--max-error-rate"),
    (["--embedded", "--tid-from", "90000001"], "describe the fleet for --host"),
    (["--host", "127.0.0.1:1", "--permissive"], "--permissive"),
    (["--embedded", "--stans", "x.json"], "--stans"),
])
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    run = load(*args)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr


def test_a_fleet_larger_than_the_fixtures_or_an_unreachable_host_is_one_line(tmp_path: Path) -> None:
    stans = ("--stans", str(tmp_path / "stans.json"))
    run = load("--host", "127.0.0.1:9", "--terminals", "500", "--duration", "1s", *stans)
    assert run.returncode == 1 and "terminals.yaml has" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    run = load("--host", "127.0.0.1:9", "--terminals", "2", "--duration", "1s", "--timeout", "1", *stans)
    assert run.returncode == 1 and "no terminal signed on" in run.stderr and "Traceback" not in run.stderr


def test_make_fixtures_writes_a_fleet_a_separate_host_and_the_fleet_share(tmp_path: Path) -> None:
    run = load("--make-fixtures", str(tmp_path / "fx"), "--terminals", "7", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"fixtures": str((tmp_path / "fx").resolve()), "terminals": 7}
    terminals = load_fixture("terminals.yaml", tmp_path / "fx")["terminals"]
    assert len(terminals) == 7 and len({t["tmk"] for t in terminals}) == 7


def test_an_embedded_permissive_host_takes_a_fleet_without_keys_in_plain_iso87(tmp_path: Path) -> None:
    run = load("--embedded", "--permissive", "--dialect", "iso87ascii", "--terminals", "3", "--duration", "0.5s",
               "--mix", "purchase:90,refund:10", "--json", "--out", str(tmp_path / "r"))
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["run"]["dialect"] == "iso87ascii" and report["run"]["signed_on"] == 3
    assert report["figures"]["approved"] == report["figures"]["transactions"] > 0
