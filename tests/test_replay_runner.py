"""The scenario runner against a real embedded host (lab.py) over loopback TCP, scenarios written as YAML files.

Each test runs one scenario end to end: real terminals, the runner's fault
proxy, the host with its HSM and journal, and checks what the CaseResult says.
"""

import asyncio
import json
import socket
from pathlib import Path

import pytest

from possim.lab import embedded_target
from possim.terminal.cards import resolve_card
from possim.terminal.replay.matchers import check, equal, walk
from possim.terminal.replay.model import Matcher, Where
from possim.terminal.replay.runner import run_scenario
from possim.terminal.replay.scenario import load_scenario
from possim.terminal.replay.target import TargetError
from possim.wire.codec import Codec
from possim.wire.dialect import load_dialect
from possim.wire.message import Message

PAN = resolve_card("approve").pan
QUICK = '  pos: {tid: "10000001", timeout: 0.4, reversal_retries: 1}\n'
"""A terminal that gives up on an answer fast, so fault scenarios take well under a second."""


def scenario_file(tmp_path: Path, steps: str, terminals: str = QUICK, extra: str = "") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "case.yaml"
    path.write_text(f"name: case\nterminals:\n{terminals}{extra}steps:\n{steps}", encoding="utf-8")
    return path


def run(tmp_path: Path, steps: str, *, terminals: str = QUICK, extra: str = "", wrap=None, fixtures=None, **options):
    scenario = load_scenario(scenario_file(tmp_path, steps, terminals, extra), fixtures_dir=fixtures)

    async def main():
        async with embedded_target(scenario.dialect or "cup", workdir=tmp_path / "host", fixtures_dir=fixtures) as target:
            return await run_scenario(scenario, wrap(target) if wrap else target, state_dir=tmp_path / "state",
                                      fixtures_dir=fixtures, **options)

    return asyncio.run(main())


SIGN_ON = """\
  - name: sign on
    signon: {}
    expect: {"39": "00"}
"""


def test_purchase_then_void_passes_with_every_matcher_and_a_capture(tmp_path):
    result = run(tmp_path, SIGN_ON + """\
  - name: buy
    purchase: {card: approve, amount: "${price}"}
    expect:
      mti: "0210"
      "39": "00"
      "4": echo
      "11": echo
      "37": {matches: "^[0-9]{12}$"}
      "38": present
      "52": absent
    result: {approved: true, amount: 1250, operation: sale, response_code: {one_of: ["00", "10"]}}
    capture: {rrn: "37", stan: "request.11"}
    check:
      journal:
        - where: {rrn: "${rrn}"}
          count: 1
          expect: {status: approved, amount: 1250, pan_masked: "622848*********0017"}
      batch: {count: 1, debit_count: 1, debit_amount: 1250}
      terminal: {pending_reversal: absent, last_stan: 501}
  - name: void it
    void: {stan: "${stan}"}
    expect: {"39": "00", "4": "000000001250"}
    result: {operation: sale_void}
    check:
      journal:
        - where: {rrn: "${rrn}", kind: sale}
          expect: {status: voided}
      batch: {count: 2, credit_count: 1, credit_amount: 1250}
""", extra="variables: {price: 1250}\n", stan_start=500)
    assert result.verdict == "passed", result.to_json()
    assert result.steps_run == 3 and result.trace == ""


def test_a_changed_expectation_fails_with_expected_and_actual_and_a_redacted_trace(tmp_path):
    records = []
    result = run(tmp_path, SIGN_ON + """\
  - name: buy
    purchase: {card: approve, amount: 1250}
    expect: {"39": "51", "4": echo, "37": present}
  - name: never run
    signon: {}
""", trace=records.append)
    assert [r.split()[4] for r in records] == ["0800", "0810", "0200", "0210"]  # the terminals' own trace
    assert not any(PAN in r for r in records)
    assert result.verdict == "failed" and result.steps_run == 2
    (failure,) = result.failures
    assert (failure.step, failure.step_name, failure.key) == (2, "buy", "field 39")
    assert (failure.expected, failure.actual) == ("'51'", "'00'")
    assert failure.message == "field 39: expected '51', got '00' (approved)"
    assert " -> " in result.trace and " 0200 " in result.trace and " 0210 " in result.trace
    assert "[redacted" in result.trace and "Response code" in result.trace
    assert PAN not in json.dumps(result.to_json())


