"""What a load run measured: every transaction's latency, its response code, and what went wrong on the way.

Latencies are kept whole (8 bytes each: a million transactions is 8 MB) and
sorted once at the end, so the percentiles are exact rather than read off a
histogram's buckets. In an open-loop run a latency counts from when the
request was due, not when it left: a terminal still busy with the previous
answer delays the next request, and that wait is the host's doing
(coordinated omission, which a closed-loop timer would hide).
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
LIVE_WINDOW_S = 5
"""Seconds of latencies the live p99 looks back over."""


def percentile(ordered: array[float] | list[float], p: float) -> float:
    """The nearest-rank percentile of sorted values (0 when there are none)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(round(p / 100 * len(ordered), 9)))  # 99.9% of 1000 is 999, not 999.0000000000001
    return ordered[rank - 1]


@dataclass(frozen=True)
class Snapshot:
    """The live line: where a run stands now."""

    elapsed: float
    transactions: int
    tps: float
    """Over the last whole second."""
    errors: int
    p99_ms: float
    """Over the last LIVE_WINDOW_S seconds."""


@dataclass
class Recorder:
    latencies: array[float] = field(default_factory=lambda: array("d"))
    """Seconds, every answered transaction (declines included, timeouts not)."""
    kinds: Counter[str] = field(default_factory=Counter)
    approved: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, array[float]] = field(default_factory=dict)
    timeouts: int = 0
    unreadable: int = 0
    link_errors: int = 0
    reversals: int = 0
    reversals_approved: int = 0
    per_second: list[int] = field(default_factory=list)
    """Transactions finished (answered or failed) in each second of the run."""
    errors_per_second: list[int] = field(default_factory=list)
    """Of those, the ones not approved."""
    _window: list[tuple[int, float]] = field(default_factory=list)

    def answered(self, kind: str, code: str, latency: float, at: float) -> None:
        """A transaction answered `latency` seconds after it was due, `at` seconds into the run."""
        self.latencies.append(latency)
        self.by_kind.setdefault(kind, array("d")).append(latency)
        self.kinds[kind] += 1
        self.codes[code] += 1
        second = self._second(at)
        self.per_second[second] += 1
        if code == "00":
            self.approved[kind] += 1
        else:
            self.errors_per_second[second] += 1
        self._window.append((second, latency))

    def failed(self, kind: str, at: float, *, timeout: bool = False, unreadable: bool = False) -> None:
        """A transaction that got no usable answer: a timeout, an unreadable answer, or a link that failed."""
        self.kinds[kind] += 1
        if timeout:
            self.timeouts += 1
        elif unreadable:
            self.unreadable += 1
        else:
            self.link_errors += 1
        second = self._second(at)
        self.per_second[second] += 1
        self.errors_per_second[second] += 1

    def reversed(self, approved: bool) -> None:
        self.reversals += 1
        self.reversals_approved += approved

    @property
    def transactions(self) -> int:
        return sum(self.kinds.values())

    @property
    def errors(self) -> int:
        """Transactions not approved: declines, timeouts, unreadable answers, link failures."""
        return self.transactions - sum(self.approved.values())

    def snapshot(self, elapsed: float) -> Snapshot:
        now = int(elapsed)
        self._window = [(s, v) for s, v in self._window if s > now - LIVE_WINDOW_S]
        recent = sorted(v for _, v in self._window)
        last = self.per_second[now - 1] if 0 < now <= len(self.per_second) else 0
        return Snapshot(elapsed, self.transactions, float(last), self.errors, percentile(recent, 99) * 1000)

    def summary(self, duration: float) -> dict[str, Any]:
        """The figures of a finished run, JSON-ready: times in milliseconds, rates per second."""
        total = self.transactions
        return {
            "transactions": total,
            "approved": sum(self.approved.values()),
            "tps": total / duration if duration > 0 else 0.0,
            "approved_tps": sum(self.approved.values()) / duration if duration > 0 else 0.0,
            "error_rate": self.errors / total if total else 0.0,
            "latency_ms": _latency(self.latencies),
            "kinds": {
                kind: {"count": self.kinds[kind], "approved": self.approved[kind],
                       "latency_ms": _latency(self.by_kind.get(kind, array("d")))}
                for kind in sorted(self.kinds)
            },
            "response_codes": dict(sorted(self.codes.items())),
            "timeouts": self.timeouts,
            "unreadable": self.unreadable,
            "link_errors": self.link_errors,
            "reversals": {"sent": self.reversals, "approved": self.reversals_approved},
            "tps_per_second": list(self.per_second),
            "errors_per_second": list(self.errors_per_second),
        }

    def _second(self, at: float) -> int:
        second = max(0, int(at))
        while len(self.per_second) <= second:
            self.per_second.append(0)
            self.errors_per_second.append(0)
        return second


def _latency(values: array[float]) -> dict[str, float] | None:
    """Percentiles, max and mean in milliseconds; None when nothing was answered (a 0 would read as fast)."""
    if not values:
        return None
    ordered = sorted(values)
    figures = {f"p{p:g}": percentile(ordered, p) * 1000 for p in PERCENTILES}
    figures["max"] = ordered[-1] * 1000
    figures["mean"] = sum(ordered) / len(ordered) * 1000
    return figures
