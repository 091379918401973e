"""The regression pack (fixtures/scenarios/) against the embedded host: one case per scenario, each on a fresh
lab host over loopback TCP, so the pack itself is tested; and what keeps the pack whole — every decline code
the host produces is expected somewhere, every file starts with a sign-on and is listed in the pack's README,
and a changed expectation makes a run fail with a readable line."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from possim.lab import embedded_source
from possim.terminal.replay.model import Scenario
from possim.terminal.replay.results import CaseResult
from possim.terminal.replay.scenario import load_scenario, load_scenarios
from possim.terminal.replay.suite import run_suite

PACK = Path(__file__).resolve().parent.parent / "fixtures" / "scenarios"
SCENARIOS = load_scenarios([PACK])

HOST_CODES = {
    "00", "05", "09", "12", "13", "14", "15", "25", "30", "41", "43", "51", "54", "55", "57", "58", "61", "62",
    "63", "75", "77", "80", "91", "94", "95", "96", "97", "A0", "N1", "N2", "N3",
}
"""Response codes the host produces (docs/messages.md, docs/qr.md, docs/fees.md) that a scenario can reach; N4
needs a finance-system fault, which no step can cause."""


def run_pack(scenarios: list[Scenario], tmp_path: Path) -> list[CaseResult]:
    result = asyncio.run(run_suite(scenarios, embedded_source(workdir=tmp_path / "hosts"), workdir=tmp_path / "run",
                                   external=False))
    return result.cases


def report(case: CaseResult) -> str:
    lines = [f"{case.verdict}: {case.scenario.name} ({case.scenario.path.name})"]
    if case.error is not None:
        lines.append(f"  error: {case.error}")
    lines += [f"  step {f.step} {f.step_name!r}: {f.message}" for f in case.failures]
    return "\n".join(lines + ([case.trace] if case.trace else []))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.path.stem for s in SCENARIOS])
def test_pack_scenario_passes_against_the_embedded_host(scenario: Scenario, tmp_path: Path) -> None:
    (case,) = run_pack([scenario], tmp_path)
    assert case.passed, report(case)
    assert case.steps_run == len(scenario.steps)


def test_the_pack_expects_every_code_the_host_produces() -> None:
    expected = set()
    for scenario in SCENARIOS:
        for step in scenario.steps:
            for matcher in (step.expect.get("39"), step.result.get("response_code")):
                if matcher is not None and matcher.kind == "equals":
                    expected.add(str(matcher.value))
    assert HOST_CODES - expected == set(), "response codes no scenario of the pack expects"


def test_every_scenario_signs_on_first_and_is_in_the_readme() -> None:
    readme = (PACK / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| ([A-Za-z0-9-]+\.yaml) \|", readme, re.M))
    files = {p.name for p in PACK.glob("*.yaml")}
    assert listed == files, f"README table lacks {sorted(files - listed)}, names missing {sorted(listed - files)}"
    assert [s.path.name for s in SCENARIOS if s.steps[0].action != "signon"] == []
    assert all(s.tags and 2 <= len(s.steps) <= 12 for s in SCENARIOS)


def test_a_changed_expectation_fails_with_a_readable_line(tmp_path: Path) -> None:
    text = (PACK / "card-purchase-swipe.yaml").read_text(encoding="utf-8")
    changed = tmp_path / "changed.yaml"
    changed.write_text(text.replace('      "39": "00"\n', '      "39": "51"\n', 1), encoding="utf-8")
    (case,) = run_pack([load_scenario(changed)], tmp_path)
    assert case.verdict == "failed"
    (failure,) = case.failures
    assert (failure.step, failure.step_name) == (2, "buy 12.50, swiped")
    assert failure.message == "field 39: expected '51', got '00' (approved)"
    assert "0200" in case.trace and "6228480010000000017" not in case.trace


def test_a_fee_qr_order_of_the_wrong_amount_says_why(tmp_path: Path) -> None:
    scenario = tmp_path / "fee-qr-wrong-amount.yaml"
    scenario.write_text(
        "steps:\n"
        "  - signon: {}\n"
        "  - fee_qr: {pay_code: \"31010156080501553255\", amount: 10000}\n"
        "    expect: {\"39\": \"13\"}\n"
        "    result: {message: {matches: \"amount due\"}}\n", encoding="utf-8")
    (case,) = run_pack([load_scenario(scenario)], tmp_path)
    assert case.passed, report(case)