def test_every_unmet_expectation_of_the_step_is_reported_and_a_journal_failure_shows_the_row(tmp_path):
    result = run(tmp_path, SIGN_ON + """\
  - name: buy
    purchase: {card: approve, amount: 1250}
    expect: {"39": "00", "54": present, mti: "0230"}
    capture: {rrn: "37", balance: "54"}
    check:
      journal:
        - where: {rrn: "${rrn}"}
          count: 2
          expect: {status: declined}
        - where: {rrn: "${balance}"}
      terminal: {last_stan: "${balance}", pending_reversal: absent}
""")
    assert len(result.failures) == 5  # the checks using the capture that failed are left out
    messages = [f.message for f in result.failures]
    assert messages[:3] == ["field 54: expected present, got absent", "mti: expected '0230', got '0210'",
                            "capture balance: field 54 of the answer is absent"]
    count, status = messages[3:]
    assert count.startswith("journal[rrn=") and ": expected 2 row(s), got 1: {id: " in count
    assert "expected 'declined', got 'approved' — row 1 of 1: {" in status
    assert "stan: '000002'" in status and "status: 'approved'" in status and "amount: 1250" in status


@pytest.mark.parametrize("dialect", ["cup", "iso87ascii", "iso87binary"])
def test_drop_fault_no_answer_then_the_reversal_is_acknowledged_and_journaled(tmp_path, dialect):
    result = run(tmp_path, SIGN_ON + """\
  - name: answer lost
    purchase: {card: approve, amount: 700}
    fault: {drop: true}
    outcome: no_answer
    reversal: {mti: "0410", "39": "00", "11": echo}
    result: {reversal.acknowledged: true, timed_out: true}
    capture: {lost: "request.11"}
    check:
      journal:
        - where: {stan: "${lost}", mti: "0200"}
          count: 1
          expect: {status: reversed, amount: 700}
      terminal: {pending_reversal: absent}
      batch: {count: 0}
""", extra=f"dialect: {dialect}\n")
    assert result.verdict == "passed", result.to_json()


def test_a_fault_spares_the_advice_sent_ahead_of_the_steps_own_request(tmp_path):
    result = run(tmp_path, SIGN_ON + """\
  - name: offline sale, its advice queued
    offline: {card: approve, amount: 300}
    result: {approved: true, response_code: Y1, queued: true}
    check: {terminal: {queued_advices.0.kind: offline}}
  - name: refund whose answer is lost; the offline advice (also a 0220) goes first and is answered
    refund: {card: approve, amount: 100, rrn: "000000000001"}
    fault: {drop: true}
    outcome: no_answer
    result: {prior_advices.0.kind: offline, prior_advices.0.answered: true, queued: true}
    check: {terminal: {queued_advices.0.kind: refund, queued_advices.1: absent}}
""")
    assert result.verdict == "passed", result.to_json()


LOST_REVERSALS = """rules:
  - {name: first reversal of 6812 lost, when: {mti: "0400", amount: 6812}, drop: true}
  - {name: reversals of 6811 lost, when: {mti: ["0400", "0401"], amount: 6811}, drop: true}
"""
OWING = """\
  - name: answer lost, and the host drops the reversal too
    purchase: {card: approve, amount: 6812}
    fault: {drop: true}
    outcome: no_answer
    result: {reversal.acknowledged: false}
    capture: {owed: "request.11"}
    check: {terminal: {pending_reversal.original_stan: "${owed}"}}
"""
NO_RETRIES = '  pos: {tid: "10000001", timeout: 0.3, reversal_retries: 0}\n'


