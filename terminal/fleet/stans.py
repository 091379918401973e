"""Where each fleet terminal's STAN stopped, per host, so the next run against that host carries on from there.

A host keys a transaction by terminal, STAN and date, and answers a request
it has seen again (same key, same amount and card) with the answer it gave
the first time: a retransmission. A second load run that started its STANs
where the first one did would be told "approved" without anything being
approved again, and the report would count it. A real terminal never
reuses a STAN because it remembers the last one; a fleet does the same
here, in one small JSON file (by default in possim's state folder).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import platformdirs

from possim.wire.atomic import atomic_text

from .protocol import FleetTerminal


def default_book() -> Path:
    return Path(platformdirs.user_state_dir("possim")) / "fleet-stans.json"


class StanBookError(ValueError):
    """A STAN book that cannot be read; the message names the file."""


class StanBook:
    def __init__(self, path: Path):
        self.path = path
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError) as exc:
            raise StanBookError(f"STAN book {path}: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise StanBookError(f"STAN book {path}: expected {{host: {{terminal ID: last STAN}}}}")
        self._hosts: dict[str, dict[str, int]] = data

    def carry_on(self, host: str, fleet: Iterable[FleetTerminal]) -> int:
        """Start every terminal this book knows for `host` after its last STAN; how many it knew."""
        known = self._hosts.get(host, {})
        count = 0
        for terminal in fleet:
            last = known.get(terminal.tid)
            if isinstance(last, int) and 0 <= last <= 999_999:
                terminal.stan = last
                count += 1
        return count

    def remember(self, host: str, fleet: Iterable[FleetTerminal]) -> None:
        """Record where the fleet stopped, written to a temporary name and renamed into place."""
        self._hosts.setdefault(host, {}).update({terminal.tid: terminal.stan for terminal in fleet})
        with atomic_text(self.path) as out:
            json.dump(self._hosts, out, indent=1, sort_keys=True)
