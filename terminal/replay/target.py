"""What a scenario runs against: a host's addresses and, when the caller can reach it, its journal.

The runner sees a host only through this protocol. `possim replay --embedded`
hands it one fresh in-process host per scenario (lab.py); `--host ADDR`
hands it an external one, with a journal only if `--journal` names the
host's file.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Callable, Protocol

from .model import Scenario


class TargetError(Exception):
    """The target cannot do what a scenario asks of it (no journal, no HTTP API); names what is missing."""


class Target(Protocol):
    label: str
    """For reports: "embedded" or "HOST:PORT"."""
    iso: tuple[str, int]
    """Where terminals send ISO 8583 over TCP."""
    http: str | None
    """Base URL of the host's HTTP API (wallet payments), None when there is none."""

    def journal_rows(self, where: dict[str, str]) -> list[dict[str, Any]]:
        """Rows of the host journal's transactions whose columns equal `where`, oldest first, as column → value.
        Raises TargetError when this target has no journal to read."""
        ...


TargetSource = Callable[[Scenario], AbstractAsyncContextManager[Target]]
"""Gives each scenario the target it runs against, for the scenario's duration."""