def test_a_fault_spares_the_owed_reversal_sent_ahead_and_a_reversal_still_owed_holds_the_next_request(tmp_path):
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    (fixtures / "host_rules.yaml").write_text(LOST_REVERSALS)
    result = run(tmp_path, SIGN_ON + OWING + """\
  - name: the owed reversal (0401) goes first, untouched by this step's fault
    purchase: {card: approve, amount: 1000}
    fault: {drop: true}
    outcome: no_answer
    result: {prior_reversal.acknowledged: true, prior_reversal.original_stan: "${owed}", reversal.acknowledged: true}
  - name: a reversal the host never takes
    purchase: {card: approve, amount: 6811}
    fault: {drop: true}
    outcome: no_answer
  - name: holds the next purchase back
    purchase: {card: approve, amount: 1000}
    outcome: not_sent
    result: {sent: false, prior_reversal.acknowledged: false}
""", terminals=NO_RETRIES, fixtures=fixtures)
    assert result.verdict == "passed", result.to_json()

    result = run(tmp_path / "expecting", SIGN_ON + OWING.replace("    result:", '    reversal: {"39": "00"}\n    result:'),
                 terminals=NO_RETRIES, fixtures=fixtures)
    (failure,) = result.failures
    assert (failure.step, failure.key) == (2, "reversal answer")
    assert failure.message.startswith("reversal answer: expected an answer, got none (host 127.0.0.1:")
    assert failure.message.endswith(": no answer within 0.3 s)")
    assert result.trace.count(" 0200 ") == 1 and result.trace.count(" 0400 ") == 1 and "no answer:" in result.trace


def test_delay_fault_shorter_than_the_timeout_is_answered_longer_is_not(tmp_path):
    result = run(tmp_path, SIGN_ON + """\
  - name: late but in time
    balance: {card: approve}
    fault: {delay: 0.1}
    expect: {"39": "00", "54": present}
  - name: too late
    purchase: {card: approve, amount: 900}
    fault: {delay: 0.8}
    outcome: no_answer
    result: {message: {matches: "no answer within 0.4 s"}, reversal.acknowledged: true}
""")
    assert result.verdict == "passed", result.to_json()
    assert result.duration >= 0.5


def test_close_fault_ends_in_no_answer_and_a_reversal(tmp_path):
    result = run(tmp_path, SIGN_ON + """\
  - name: the connection closes instead of the answer
    purchase: {card: approve, amount: 800}
    fault: {close: true}
    expect: {"39": "00"}
""")
    (failure,) = result.failures
    assert failure.key == "outcome" and failure.message.startswith("outcome: expected answered, got no_answer (host ")
    assert "connection closed" in failure.message
    host = result.trace.split()[2]  # the trace's title names the host, as the message does: not the proxy
    assert f"(host {host}: connection closed" in failure.message
    assert f"no answer: host {host}: connection closed" in result.trace
    assert " 0200 " in result.trace and " 0400 " in result.trace and " 0410 " in result.trace


def test_a_field_override_reaches_the_host_maced(tmp_path):
    result = run(tmp_path, SIGN_ON + """\
  - name: field 4 changed after the terminal built the request
    purchase: {card: approve, amount: 1250}
    fields: {"4": "000000000777"}
    expect: {"39": "00", "4": echo}
    capture: {rrn: "37"}
    check:
      journal:
        - where: {rrn: "${rrn}"}
          expect: {amount: 777}
  - name: without a currency the host declines it as a format error
    purchase: {card: approve, amount: 1250}
    fields: {"49": null}
    expect: {"39": "30"}
  - name: a processing code of no transaction kind is still the step's own request
    purchase: {card: approve, amount: 1000, processing_code: "010000"}
    expect: {"39": "12", "3": echo}
""")
    assert result.verdict == "passed", result.to_json()


def test_a_raw_malformed_frame_is_answered_with_the_format_error_code(tmp_path):
    codec = Codec(load_dialect("cup"))
    body = codec.encode(Message("0200", {3: "000000", 4: "000000001250", 11: "000077", 41: "10000001",
                                         42: "898310048160001", 49: "156"}))
    assert body.count(b"156") == 1
    broken = body.replace(b"156", b"\xff\xff\xff").hex()
    result = run(tmp_path, SIGN_ON + f"""\
  - name: field 49 is not text
    raw: "{broken}"
    expect: {{mti: "0210", "39": "30", "11": "000077"}}
  - name: a length header announcing an empty frame ends the connection
    raw_frame: "0000"
    outcome: no_answer
  - name: the terminal's next request goes on a fresh connection
    balance: {{card: approve}}
    expect: {{"39": "00"}}
""")
    assert result.verdict == "passed", result.to_json()


def test_a_request_the_terminal_refuses(tmp_path):
    passed = run(tmp_path, SIGN_ON + """\
  - name: nothing to void
    void: {}
    outcome: refused
    error: {matches: "nothing to void"}
""")
    assert passed.verdict == "passed", passed.to_json()
    failed = run(tmp_path / "again", SIGN_ON + """\
  - name: nothing to void, yet nothing said
    void: {}
""")
    (failure,) = failed.failures
    assert failure.message.startswith("outcome: expected answered or no_answer, got refused (terminal 10000001: nothing")


