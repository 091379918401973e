"""A replay pack as a whole: -k selection, scenarios side by side, the external host's terminal IDs kept apart,
the summary and the JUnit file — against real hosts (the lab's embedded one) over real TCP."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from possim.lab import embedded_source, embedded_target, external_target
from possim.terminal.replay.model import Scenario
from possim.terminal.replay.results import CaseResult, Failure
from possim.terminal.replay.scenario import load_scenarios
from possim.terminal.replay.selection import select
from possim.terminal.replay.suite import SuiteResult, _stan_start, check_needs, run_suite
from possim.terminal.replay.junit import write_junit
from possim.terminal.replay.target import Target, TargetError
from possim.wire.clock import SteppingClock

PURCHASE = """\
name: {name}
tags: [{tags}]
terminals: {{pos: "{tid}"}}
steps:
  - name: sign on
    signon: {{}}
    expect: {{"39": "00"}}
  - name: buy
    purchase: {{card: {card}, amount: {amount}}}
    expect: {{mti: "0210", "39": "{code}", "4": echo}}
    check:
      journal:
        - where: {{terminal_id: "{tid}", amount: "{amount}"}}
          count: 1
"""


def write(folder: Path, name: str, *, tags: str = "purchase", tid: str = "10000001", card: str = "approve",
          amount: int = 1250, code: str = "00", text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace(' ', '_')}.yaml"
    path.write_text(text if text is not None else
                    PURCHASE.format(name=name, tags=tags, tid=tid, card=card, amount=amount, code=code),
                    encoding="utf-8")
    return path


def named(name: str, *tags: str) -> Scenario:
    return Scenario(Path(f"{name}.yaml"), name, "", tags, None, {}, {}, ())


# ---- -k ---------------------------------------------------------------------

PACK = [named("Purchase then void", "purchase", "void"), named("qr order paid", "qr"),
        named("fee by card", "fee", "purchase"), named("batch close out of balance", "batch")]


@pytest.mark.parametrize("expr, chosen", [
    ("purchase", ["Purchase then void", "fee by card"]),          # a name substring or a tag, any case
    ("VOID", ["Purchase then void"]),
    ("purchase and not fee", ["Purchase then void"]),
    ("qr or batch", ["qr order paid", "batch close out of balance"]),
    ("not (purchase or qr)", ["batch close out of balance"]),
    ("(fee or qr) and not card", ["qr order paid"]),
    ("not not qr", ["qr order paid"]),
    ("purchase or qr and batch", ["Purchase then void", "fee by card"]),  # and binds tighter than or
    ("balance", ["batch close out of balance"]),
    ("nothing-like-this", []),
    (None, [s.name for s in PACK]),
    ("  ", [s.name for s in PACK]),
])
def test_k_selects_by_name_and_tag(expr: str | None, chosen: list[str]) -> None:
    assert [s.name for s in select(PACK, expr)] == chosen


def test_a_tag_must_be_equal_not_a_part() -> None:
    assert select([named("one", "purchases")], "purchase") == []


@pytest.mark.parametrize("expr, column, what", [
    ("purchase and", 13, "ended"),
    ("(qr or fee", 11, "'(' at column 1 is not closed"),
    ("and qr", 1, "found 'and'"),
    ("qr)", 3, "unexpected ')'"),
    ("qr fee", 4, "unexpected 'fee'"),
    ("()", 2, "found ')'"),
    ("not", 4, "ended"),
])
def test_k_syntax_errors_name_the_column(expr: str, column: int, what: str) -> None:
    with pytest.raises(ValueError) as error:
        select(PACK, expr)
    assert f"column {column}:" in str(error.value) and what in str(error.value)
    assert repr(expr) in str(error.value)


# ---- STANs against an external host -----------------------------------------


def test_stan_starts_from_the_time_of_day_and_after_what_this_run_used() -> None:
    assert _stan_start(datetime(2026, 6, 15, 10, 0, 0, 500_000), []) == 360_006
    assert _stan_start(datetime(2026, 6, 15, 10, 0, 0), [360_500, 12]) == 360_501
    assert _stan_start(datetime(2026, 6, 15, 0, 0, 0), []) == 1
    assert _stan_start(datetime(2026, 6, 15, 23, 59, 59, 900_000), []) == 864_000
    assert _stan_start(datetime(2026, 6, 15, 1, 0, 0), [999_999]) == 1  # wraps as the terminal's STAN does


# ---- the embedded host and external targets -----------------------------------


def test_embedded_target_journal_rows_name_a_bad_column(tmp_path: Path) -> None:
    async def main() -> None:
        async with embedded_target(workdir=tmp_path / "host") as target:
            assert target.label == "embedded" and target.http is not None and target.http.startswith("http://127.0.0.1:")
            assert target.journal_rows({"rrn": "000000000000"}) == []
            with pytest.raises(TargetError, match=r"no column 'colour'; columns: id, business_date, .*rrn"):
                target.journal_rows({"colour": "red"})

    asyncio.run(main())


def test_external_target_reads_the_journal_read_only_or_says_what_to_give(tmp_path: Path) -> None:
    async def main() -> None:
        async with embedded_target(workdir=tmp_path / "host") as host:
            pack = load_scenarios([write(tmp_path / "pack", "buy one")])
            outside = external_target(host.iso, journal=tmp_path / "host" / "journal.sqlite")
            result = await run_suite(pack, lambda s: _same(outside), workdir=tmp_path / "run", external=True)
            assert result.passed == 1, result.render()
            rows = outside.journal_rows({"terminal_id": "10000001", "amount": "1250"})
            assert [(r["status"], r["pan_masked"]) for r in rows] == [("approved", "622848*********0017")]
            with pytest.raises(TargetError, match="no column 'pan'"):
                outside.journal_rows({"pan": "6228480010000000017"})
            blind = external_target(host.iso)
            with pytest.raises(TargetError, match="give --journal"):
                blind.journal_rows({"rrn": "1"})

    asyncio.run(main())
    with pytest.raises(TargetError, match="not a file"):
        external_target(("127.0.0.1", 1), journal=tmp_path / "missing.sqlite")


def test_needs_are_checked_before_anything_is_sent(tmp_path: Path) -> None:
    pack = load_scenarios([write(tmp_path, "buy one")])
    with pytest.raises(TargetError) as error:
        check_needs(pack, journal=False, http=True)
    assert str(error.value).startswith(f"{tmp_path / 'buy_one.yaml'}:13: steps[1].check.journal[0]: ")
    assert "--journal" in str(error.value)
    check_needs(pack, journal=True, http=False)  # no wallet_pay: no HTTP API needed


# ---- running a pack -------------------------------------------------------------


def _pack(folder: Path) -> list[Scenario]:
    write(folder, "approved sale", amount=1250)
    write(folder, "insufficient funds", card="insufficient", amount=2000, code="51")
    write(folder, "wrong expectation", card="insufficient", amount=2000, code="00", tags="broken")
    write(folder, "second terminal", tid="10000002", amount=990)
    return load_scenarios([folder])


def _verdicts(result: SuiteResult) -> list[tuple[str, str, list[str]]]:
    return [(c.scenario.name, c.verdict, [f.message for f in c.failures]) for c in result.cases]


def test_parallel_run_gives_the_serial_verdicts_in_input_order(tmp_path: Path) -> None:
    pack = _pack(tmp_path / "pack")
    seen: list[tuple[str, int, int]] = []

    async def run(parallel: int) -> SuiteResult:
        return await run_suite(pack, embedded_source(workdir=tmp_path / f"hosts-{parallel}"), parallel=parallel,
                               workdir=tmp_path / f"run-{parallel}", external=False,
                               progress=lambda case, n, total: seen.append((case.scenario.name, n, total)))

    serial = asyncio.run(run(1))
    parallel = asyncio.run(run(4))
    assert _verdicts(serial) == _verdicts(parallel)
    assert [c.scenario.name for c in parallel.cases] == [s.name for s in pack]
    assert (serial.passed, serial.failed, serial.errors, serial.total) == (3, 1, 0, 4)
    failure = next(c for c in serial.cases if c.verdict == "failed").failures[0]
    assert failure.step == 2 and failure.key == "field 39"
    assert failure.message == "field 39: expected '00', got '51' (insufficient funds)"
    assert sorted(n for _, n, _ in seen) == [1, 1, 2, 2, 3, 3, 4, 4] and {t for _, _, t in seen} == {4}


@asynccontextmanager
async def _same(target: Target) -> AsyncIterator[Target]:
    yield target


def test_external_runs_never_overlap_scenarios_of_one_terminal_id(tmp_path: Path) -> None:
    wait = """\
