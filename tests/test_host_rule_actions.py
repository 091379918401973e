"""Scenario rules acting over TCP: drop an answer, hang up, answer late, force a code; `--rules FILE`;
and host.yaml's pre-authorization settings. The request is journaled and posted whatever the rule does."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from host_support import OPENING, purchase, running_host, sign_on
from possim.fixtures import fixture_path

RULES = """rules:
  - {name: lost answer, when: {amount: 4401}, drop: true}
  - {name: hang up, when: {amount: 4402}, close: true}
  - {name: refuse big BIN 622848, when: {bin: "622848", amount: {min: 90000, max: 99999}}, respond: "61"}
"""


def fixtures(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "fixtures"
    folder.mkdir()
    for name in ("merchants.yaml", "terminals.yaml", "cards.yaml", "accounts.yaml"):
        shutil.copy(fixture_path(name), folder / name)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


def test_dropped_and_hung_up_answers_still_post(tmp_path) -> None:
    with running_host(tmp_path, "cup", fixtures(tmp_path, host_rules=RULES)) as host:
        d = host.dialect
        with host.terminal(timeout=1.0) as pos:
            pos.exchange(sign_on(d, "000001"))
            pos.send(purchase(d, "000002", amount=4401))
            with pytest.raises(socket.timeout):
                pos.receive(timeout=0.5)
            pos.send(purchase(d, "000003", amount=4402))
            assert pos.closed_by_host()
        with host.terminal() as pos:
            assert pos.exchange(purchase(d, "000004", amount=95000))[39] == "61"
            assert pos.exchange(purchase(d, "000005", card="over-limit", amount=9500))[39] == "00"  # BIN 400000
        assert host.balance("A-1001") == OPENING["A-1001"] - 4401 - 4402


def test_host_yaml_sets_the_completion_tolerance(tmp_path) -> None:
    from test_host_transactions import signed_on, txn

    folder = fixtures(tmp_path, host="preauth: {hold_days: 1, completion_tolerance_percent: 0}\n")
    with running_host(tmp_path, "iso87ascii", folder) as host:
        d = host.dialect
        with signed_on(host) as pos:
            auth = pos.exchange(txn(d, "preauth", "000002", amount=1000))
            assert pos.exchange(txn(d, "completion", "000003", amount=1001, rrn=auth[37], auth=auth[38]))[39] == "13"
            assert pos.exchange(txn(d, "completion", "000004", amount=1000, rrn=auth[37], auth=auth[38]))[39] == "00"


def test_a_bad_host_yaml_is_named(tmp_path) -> None:
    from possim.acquirer.core import build_host
    from possim.fixtures import FixtureError

    folder = fixtures(tmp_path, host="preauth: {hold_days: -1}\n")
    with pytest.raises(FixtureError, match=r"host.yaml: preauth.hold_days must be a whole number"):
        build_host("cup", tmp_path / "j.sqlite", folder)
