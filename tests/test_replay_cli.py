"""`possim replay` as CI runs it: a separate process, real hosts (embedded, or `possim host run` in a process of
its own) over real TCP, exit codes, the summary, one JSON object with --json, a JUnit file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from host_support import TID, purchase, running_host, sign_on
from settlement_support import lab_fixtures
from possim.acquirer.journal import Journal
from possim.terminal.replay.raw import write_hex
from possim.wire.codec import Codec
from possim.wire.dialect import load_dialect
from possim.wire.framing import encode_length, frame, split_envelope

POSSIM = [sys.executable, "-m", "possim.cli"]
RAW_DIALECT = "iso87ascii"

SALE = """\
name: {name}
tags: [{tags}]
steps:
  - name: sign on
    signon: {{}}
    expect: {{"39": "00"}}
  - name: buy
    purchase: {{card: {card}, amount: {amount}}}
    expect:
      mti: "0210"
      "39": "{code}"
      "4": echo
    capture: {{rrn: "37"}}
    check:
      journal:
        - where: {{terminal_id: "10000001", amount: "{amount}"}}
          count: 1
          expect: {{pan_masked: {{matches: "^622848\\\\*+[0-9]{{4}}$"}}}}
"""
SIGNON_ONLY = """\
name: {name}
tags: [{tags}]
steps:
  - signon: {{}}
    expect: {{"39": "00", mti: "0810"}}
