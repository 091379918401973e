"""Settlement and reconciliation settings, from host.yaml's `settlement:` and `reconciliation:` sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any

from possim.acquirer.settings import SETTINGS_FILE, HostSettings, section, whole
from possim.fixtures import FixtureError, fixture_path, load_fixture

KEY_COLUMNS = ("rrn", "terminal_id", "stan", "merchant_id", "auth_code", "reference")
"""What a clearing-file match key may be made of: fields both a clearing record and a journal row carry."""


@dataclass(frozen=True)
class SettlementSettings:
    cutover_time: time = time(0)
    value_days: int = 1
    acquirer_id: str = "48021000"
    settlement_account: str = "6222020000000000001"


@dataclass(frozen=True)
class ReconSettings:
    match_keys: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"clearing": ("rrn", "terminal_id")})
    tolerance: int = 0
    """Minor units two amounts may differ by and still match."""
    suspense_days: int = 3

    def key(self, kind: str) -> tuple[str, ...]:
        return self.match_keys.get(kind, ("rrn", "terminal_id"))


def load_settings(folder: str | Path | None = None) -> tuple[SettlementSettings, ReconSettings]:
    source = fixture_path(SETTINGS_FILE, folder)
    data = load_fixture(SETTINGS_FILE, folder)
    settle = section(data, "settlement", source)
    recon = section(data, "reconciliation", source)
    keys = recon.get("match_keys", {"clearing": ["rrn", "terminal_id"]})
    if not isinstance(keys, dict):
        raise FixtureError(f"{source}: reconciliation.match_keys must map a file kind to a list of columns")
    return (
        SettlementSettings(
            cutover_time=HostSettings.from_fixtures(folder).cutover_time,
            value_days=whole(settle, "settlement.value_days", 1, source),
            acquirer_id=str(settle.get("acquirer_id", SettlementSettings.acquirer_id)),
            settlement_account=str(settle.get("settlement_account", SettlementSettings.settlement_account)),
        ),
        ReconSettings(
            match_keys={kind: parse_key(columns, f"{source}: reconciliation.match_keys.{kind}")
                        for kind, columns in keys.items()},
            tolerance=whole(recon, "reconciliation.tolerance", 0, source),
            suspense_days=whole(recon, "reconciliation.suspense_days", 3, source),
        ),
    )


def parse_key(columns: Any, where: str) -> tuple[str, ...]:
    """A match key: a list of columns, or "rrn,terminal_id" as typed on a command line."""
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",")]
    if not isinstance(columns, list) or not columns:
        raise FixtureError(f"{where} must be a list of columns ({', '.join(KEY_COLUMNS)})")
    for column in columns:
        if column not in KEY_COLUMNS:
            raise FixtureError(f"{where}: {column!r} is not a key column ({', '.join(KEY_COLUMNS)})")
    return tuple(columns)

