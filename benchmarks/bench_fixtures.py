"""Fixtures for benchmark runs: the built-in ones, but with accounts a long run cannot empty and no scenario
rules, so every request is approved and the figures measure the host's work, not its declines."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from possim.fixtures import fixture_path, load_fixture


def rich_fixtures(folder: Path) -> Path:
    """Write them under `folder` (once) and return their folder."""
    fixtures = folder / "fixtures"
    if fixtures.is_dir():
        return fixtures
    fixtures.mkdir()
    for name in ("merchants.yaml", "terminals.yaml", "cards.yaml", "host.yaml"):
        shutil.copy(fixture_path(name), fixtures / name)
    (fixtures / "host_rules.yaml").write_text("rules: []\n")
    accounts = load_fixture("accounts.yaml")
    for account in accounts["accounts"]:
        account.pop("per_transaction_limit", None)
        account["balance"] = 10**15
    (fixtures / "accounts.yaml").write_text(yaml.safe_dump(accounts))
    return fixtures
