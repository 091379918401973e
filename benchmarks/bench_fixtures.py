"""Fixtures for benchmark runs: the built-in ones, but with accounts a long run cannot empty and no scenario
rules, so every request is approved and the figures measure the host's work, not its declines."""

from __future__ import annotations

import shutil
from pathlib import Path

from possim.fixtures import fixture_path
from possim.lab import always_approving


def rich_fixtures(folder: Path) -> Path:
    """Write them under `folder` (once) and return their folder."""
    fixtures = folder / "fixtures"
    if fixtures.is_dir():
        return fixtures
    fixtures.mkdir()
    for name in ("merchants.yaml", "terminals.yaml", "cards.yaml", "host.yaml"):
        shutil.copy(fixture_path(name), fixtures / name)
    return always_approving(fixtures)