def test_qr_order_paid_by_a_wallet_over_http(tmp_path):
    result = run(tmp_path, SIGN_ON + """\
  - name: order
    qr_order: {amount: 2000}
    expect: {"39": "00"}
    capture: {order: result.order_no, payload: result.payload}
  - name: alice pays it
    wallet_pay: {wallet: alice, payload: "${payload}"}
    result: {status: paid, response_code: "00", amount: 2000, order_no: "${order}"}
  - name: the terminal asks
    qr_query: {order_no: "${order}"}
    result: {status: paid, approved: true}
    check: {batch: {debit_count: 1, debit_amount: 2000}}
""")
    assert result.verdict == "passed", result.to_json()


class _Offline:
    """A target whose ISO port nobody listens on."""

    label = "offline"
    http = None

    def __init__(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.iso = sock.getsockname()

    def journal_rows(self, where):
        raise TargetError("no journal")


class _NoJournal:
    """A reachable host, but no journal to read and no HTTP API (an external host without --journal, --http)."""

    label = "blind"
    http = None

    def __init__(self, target):
        self.iso = target.iso

    def journal_rows(self, where):
        raise TargetError(f"no journal of {self.label} to check: give --journal (that host's journal file)")


def test_an_unreachable_host_is_the_cases_error_and_nothing_runs(tmp_path):
    scenario = load_scenario(scenario_file(tmp_path, SIGN_ON))
    target = _Offline()
    result = asyncio.run(run_scenario(scenario, target, state_dir=tmp_path / "state"))
    assert result.verdict == "error" and result.steps_run == 0
    assert result.error == f"host 127.0.0.1:{target.iso[1]}: connection refused"


@pytest.mark.parametrize("step, error", [
    ("  - {wallet_pay: {wallet: alice, payload: x}}\n", "target blind has no HTTP API, which wallet_pay needs"),
    ("  - {wait: {seconds: 0}, check: {journal: [{where: {stan: '000001'}}]}}\n", "no journal of blind to check"),
])
def test_what_the_target_lacks_is_the_cases_error(tmp_path, step, error):
    result = run(tmp_path, SIGN_ON + step, wrap=_NoJournal)
    assert result.verdict == "error" and result.error.startswith(error)


def at() -> Where:
    return Where("case.yaml", 1, "steps[0].expect.39")


@pytest.mark.parametrize("kind, value, actual, present, problem", [
    ("equals", "00", "00", True, None),
    ("equals", "00", "51", True, "expected '00', got '51'"),
    ("equals", 1250, "000000001250", True, None),
    ("equals", 1250, 1250, True, None),
    ("equals", "1250", 1250, True, None),
    ("equals", True, "true", True, "expected true, got 'true'"),
    ("equals", 1, True, True, "expected 1, got true"),
    ("equals", None, None, False, None),
    ("present", None, None, False, "expected present, got absent"),
    ("absent", None, "x", True, "expected absent, got 'x'"),
    ("matches", "^[0-9]{6}$", "12345a", True, "expected a match of /^[0-9]{6}$/, got '12345a'"),
    ("matches", "^6228", None, False, "expected a match of /^6228/, got absent"),
    ("one_of", ["00", "${ok}"], "10", True, None),
    ("one_of", ["00", "10"], "51", True, "expected one of '00', '10', got '51'"),
])
def test_matchers(kind, value, actual, present, problem):
    assert check(Matcher(kind, value, at()), actual, present=present, env={"ok": "10"}) == problem


def test_echo_and_dotted_keys():
    echo = Matcher("echo", None, at())
    assert check(echo, "000001", request_value="000001", present=True, env={}) is None
    assert check(echo, "000002", request_value="000001", present=True, env={}) == \
        "expected '000001' (the request's), got '000002'"
    assert check(echo, "x", present=True, env={}) == "expected an echo of a field the request lacks, got 'x'"
    data = {"reversal": {"acknowledged": False}, "list": [{"rrn": "1"}], "none": None}
    assert walk(data, "reversal.acknowledged") == (True, False)
    assert walk(data, "list.0.rrn") == (True, "1")
    assert walk(data, "none") == (False, None) and walk(data, "list.1") == (False, None)
    assert not equal(0, False) and equal(-2000, "-2000")