"""


def possim(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POSSIM, *args], capture_output=True, text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and lines[0].startswith("possim: error: ")
    return lines[0]


def scenario(folder: Path, name: str, text: str = SALE, *, tags: str = "purchase", card: str = "approve",
             amount: int = 1250, code: str = "00") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace(' ', '_')}.yaml"
    path.write_text(text.format(name=name, tags=tags, card=card, amount=amount, code=code), encoding="utf-8")
    return path


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    folder = tmp_path / "pack"
    scenario(folder, "approved sale")
    scenario(folder, "declined for funds", card="insufficient", amount=2000, code="51", tags="purchase, decline")
    scenario(folder, "sign on alone", SIGNON_ONLY, tags="network")
    return folder


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`possim host run` in its own process on an ephemeral port: its address and journal file."""
    db = tmp_path / "external.sqlite"
    process = subprocess.Popen([*POSSIM, "host", "run", "--listen", "127.0.0.1:0", "--db", str(db), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    ready = json.loads(process.stdout.readline())
    yield ready["listening"], db
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def received(db: Path) -> int:
    journal = Journal(db)
    try:
        return len(journal.messages())
    finally:
        journal.close()


def test_a_passing_folder_exits_0_with_progress_summary_and_junit(pack: Path, tmp_path: Path) -> None:
    junit, trace = tmp_path / "replay.xml", tmp_path / "replay.trace"
    done = possim("replay", str(pack), "--embedded", "--junit", str(junit), "--parallel", "2", "--trace", str(trace))
    assert done.returncode == 0, done.stdout + done.stderr
    traced = trace.read_text(encoding="utf-8")
    assert traced.count(" cup 0800 (") == 3 and traced.count(" cup 0210 (") == 2
    assert "6228480010000000017" not in traced and "6228480010000000025" not in traced
    progress = done.stderr.strip().splitlines()
    assert sorted(line.split("] ")[0] for line in progress) == ["[1/3", "[2/3", "[3/3"]
    assert all(line.split("] ")[1].startswith("PASS ") and line.endswith(" ms)") for line in progress)
    assert done.stdout.strip().splitlines()[-1].startswith("3 passed, 0 failed, 0 errors in ")
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "0", "0")
    assert sorted(c.get("classname") for c in suite.findall("testcase")) == \
        ["pack.approved_sale", "pack.declined_for_funds", "pack.sign_on_alone"]


def test_one_changed_expectation_fails_with_a_readable_diff_and_a_redacted_trace(pack: Path, tmp_path: Path) -> None:
    scenario(pack, "declined for funds", card="insufficient", amount=2000, code="00")  # the host answers 51
    junit = tmp_path / "replay.xml"
    done = possim("replay", str(pack), "--embedded", "--junit", str(junit))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    head = lines.index("FAIL declined for funds — step 2 'buy'")
    assert lines[head + 1] == "  field 39: expected '00', got '51' (insufficient funds)"
    trace = "\n".join(lines[head + 2:-1])
    assert " cup 0200 (" in trace and " cup 0210 (" in trace and "[ 39] Response code" in trace
    assert "Track 2 data                             [redacted" in trace  # the swiped card: track 2, hidden
    assert lines[-1].startswith("2 passed, 1 failed, 0 errors in ")
    assert "[2/3] FAIL declined for funds (" in done.stderr
    for text in (done.stdout, done.stderr, junit.read_text(encoding="utf-8")):
        assert "6228480010000000025" not in text  # never the full PAN
    failure = ET.parse(junit).getroot().find("testsuite/testcase[@name='declined for funds']/failure")
    assert failure is not None and failure.get("message") == "field 39: expected '00', got '51' (insufficient funds)"


def test_json_prints_one_object_and_no_progress(pack: Path) -> None:
    done = possim("replay", str(pack), "--embedded", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["passed"], result["failed"], result["errors"], result["total"]) == (3, 0, 0, 3)
    assert [c["name"] for c in result["cases"]] == ["approved sale", "declined for funds", "sign on alone"]
    assert all(c["verdict"] == "passed" and c["steps_run"] == c["steps"] for c in result["cases"])
    assert done.stderr == ""


def test_k_selects_by_name_and_tag_and_a_bad_expression_is_a_usage_error(pack: Path) -> None:
    done = possim("replay", str(pack), "--embedded", "--json", "-k", "purchase and not decline")
    assert [c["name"] for c in json.loads(done.stdout)["cases"]] == ["approved sale"]
    done = possim("replay", str(pack), "--embedded", "--json", "-k", "network or funds")
    assert [c["name"] for c in json.loads(done.stdout)["cases"]] == ["declined for funds", "sign on alone"]
    bad = possim("replay", str(pack), "--embedded", "-k", "purchase and (qr")
    assert bad.returncode == 2 and "column 17: the '(' at column 14 is not closed" in one_line_error(bad)
    none = possim("replay", str(pack), "--embedded", "-k", "refund")
    assert "selects none of the 3 scenarios" in one_line_error(none)


def test_schema_prints_the_json_schema_without_paths() -> None:
    done = possim("replay", "--schema")
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert "steps" in schema["properties"] and schema["type"] == "object"


@pytest.mark.parametrize("args, message", [
    ([], "exactly one of --host HOST:PORT and --embedded"),
    (["--embedded", "--host", "127.0.0.1:1"], "exactly one of --host HOST:PORT and --embedded"),
    (["--embedded", "--journal", "{journal}"], "--journal and --http describe an external host"),
    (["--host", "nonsense"], "--host 'nonsense' must be HOST:PORT"),
    (["--embedded", "--ignore", "7,x"], "is not a list of field numbers"),
])
def test_usage_errors_are_one_line(pack: Path, tmp_path: Path, args: list[str], message: str) -> None:
    journal = tmp_path / "j.sqlite"
    journal.write_bytes(b"")
    error = one_line_error(possim("replay", str(pack), *[a.format(journal=journal) for a in args]))
    assert message in error


def test_a_yaml_error_is_one_line_with_file_and_line_and_nothing_is_sent(pack: Path, host: tuple[str, Path]) -> None:
    address, db = host
    broken = pack / "zz_broken.yaml"
    broken.write_text("name: broken\nsteps:\n  - purchase: {card: approve, amount: 100}\n    expect: {\"39\": \"00\"\n",
                      encoding="utf-8")
    error = one_line_error(possim("replay", str(pack), "--host", address))
    assert f"{broken}:" in error
    line = int(error.split(f"{broken}:")[1].split(":")[0])
    assert 3 <= line <= 5
    assert received(db) == 0  # the good scenarios before it were not run either


def test_against_a_separate_host_journal_checks_need_journal(pack: Path, host: tuple[str, Path], tmp_path: Path) -> None:
    address, db = host
    refused = possim("replay", str(pack), "--host", address)
    error = one_line_error(refused)
    assert f"{pack / 'approved_sale.yaml'}:" in error and "check.journal" in error and "give --journal" in error
    assert received(db) == 0
    junit = tmp_path / "external.xml"
    done = possim("replay", str(pack), "--host", address, "--journal", str(db), "--parallel", "3", "--json",
                  "--junit", str(junit))
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["passed"] == 3
    again = possim("replay", str(pack), "--host", address, "--journal", str(db), "-k", "purchase", "--json")
    # a second run the same day: fresh STANs, so nothing is taken for a retransmission; each sale's journal
    # check finds two rows now, one per run
    cases = {c["name"]: c for c in json.loads(again.stdout)["cases"]}
    assert all(c["failures"] and "count" in c["failures"][0]["key"] for c in cases.values()), again.stdout
    journal = Journal(db)
    try:
        sales = [t for t in journal.transactions() if t.amount == 1250]
    finally:
        journal.close()
    assert len(sales) == 2 and len({t.stan for t in sales}) == 2 and {t.response_code for t in sales} == {"00"}


def _recorded_session(tmp_path: Path, *, answer_code: str | None = None) -> tuple[Path, Path]:
    """A sign-on and a sale recorded from a real host as a .hex file, with fixtures whose terminal 10000001 has no
    master key (so no MAC: a recorded frame is accepted again). `answer_code` rewrites the sale's recorded
    field 39, as if the host once answered otherwise."""
    fixtures = lab_fixtures(tmp_path / "fixtures")
    terminals = yaml.safe_load((fixtures / "terminals.yaml").read_text())
    for entry in terminals["terminals"]:
        if entry["tid"] == TID:
            del entry["tmk"]
    (fixtures / "terminals.yaml").write_text(yaml.safe_dump(terminals))
    dialect = load_dialect(RAW_DIALECT)
    framing = dialect.framing
    exchanges = []
    with running_host(tmp_path, RAW_DIALECT, fixtures, db_name="recorded.sqlite") as host, host.terminal() as pos:
        for message in (sign_on(dialect, "000001"), purchase(dialect, "000002", card="approve")):
            request = pos.framed(message)
            pos.send_raw(request)
            payload = pos.receive_payload()
            exchanges.append((request, encode_length(framing, len(payload)) + payload))
    if answer_code is not None:
        codec = Codec(dialect)
        request, answer = exchanges[1]
        envelope, body = split_envelope(framing, answer[framing.length_size:])
        message = codec.decode(body)
        message[39] = answer_code
        exchanges[1] = (request, frame(framing, codec.encode(message), envelope))
    path = tmp_path / ("changed.hex" if answer_code else "session.hex")
    write_hex(path, exchanges, dialect)
    return path, fixtures


def test_hex_files_replay_beside_scenarios_and_a_changed_answer_is_named(pack: Path, tmp_path: Path) -> None:
    session, fixtures = _recorded_session(tmp_path)
    done = possim("replay", str(session), str(pack / "sign_on_alone.yaml"), "--embedded", "--fixtures", str(fixtures),
                  "--dialect", RAW_DIALECT, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert (result["passed"], result["total"]) == (2, 2)
    assert [(r["name"], r["verdict"], r["frames"]) for r in result["raw"]] == [("session.hex", "passed", 2)]
    changed, _ = _recorded_session(tmp_path / "again", answer_code="05")
    junit = tmp_path / "raw.xml"
    done = possim("replay", str(changed), "--embedded", "--fixtures", str(fixtures), "--dialect", RAW_DIALECT,
                  "--junit", str(junit))
    assert done.returncode == 1
    assert "[1/1] FAIL changed.hex (" in done.stderr
    head = done.stdout.splitlines()[0]
    assert head.startswith("FAIL changed.hex — line ") and "field 39: recorded '05', got '00'" in head
    failure = ET.parse(junit).getroot().find("testsuite/testcase[@name='changed.hex']/failure")
    assert failure is not None and failure.get("type") == "AnswerDiffers"
    ignored = possim("replay", str(changed), "--embedded", "--fixtures", str(fixtures), "--dialect", RAW_DIALECT,
                     "--ignore", "7,11,12,13,15,37,38,39,64")
    assert ignored.returncode == 0, ignored.stdout


def test_the_readme_example_passes_as_written(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Replay for QA", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(example, encoding="utf-8")
    run = subprocess.run([*POSSIM, "replay", str(path), "--embedded", "--json"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads(run.stdout)
    assert (summary["passed"], summary["failed"]) == (1, 0)
