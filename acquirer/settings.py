"""The host's own settings, from `host.yaml`: how long pre-authorizations hold, how far completions stretch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from possim.fixtures import FixtureError, fixture_path, load_fixture

SETTINGS_FILE = "host.yaml"


@dataclass(frozen=True)
class HostSettings:
    preauth_hold: timedelta = timedelta(days=7)
    completion_tolerance_percent: int = 15

    @classmethod
    def from_fixtures(cls, folder: str | Path | None = None) -> HostSettings:
        source = fixture_path(SETTINGS_FILE, folder)
        preauth = load_fixture(SETTINGS_FILE, folder).get("preauth") or {}
        if not isinstance(preauth, dict):
            raise FixtureError(f"{source}: `preauth` must be a mapping (hold_days, completion_tolerance_percent)")
        return cls(
            timedelta(days=_whole(preauth, "hold_days", 7, source)),
            _whole(preauth, "completion_tolerance_percent", 15, source),
        )


def _whole(entry: dict[str, Any], key: str, default: int, source: Path) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FixtureError(f"{source}: preauth.{key} must be a whole number ≥ 0, got {value!r}")
    return value
