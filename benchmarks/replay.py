"""What replay costs: the regression pack's wall time, and the runner's overhead on each step.

    python benchmarks/replay.py [--sales N] [--rounds R] [--json]

1. The pack (fixtures/scenarios) loaded and run as `possim replay --embedded`
   runs it — every scenario on a fresh host of its own — serially, then 2
   and 4 at a time: cases and steps per second, and the part of a case
   spent starting and stopping its host (timed alone, R rounds).
2. The runner's overhead per step: N purchases made by a scenario (each
   step with expectations on five fields, a capture and a batch check),
   against the same N purchases made by a bare Terminal on another fresh
   host — best of R rounds each, as a ratio.

Every scenario must pass and every purchase be approved, or the run stops:
a figure of a broken run measures nothing. Figures, not a verdict;
progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from possim.fixtures import scenario_pack
from possim.lab import embedded_source, embedded_target
from possim.terminal import TcpLink, Terminal, TerminalState, load_profile, resolve_card
from possim.terminal.replay.runner import run_scenario
from possim.terminal.replay.scenario import load_scenario, load_scenarios
from possim.terminal.replay.suite import run_suite

from bench_fixtures import rich_fixtures


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def pack_runs(work: Path, parallel: int) -> dict[str, float]:
    began = time.perf_counter()
    scenarios = load_scenarios([scenario_pack()])
    loaded = time.perf_counter() - began
    result = await run_suite(scenarios, embedded_source(workdir=work / f"hosts-{parallel}"), parallel=parallel,
                             workdir=work / f"cases-{parallel}", external=False)
    if not result.ok:
        bad = [f"{c.scenario.name}: {c.error or c.failures[0].message}" for c in result.cases if not c.passed]
        raise SystemExit(f"the pack failed with --parallel {parallel}: {bad[:3]}")
    steps = sum(len(c.scenario.steps) for c in result.cases)
    return {"parallel": parallel, "cases": len(result.cases), "steps": steps, "load_s": loaded,
            "run_s": result.duration, "cases_per_s": len(result.cases) / result.duration,
            "steps_per_s": steps / result.duration}


async def host_start_stop(work: Path, rounds: int) -> float:
    best = float("inf")
    for n in range(rounds):
        began = time.perf_counter()
        async with embedded_target(workdir=work / f"start-{n}"):
            pass
        best = min(best, time.perf_counter() - began)
    return best


def sales_scenario(path: Path, sales: int) -> Path:
    steps = ["steps:", "  - signon: {}", "    expect: {\"39\": \"00\"}"]
    for n in range(1, sales + 1):
        steps += [f"  - purchase: {{card: approve, amount: {1000 + n}}}",
                  "    expect: {mti: \"0210\", \"39\": \"00\", \"4\": echo, \"37\": {matches: \"^[0-9]{12}$\"}, \"38\": present}",
                  f"    capture: {{rrn{n}: \"37\"}}",
                  f"    check: {{batch: {{debit_count: {n}}}}}"]
    path.write_text("\n".join(steps) + "\n", encoding="utf-8")
    return path


async def through_runner(work: Path, fixtures: Path, scenario_path: Path, sales: int, rounds: int) -> float:
    scenario = load_scenario(scenario_path, fixtures_dir=fixtures)
    best = float("inf")
    for n in range(rounds):
        async with embedded_target(workdir=work / f"runner-host-{n}", fixtures_dir=fixtures) as target:
            began = time.perf_counter()
            case = await run_scenario(scenario, target, state_dir=work / f"runner-state-{n}", fixtures_dir=fixtures)
            took = time.perf_counter() - began
        if not case.passed:
            raise SystemExit(f"the sales scenario failed: {case.error or case.failures[0].message}")
        best = min(best, took)
    return best / (sales + 1)


async def bare_terminal(work: Path, fixtures: Path, sales: int, rounds: int) -> float:
    best = float("inf")
    card = resolve_card("approve", fixtures)
    for n in range(rounds):
        async with embedded_target(workdir=work / f"bare-host-{n}", fixtures_dir=fixtures) as target:
            profile = load_profile("10000001", fixtures, host=f"{target.iso[0]}:{target.iso[1]}")
            terminal = Terminal(profile, TcpLink(*target.iso, profile.framing),
                                TerminalState("10000001", work / f"bare-state-{n}.sqlite"))
            began = time.perf_counter()
            results = [await terminal.sign_on()]
            for amount in range(1001, 1001 + sales):
                results.append(await terminal.purchase(amount, card))
            took = time.perf_counter() - began
            await terminal.link.close()
            terminal.state.close()
        if any(r.response_code != "00" for r in results):
            raise SystemExit("a bare terminal's purchase was not approved")
        best = min(best, took)
    return best / (sales + 1)


async def main(sales: int, rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        fixtures = rich_fixtures(work)
        pack = []
        for parallel in (1, 2, 4):
            log(f"the pack, {parallel} at a time …")
            pack.append(await pack_runs(work, parallel))
        start = await host_start_stop(work, rounds)
        log(f"{sales} purchases through the runner and through a bare terminal, best of {rounds} …")
        scenario = sales_scenario(work / "sales.yaml", sales)
        runner = await through_runner(work, fixtures, scenario, sales, rounds)
        bare = await bare_terminal(work, fixtures, sales, rounds)
    return {"pack": pack, "host_start_stop_ms": start * 1000,
            "step_ms": {"runner": runner * 1000, "bare_terminal": bare * 1000, "ratio": runner / bare},
            "sales": sales, "rounds": rounds}


def render(report: dict[str, object]) -> str:
    lines = ["the regression pack, every scenario on a fresh embedded host:"]
    for run in report["pack"]:  # type: ignore[union-attr]
        lines.append(f"  --parallel {run['parallel']}: {run['cases']} cases, {run['steps']} steps in {run['run_s']:.1f} s"
                     f" ({run['cases_per_s']:.1f} cases/s, {run['steps_per_s']:.0f} steps/s; loading {run['load_s']:.2f} s)")
    lines.append(f"  one embedded host started and stopped: {report['host_start_stop_ms']:.0f} ms (best)")
    step = report["step_ms"]
    lines.append(f"a purchase step through the runner: {step['runner']:.2f} ms, by a bare terminal "  # type: ignore[index]
                 f"{step['bare_terminal']:.2f} ms: {step['ratio']:.2f}x")  # type: ignore[index]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    figures = asyncio.run(main(options.sales, options.rounds))
    print(json.dumps(figures) if options.json else render(figures))
