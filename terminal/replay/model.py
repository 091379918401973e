"""A scenario as the loader produces it and the runner consumes it.

Values that may hold `${name}` references are kept as written (str, int,
list, dict) and resolved at run time against the scenario's variables and
its captures so far; the loader has already checked that every name used is
defined by the time its step runs, so resolution cannot fail mid-run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Where:
    """Where something was written: the error messages' file, line and key."""

    file: str
    line: int
    """1-based line in `file`."""
    key: str
    """Dotted path from the document's top: `steps[3].expect.39`."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}"


MATCHER_KINDS = ("equals", "present", "absent", "echo", "matches", "one_of")


@dataclass(frozen=True)
class Matcher:
    """One expectation on one value: equals `value`; present; absent; echo (the request's same field); matches
    the regular expression `value` (searched, anchor it to match whole); one_of the list `value`."""

    kind: str
    value: Any
    at: Where


FAULT_KINDS = ("delay", "drop", "close")


@dataclass(frozen=True)
class Fault:
    """A host-side fault on the step's own request: its answer held `seconds` (delay), never forwarded (drop),
    or the connection closed instead of answering (close). The host still receives and acts on the request."""

    kind: str
    seconds: float = 0.0
    at: Where | None = None


@dataclass(frozen=True)
class JournalCheck:
    """Host journal rows (the `transactions` table) whose columns equal `where` (values may hold references):
    `count` of them (None: at least one), and every one of them meeting `expect`."""

    where: dict[str, Any]
    count: int | None
    expect: dict[str, Matcher]
    at: Where


@dataclass(frozen=True)
class Checks:
    """What is checked after a step's exchange: the host journal, the terminal's state, its open batch totals."""

    journal: tuple[JournalCheck, ...] = ()
    terminal: dict[str, Matcher] = field(default_factory=dict)
    """Dotted keys into the terminal's status (the object `possim pos status --json` prints)."""
    batch: dict[str, Matcher] = field(default_factory=dict)
    """Keys of the open batch: count, debit_count, debit_amount, credit_count, credit_amount."""


ACTIONS = (
    "signon", "purchase", "void", "refund", "preauth", "preauth_void", "completion", "balance", "offline",
    "send_advices", "reverse", "batch_close", "qr_order", "qr_query", "qr_close", "qr_scan", "qr_refund",
    "qr_cancel", "wallet_pay", "fee_query", "fee_payment", "fee_qr", "raw", "raw_frame", "wait",
)
"""What a step can do; exactly one per step (docs/replay.md lists each one's arguments)."""
OUTCOMES = ("answered", "no_answer", "not_sent", "refused")
"""How a step's own request ended: an answer came; none came in time (or the link dropped) after it was sent;
it never left (an owed reversal blocked it); the terminal refused to make it (TerminalError)."""


@dataclass(frozen=True)
class Step:
    index: int
    """1-based position in the scenario."""
    name: str
    terminal: str
    """The alias in the scenario's `terminals`."""
    action: str
    args: dict[str, Any]
    """The action's arguments, unresolved (raw/raw_frame: {"hex": ...}; wait: {"seconds": ...})."""
    fields: dict[int, str | None]
    """Request field overrides applied before the MAC: a value replaces the field, None removes it."""
    fault: Fault | None
    outcome: str | None
    """None: not checked (then an expectation on the answer implies answered)."""
    error: Matcher | None
    """For outcome `refused`: a matcher on the terminal's error text."""
    expect: dict[str, Matcher]
    """On the answer to the step's own request: keys "mti" or a field number ("39")."""
    result: dict[str, Matcher]
    """Dotted keys into the operation's result (TransactionResult / BatchCloseResult / AdviceRun JSON)."""
    reversal: dict[str, Matcher]
    """On the answer to the reversal this step's request caused (0410): "mti" or field numbers."""
    capture: dict[str, str]
    """Variable name → source: a field number of the answer ("37"), "request.N", or "result.KEY" (dotted)."""
    checks: Checks
    at: Where


@dataclass(frozen=True)
class TerminalUse:
    alias: str
    tid: str
    """A terminal of terminals.yaml (the host must know it too)."""
    overrides: dict[str, Any]
    """Profile settings replaced for this scenario: timeout, reversal_retries, pin_pad, track_key."""


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    description: str
    tags: tuple[str, ...]
    dialect: str
    """The file's `dialect`, else the default the loader was given (the runner's --dialect)."""
    terminals: dict[str, TerminalUse]
    variables: dict[str, Any]
    steps: tuple[Step, ...]
    needs: frozenset[str] = frozenset()
    """What the target must offer beyond ISO 8583: "journal" (a journal check), "http" (wallet_pay),
    "finance" (fee steps)."""
