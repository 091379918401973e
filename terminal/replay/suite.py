"""Running a pack: scenarios side by side against their targets, raw frame files after them, one result.

The runner (runner.py) plays one scenario against one target. A pack adds
what only the whole run knows: how many cases run at once, which may not run
together (against one external host, two scenarios driving the same
terminal ID would interleave STANs and batches), where each keeps its
terminal state, what STAN each starts from, and the summary CI reads.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence, Set
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from possim.terminal.state import TerminalState
from possim.wire.clock import Clock, system_clock
from possim.wire.dialect import Dialect

from .model import Scenario
from .raw import RawFrame, RawReport, render as render_raw, replay_raw
from .results import CaseResult
from .runner import run_scenario
from .target import TargetError, TargetSource

STAN_LIMIT = 999_999
Progress = Callable[[CaseResult, int, int], None]
"""Told of each case as it ends: its result, how many have ended, how many there are."""


@dataclass
class RawCase:
    """One file of raw frames replayed against the host (`possim replay FILE.hex`)."""

    path: Path
    report: RawReport
    duration: float = 0.0

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def verdict(self) -> str:
        """passed; failed when an answer differs from the recorded one; error when none could be compared."""
        if self.report.passed:
            return "passed"
        return "failed" if self.report.count("differs") else "error"

    @property
    def message(self) -> str:
        """The first thing wrong, one line (a report's headline); empty when it passed."""
        wrong = next((r for r in self.report.results if not r.passed), None)
        if wrong is None:
            return ""
        head = f"line {wrong.line} {wrong.mti or '????'} STAN {wrong.stan or '??????'}"
        return f"{head}: {wrong.error}" if wrong.error is not None else f"{head}: {wrong.differences[0].message}"

    def details(self) -> str:
        """Every frame's verdict and differing fields, as `possim replay FILE.hex` prints them."""
        return render_raw(self.report)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "file": str(self.path), "verdict": self.verdict,
                "duration_ms": round(self.duration * 1000), **self.report.to_json()}


@dataclass
class SuiteResult:
    """Every case of one `possim replay`, scenarios in the order given, then raw frame files."""

    cases: list[CaseResult]
    started: datetime
    """When the run began (the clock's local time), for JUnit's timestamp."""
    duration: float
    """Seconds, the whole run."""
    raw: list[RawCase] = field(default_factory=list)

    def _verdicts(self) -> list[str]:
        return [c.verdict for c in self.cases] + [r.verdict for r in self.raw]

    @property
    def passed(self) -> int:
        return self._verdicts().count("passed")

    @property
    def failed(self) -> int:
        return self._verdicts().count("failed")

    @property
    def errors(self) -> int:
        return self._verdicts().count("error")

    @property
    def total(self) -> int:
        return len(self.cases) + len(self.raw)

    @property
    def ok(self) -> bool:
        """Every case passed (the exit code's question)."""
        return self.passed == self.total

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, "errors": self.errors, "total": self.total,
                "duration_ms": round(self.duration * 1000), "cases": [c.to_json() for c in self.cases],
                "raw": [r.to_json() for r in self.raw]}

    def render(self) -> str:
        """The human summary: each case that did not pass with its evidence, then the counts."""
        lines: list[str] = []
        for case in self.cases:
            if case.verdict == "error":
                lines.append(f"ERROR {case.scenario.name} — {case.error}")
            elif case.verdict == "failed":
                first = case.failures[0]
                where = f" — step {first.step} {first.step_name!r}" if first.step else ""
                lines.append(f"FAIL {case.scenario.name}{where}")
                lines += [f"  {f.message}" for f in case.failures]
                lines += [f"    {line}" for line in case.trace.splitlines()]
        for raw in self.raw:
            if raw.verdict != "passed":
                lines.append(f"{'FAIL' if raw.verdict == 'failed' else 'ERROR'} {raw.name} — {raw.message}")
                lines += [f"  {line}" for line in raw.details().splitlines()]
        lines.append(f"{self.passed} passed, {self.failed} failed, {self.errors} errors in {self.duration:.1f} s")
        return "\n".join(lines)


def check_needs(scenarios: Sequence[Scenario], *, journal: bool, http: bool) -> None:
    """Refuse, before anything is sent, a scenario asking for what the target lacks: TargetError naming the
    file, line and key of the first step that needs it."""
    for scenario in scenarios:
        for step in scenario.steps:
            if not journal and step.checks.journal:
                raise TargetError(f"{step.checks.journal[0].at}: checks the host journal: give --journal (that "
                                  "host's journal file), or replay against --embedded")
            if not http and step.action == "wallet_pay":
                raise TargetError(f"{step.at}: wallet_pay needs the host's HTTP API: give --http URL, or replay "
                                  "against --embedded")