name: {name}
terminals: {{pos: "{tid}"}}
steps:
  - signon: {{}}
    expect: {{"39": "00"}}
  - wait: {{seconds: 0.3}}
  - purchase: {{card: approve, amount: 100}}
    expect: {{"39": "00"}}
"""
    folder = tmp_path / "pack"
    for name, tid in (("a1", "10000001"), ("b1", "10000002"), ("a2", "10000001"), ("b2", "10000002")):
        write(folder, name, text=wait.format(name=name, tid=tid))
    pack = load_scenarios([folder])
    spans: dict[str, list[float]] = {}

    async def main() -> SuiteResult:
        async with embedded_target(workdir=tmp_path / "host") as host:
            outside = external_target(host.iso)

            @asynccontextmanager
            async def recording(scenario: Scenario) -> AsyncIterator[Any]:
                spans[scenario.name] = [time.perf_counter()]
                yield outside
                spans[scenario.name].append(time.perf_counter())

            return await run_suite(pack, recording, parallel=4, workdir=tmp_path / "run", external=True)

    result = asyncio.run(main())
    assert result.passed == 4, result.render()

    def overlap(one: str, other: str) -> bool:
        return spans[one][0] < spans[other][1] and spans[other][0] < spans[one][1]

    assert not overlap("a1", "a2") and not overlap("b1", "b2")
    assert overlap("a1", "b1")  # different terminals did run side by side
    journal_stans = [(r["terminal_id"], r["stan"]) for r in
                     external_target(("127.0.0.1", 1), journal=tmp_path / "host" / "journal.sqlite").journal_rows({})]
    assert len(journal_stans) == 4 and len(set(journal_stans)) == 4  # the second run of a TID went on past the first


def test_a_terminal_id_used_again_goes_on_past_the_stans_it_took(tmp_path: Path) -> None:
    """With the clock standing still the time of day gives both scenarios one STAN: the second must start
    after the last STAN the first took, or the host would see its requests again."""
    folder = tmp_path / "pack"
    write(folder, "first", amount=100)
    write(folder, "second", amount=200)
    pack = load_scenarios([folder])
    still = SteppingClock(datetime.combine(datetime.now().date(), datetime.min.time()).replace(hour=10), timedelta(0))

    async def main() -> SuiteResult:
        async with embedded_target(workdir=tmp_path / "host") as host:
            outside = external_target(host.iso, journal=tmp_path / "host" / "journal.sqlite")
            return await run_suite(pack, lambda s: _same(outside), workdir=tmp_path / "run", external=True, clock=still)

    result = asyncio.run(main())
    assert result.passed == 2, result.render()
    rows = external_target(("127.0.0.1", 1), journal=tmp_path / "host" / "journal.sqlite").journal_rows({})
    assert [(r["amount"], r["stan"], r["response_code"]) for r in rows] == [(100, "360002", "00"), (200, "360004", "00")]


def test_a_target_that_fails_to_start_is_an_error_case_not_a_crash(tmp_path: Path) -> None:
    pack = load_scenarios([write(tmp_path / "pack", "buy one")])

    @asynccontextmanager
    async def unreachable(scenario: Scenario) -> AsyncIterator[Any]:
        raise OSError("cannot start: port in use")
        yield

    result = asyncio.run(run_suite(pack, unreachable, workdir=tmp_path / "run", external=False))
    assert (result.errors, result.ok) == (1, False)
    assert result.cases[0].error == "OSError: cannot start: port in use"
    assert result.render().splitlines()[0] == "ERROR buy one — OSError: cannot start: port in use"


# ---- summary and JUnit ------------------------------------------------------------


def _mixed_result(tmp_path: Path) -> SuiteResult:
    pack = load_scenarios([write(tmp_path / "scenarios", "passes"), write(tmp_path / "scenarios", "fails"),
                           write(tmp_path / "scenarios", "errs")])
    failed = Failure(2, "buy", "field 39", "'00'", "'51'", "field 39: expected '00', got '51' (insufficient funds)")
    trace = "-> 0200 stan 000002\n   2 PAN 622848*********0017\n<- 0210 39 '51'\x01"
    return SuiteResult([CaseResult(pack[0], steps_run=2, duration=0.12),
                        CaseResult(pack[1], failures=[failed], steps_run=2, duration=0.2, trace=trace),
                        CaseResult(pack[2], error="host 127.0.0.1:1 unreachable", steps_run=0, duration=0.01)],
                       datetime(2026, 6, 15, 10, 0, 0, 123456), 1.25)


def test_summary_shows_each_failure_with_its_trace_then_the_counts(tmp_path: Path) -> None:
    text = _mixed_result(tmp_path).render()
    assert text.splitlines() == [
        "FAIL fails — step 2 'buy'",
        "  field 39: expected '00', got '51' (insufficient funds)",
        "    -> 0200 stan 000002",
        "       2 PAN 622848*********0017",
        "    <- 0210 39 '51'\x01",
        "ERROR errs — host 127.0.0.1:1 unreachable",
        "1 passed, 1 failed, 1 errors in 1.2 s",
    ]
    data = _mixed_result(tmp_path).to_json()
    assert {k: data[k] for k in ("passed", "failed", "errors", "total", "duration_ms")} == \
        {"passed": 1, "failed": 1, "errors": 1, "total": 3, "duration_ms": 1250}
    assert [c["verdict"] for c in data["cases"]] == ["passed", "failed", "error"]


def test_junit_file_parses_back_with_the_counts_cases_and_evidence(tmp_path: Path) -> None:
    report = tmp_path / "replay.xml"
    write_junit(_mixed_result(tmp_path), report)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # renamed into place
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites" and (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "possim replay"
    assert int(suite.get("tests")) == 3 and int(suite.get("failures")) == 1 and int(suite.get("errors")) == 1
    assert int(suite.get("skipped")) == 0 and float(suite.get("time")) == 1.25
    assert datetime.fromisoformat(suite.get("timestamp")) == datetime(2026, 6, 15, 10, 0, 0)
    assert suite.get("hostname")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["passes", "fails", "errs"]
    assert {c.get("classname") for c in cases.values()} == {"scenarios.passes", "scenarios.fails", "scenarios.errs"}
    assert float(cases["passes"].get("time")) == 0.12
    assert cases["passes"].find("failure") is None and cases["passes"].find("error") is None
    assert cases["passes"].findtext("system-out").splitlines() == ["steps run: 2 of 2", "1. sign on (signon)",
                                                                  "2. buy (purchase)"]
    failure = cases["fails"].find("failure")
    assert failure.get("type") == "ExpectationFailed"
    assert failure.get("message") == "field 39: expected '00', got '51' (insufficient funds)"
    assert failure.text.splitlines()[0] == "step 2 'buy': field 39: expected '00', got '51' (insufficient funds)"
    assert "<- 0210 39 '51'\\x01" in failure.text  # a control byte, shown so the XML stays well-formed
    error = cases["errs"].find("error")
    assert error.get("message") == "host 127.0.0.1:1 unreachable" and cases["errs"].find("failure") is None
    assert cases["errs"].findtext("system-out") == "steps run: 0 of 2"


def test_a_real_run_writes_junit_ci_can_read(tmp_path: Path) -> None:
    pack = [s for s in _pack(tmp_path / "pack") if s.name != "second terminal"]
    result = asyncio.run(run_suite(pack, embedded_source(workdir=tmp_path / "hosts"), workdir=tmp_path / "run",
                                   external=False))
    write_junit(result, tmp_path / "out.xml")
    suite = ET.parse(tmp_path / "out.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    failed = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["wrong expectation"]
    assert "6228480010000000025" not in (tmp_path / "out.xml").read_text(encoding="utf-8")

