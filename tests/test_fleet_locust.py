"""The shipped locustfile as a load tester runs it: Locust in processes of its own (a master and a worker, or
one local process) against `possim host run` in another, real TCP, Locust's CSV files and exit code — and the
host's journal agreeing with what Locust counted.

Locust patches its process for gevent, so this module never imports it (nor the locustfile): every Locust run
is a subprocess.
"""

from __future__ import annotations

import csv
import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from possim.fixtures import load_fixture
from possim.lab import fleet_fixtures, host_process
from possim.terminal.fleet.locust_path import locustfile_path

LOCUST = [sys.executable, "-m", "locust", "-f", str(locustfile_path())]
USERS = 4
WORKERS = 2


def free_port() -> int:
    """A loopback port free now, for the master's worker channel (Locust prints no port it picked itself)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def final_stats(path: Path) -> dict[str, dict[str, int]]:
    """Locust's --json-file, by name: written after the run stopped, unlike the CSV (rewritten once a second)."""
    return {entry["name"]: entry for entry in json.loads(path.read_text())}


def journal(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(sql).fetchall()


def generated_fixtures(folder: Path, tid_from: int, count: int) -> Path:
    """The built-ins with `count` terminals from `tid_from`, without master keys, as --possim-tid-from makes them."""
    folder.mkdir(parents=True)
    merchant = load_fixture("merchants.yaml")["merchants"][0]["id"]
    terminals = [{"tid": f"{tid_from + n:08d}", "mid": merchant} for n in range(count)]
    (folder / "terminals.yaml").write_text(yaml.safe_dump({"terminals": terminals}), encoding="utf-8")
    return folder


def test_a_master_and_two_workers_count_what_the_host_journaled_each_terminal_on_one_worker(tmp_path: Path) -> None:
    fixtures = fleet_fixtures(tmp_path / "fixtures", USERS)
    port = free_port()
    prefix = tmp_path / "run"
    with host_process("cup", tmp_path / "host", fixtures_dir=fixtures) as host:
        address = f"tcp://{host.address[0]}:{host.address[1]}"
        master = subprocess.Popen(
            [*LOCUST, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--headless",
             "--expect-workers", str(WORKERS), "-u", str(USERS), "-r", str(USERS), "-t", "4s", "--host", address,
             "--possim-fixtures", str(fixtures), "--possim-mix", "purchase:80,refund:10,qr:10",
             "--possim-amount", "1.00-20.00", "--stop-timeout", "2", "--csv", str(prefix), "--json-file", str(prefix)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        workers = [subprocess.Popen([*LOCUST, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for _ in range(WORKERS)]
        try:
            _, master_log = master.communicate(timeout=60)
            worker_logs = [worker.communicate(timeout=30)[1] for worker in workers]
        finally:
            for process in (master, *workers):
                if process.poll() is None:
                    process.kill()
                    process.wait()
    assert master.returncode == 0, master_log
    assert [worker.returncode for worker in workers] == [0] * WORKERS, worker_logs

    stats = {row["Name"]: row for row in rows(Path(f"{prefix}_stats.csv"))}
    assert int(stats["purchase"]["Request Count"]) > 0
    assert int(stats["signon"]["Request Count"]) == USERS
    assert stats["Aggregated"]["Failure Count"] == "0"
    assert rows(Path(f"{prefix}_failures.csv")) == []

    final = final_stats(Path(f"{prefix}.json"))
    assert all(entry["num_failures"] == 0 for entry in final.values())
    counted = final["purchase"]["num_requests"]
    assert counted >= int(stats["purchase"]["Request Count"])
    db = tmp_path / "host" / "journal.sqlite"
    (journaled,), = journal(db, "SELECT COUNT(*) FROM transactions WHERE kind = 'sale' AND response_code = '00'")
    # --stop-timeout lets a user finish the request in flight when the time is up (without it Locust kills the
    # user, and a purchase it had sent is journaled but never counted).
    assert journaled == counted
    # Each worker's users took terminals of their own: every terminal signed on once, and all of them are used.
    signed_on = journal(db, "SELECT terminal_id, COUNT(*) FROM messages WHERE direction = 'in' AND mti = '0800' "
                            "GROUP BY terminal_id ORDER BY terminal_id")
    assert signed_on == [(str(t["tid"]), 1) for t in load_fixture("terminals.yaml", fixtures)["terminals"]]
    (refunds,), = journal(db, "SELECT COUNT(*) FROM transactions WHERE kind = 'refund' AND response_code = '00'")
    assert refunds == final["refund"]["num_requests"] > 0


def test_declines_are_failures_named_by_their_response_code(tmp_path: Path) -> None:
    fixtures = generated_fixtures(tmp_path / "fixtures", 70000001, 2)
    prefix = tmp_path / "run"
    with host_process("iso87binary", tmp_path / "host", fixtures_dir=fixtures) as host:
        run = subprocess.run(
            [*LOCUST, "--headless", "-u", "2", "-r", "2", "-t", "2s", "--host", f"{host.address[0]}:{host.address[1]}",
             "--possim-dialect", "iso87binary", "--possim-fixtures", str(fixtures), "--possim-tid-from", "70000001",
             "--possim-card", "insufficient", "--possim-amount", "20.00", "--possim-mix", "purchase:1",
             "--csv", str(prefix)],
            capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr  # Locust's exit code when any request failed
    stats = {row["Name"]: row for row in rows(Path(f"{prefix}_stats.csv"))}
    assert stats["signon"]["Failure Count"] == "0"
    assert int(stats["purchase"]["Failure Count"]) == int(stats["purchase"]["Request Count"]) > 0
    failures = rows(Path(f"{prefix}_failures.csv"))
    assert [(f["Method"], f["Name"]) for f in failures] == [("ISO8583", "purchase")]
    assert "51 insufficient funds" in failures[0]["Error"]
    assert int(failures[0]["Occurrences"]) == int(stats["purchase"]["Failure Count"])
    db = tmp_path / "host" / "journal.sqlite"
    assert journal(db, "SELECT DISTINCT terminal_id, response_code FROM transactions WHERE kind = 'sale' "
                       "ORDER BY terminal_id") == [("70000001", "51"), ("70000002", "51")]


def test_users_beyond_the_terminals_stop_with_one_clear_error(tmp_path: Path) -> None:
    fixtures = generated_fixtures(tmp_path / "fixtures", 71000001, 2)
    prefix = tmp_path / "run"
    with host_process("iso87ascii", tmp_path / "host", fixtures_dir=fixtures) as host:
        run = subprocess.run(
            [*LOCUST, "--headless", "-u", "3", "-r", "3", "-t", "2s", "--host", f"{host.address[0]}:{host.address[1]}",
             "--possim-dialect", "iso87ascii", "--possim-fixtures", str(fixtures), "--possim-mix", "purchase:1",
             "--csv", str(prefix)],
            capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr  # Locust's exit code when a user had an error
    refusals = [line for line in run.stderr.splitlines() if "lists 2 terminals" in line]
    assert len(refusals) == 1 and "needs terminal number 2" in refusals[0], run.stderr
    assert "Traceback" not in run.stderr
    exceptions = rows(Path(f"{prefix}_exceptions.csv"))
    assert len(exceptions) == 1 and "lists 2 terminals" in exceptions[0]["Message"]
    stats = {row["Name"]: row for row in rows(Path(f"{prefix}_stats.csv"))}
    assert stats["signon"]["Request Count"] == "2"
    assert stats["Aggregated"]["Failure Count"] == "0"
    tids = {tid for (tid,) in journal(tmp_path / "host" / "journal.sqlite",
                                      "SELECT DISTINCT terminal_id FROM transactions")}
    assert tids == {"71000001", "71000002"}


def test_a_bad_option_is_one_line_on_stderr_and_exit_2(tmp_path: Path) -> None:
    run = subprocess.run([*LOCUST, "--headless", "-u", "1", "-t", "1s", "--host", "tcp://127.0.0.1:9",
                          "--possim-mix", "purchase:80,void:20"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert run.returncode == 2
    assert [line for line in run.stderr.splitlines() if line.startswith("possim locustfile:")] == [
        "possim locustfile: --possim-mix item 2 ('void:20'): kind 'void' must be one of purchase, refund, qr"]


def test_an_unanswered_purchase_is_reported_and_reversed(tmp_path: Path) -> None:
    fixtures = generated_fixtures(tmp_path / "fixtures", 72000001, 1)
    (fixtures / "host_rules.yaml").write_text(
        yaml.safe_dump({"rules": [{"name": "late", "when": {"amount": 6801}, "delay": 5.0}]}), encoding="utf-8")
    prefix = tmp_path / "run"
    with host_process("cup", tmp_path / "host", fixtures_dir=fixtures) as host:
        run = subprocess.run(
            [*LOCUST, "--headless", "-u", "1", "-r", "1", "-t", "2s", "--host", f"{host.address[0]}:{host.address[1]}",
             "--possim-fixtures", str(fixtures), "--possim-amount", "68.01", "--possim-timeout", "0.5",
             "--possim-mix", "purchase:1", "--stop-timeout", "3", "--csv", str(prefix), "--json-file", str(prefix)],
            capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    final = final_stats(Path(f"{prefix}.json"))
    timeouts = final["purchase"]["num_requests"]
    assert final["purchase"]["num_failures"] == timeouts > 0
    assert final["reversal"]["num_failures"] == 0 and final["reversal"]["num_requests"] == timeouts
    failures = rows(Path(f"{prefix}_failures.csv"))
    assert [f["Name"] for f in failures] == ["purchase"] and "no answer from host" in failures[0]["Error"]
    reversed_sales = journal(tmp_path / "host" / "journal.sqlite",
                             "SELECT COUNT(*) FROM transactions WHERE kind = 'sale' AND status = 'reversed'")
    assert reversed_sales == [(timeouts,)]
