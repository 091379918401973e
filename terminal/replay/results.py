"""What running a scenario reports: shared by the runner, the suite, the JUnit writer and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .model import Scenario


@dataclass(frozen=True)
class Failure:
    """One expectation a step did not meet."""

    step: int
    """1-based step index; 0 for the scenario as a whole."""
    step_name: str
    key: str
    """What was checked: "field 39", "outcome", "result.approved", "journal[rrn=…].status", "batch.debit_count"."""
    expected: str
    actual: str
    message: str
    """One readable line: `field 39: expected '00', got '51' (insufficient funds)`."""

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "step_name": self.step_name, "key": self.key, "expected": self.expected,
                "actual": self.actual, "message": self.message}


@dataclass
class CaseResult:
    """One scenario's run. `error` is set when it could not run to a verdict (host unreachable, target lacking
    what the scenario needs); then it is neither passed nor failed but an error."""

    scenario: Scenario
    failures: list[Failure] = field(default_factory=list)
    error: str | None = None
    steps_run: int = 0
    duration: float = 0.0
    """Seconds."""
    trace: str = ""
    """The redacted trace of the exchange that failed (request and answer), empty when it passed."""

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures

    @property
    def verdict(self) -> str:
        return "error" if self.error is not None else ("failed" if self.failures else "passed")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.scenario.name, "file": str(self.scenario.path), "verdict": self.verdict,
                "steps": len(self.scenario.steps), "steps_run": self.steps_run,
                "duration_ms": round(self.duration * 1000), "error": self.error,
                "failures": [f.to_json() for f in self.failures], "trace": self.trace}