async def run_suite(scenarios: Sequence[Scenario], target_source: TargetSource, *, parallel: int = 1, workdir: Path,
                    fixtures_dir: Path | None = None, clock: Clock = system_clock, progress: Progress | None = None,
                    external: bool, trace: Callable[[str], None] | None = None) -> SuiteResult:
    """Run `scenarios`, up to `parallel` at once, each against the target `target_source` gives it.

    Each scenario keeps its terminals' state in a folder of its own under
    `workdir`, so every one starts fresh. `external` says the targets are one
    host outside this process: then scenarios sharing a terminal ID never
    overlap, and STANs start from the time of day (docs/replay.md) and, for a
    terminal ID used again in this run, after the last one it used.
    A case that cannot even start (its target fails) is an error, not a crash.
    """
    started, began = clock(), time.perf_counter()
    slots = asyncio.Semaphore(max(1, parallel))
    terminals: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
    last_stan: dict[str, int] = {}
    results: list[CaseResult | None] = [None] * len(scenarios)
    ended = 0

    async def run(index: int, scenario: Scenario) -> None:
        nonlocal ended
        tids = sorted({use.tid for use in scenario.terminals.values()}) if external else []
        state_dir = workdir / f"case-{index + 1:04d}"
        async with AsyncExitStack() as held:
            for tid in tids:  # taken in one order by every case, so no two wait on each other
                await held.enter_async_context(terminals[tid])
            async with slots:
                stan_start = _stan_start(clock(), [last_stan.get(tid, 0) for tid in tids]) if external else 1
                result = await _run_case(scenario, target_source, state_dir, fixtures_dir, stan_start, clock, trace)
                last_stan.update(_last_stans(state_dir, scenario))
        results[index] = result
        ended += 1
        if progress is not None:
            progress(result, ended, len(scenarios))

    await asyncio.gather(*(run(i, s) for i, s in enumerate(scenarios)))
    return SuiteResult([r for r in results if r is not None], started, time.perf_counter() - began)


async def _run_case(scenario: Scenario, target_source: TargetSource, state_dir: Path, fixtures_dir: Path | None,
                    stan_start: int, clock: Clock, trace: Callable[[str], None] | None) -> CaseResult:
    began = time.perf_counter()
    try:
        async with target_source(scenario) as target:
            return await run_scenario(scenario, target, state_dir=state_dir, fixtures_dir=fixtures_dir,
                                      stan_start=stan_start, clock=clock, trace=trace)
    except Exception as exc:  # one case that cannot run must not stop the pack: it is reported as an error
        return CaseResult(scenario, error=f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                          duration=time.perf_counter() - began)


def _stan_start(now: datetime, used: list[int]) -> int:
    """The first STAN for a scenario against an external host: tenths of a second since midnight (a pack run
    again the same day starts past the STANs the first run took, unless it used more than ten a second), and
    past the last STAN this run already took on any of the scenario's terminal IDs."""
    of_day = (now.hour * 3600 + now.minute * 60 + now.second) * 10 + now.microsecond // 100_000
    return max([of_day % STAN_LIMIT, *used]) % STAN_LIMIT + 1


def _last_stans(state_dir: Path, scenario: Scenario) -> dict[str, int]:
    """The last STAN each terminal ID of a finished case took, read from the state its terminals left in
    `state_dir` (the runner keeps one `ALIAS.sqlite` per terminal there)."""
    found: dict[str, int] = {}
    for alias, use in scenario.terminals.items():
        path = state_dir / f"{alias}.sqlite"
        if path.is_file():
            state = TerminalState(use.tid, path)
            try:
                found[use.tid] = max(found.get(use.tid, 0), state.last_stan)
            finally:
                state.close()
    return found


async def run_raw(files: Sequence[tuple[Path, list[RawFrame]]], address: tuple[str, int], dialect: Dialect, *,
                  ignore: Set[int], fixtures_dir: Path | None = None,
                  progress: Callable[[RawCase, int, int], None] | None = None) -> list[RawCase]:
    """Replay each file's frames in turn (files already read, so a bad one stopped the run before anything was
    sent) and diff the answers with the recorded ones."""
    cases = []
    for number, (path, frames) in enumerate(files, 1):
        began = time.perf_counter()
        report = await replay_raw(frames, address, dialect, ignore=ignore, fixtures_dir=fixtures_dir)
        cases.append(RawCase(path, report, duration=time.perf_counter() - began))
        if progress is not None:
            progress(cases[-1], number, len(files))
    return cases
