"""PINs end to end: terminal PIN pad -> host over TCP -> HSM over TCP -> issuer's verdict.

Real parts only: the host serves on a loopback port, the HSM on another (in
its own thread, as `possim hsm serve` would run), and the terminals are the
real POS terminal with its state file. Wrong PINs are counted per card and
business day; nothing is posted unless the PIN verified.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from possim.acquirer.core import build_host
from possim.acquirer.server import HostServer
from possim.fixtures import fixture_path
from possim.hsm_mock.client import TcpHsm
from possim.hsm_mock.device import Hsm
from possim.hsm_mock.server import HsmThread
from possim.terminal.cards import resolve_card
from possim.terminal.link import TcpLink
from possim.terminal.profile import load_profile
from possim.terminal.state import TerminalState
from possim.terminal.terminal import Terminal, TerminalError
from possim.wire.clock import SteppingClock

DIALECTS = ("cup", "iso87ascii", "iso87binary")
START = datetime(2026, 6, 15, 10, 0, 0)
OPENING = {"A-1001": 5_000_000, "A-1002": 1000, "A-1003": 5_000_000, "A-1004": 5_000_000}


@pytest.fixture(scope="module")
def hsm():
    with HsmThread(Hsm()) as thread:
        yield thread.address


class Lab:
    """Host (journal in tmp) on one port, the HSM on another, terminals that persist their state in tmp."""

    def __init__(self, tmp: Path, dialect: str, hsm_address: tuple[str, int] | None, fixtures: Path | None = None):
        self.tmp = tmp
        self.clock = SteppingClock(START, timedelta(milliseconds=5))
        self.core = build_host(
            dialect, tmp / "journal.sqlite", fixtures, clock=self.clock,
            hsm=TcpHsm(*hsm_address) if hsm_address else None,
        )
        self.server = HostServer(self.core)
        self.fixtures = fixtures
        self.terminals: list[Terminal] = []

    async def __aenter__(self) -> Lab:
        self.address = await self.server.start("127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        for terminal in self.terminals:
            await terminal.link.close()
            terminal.state.close()
        await self.server.stop()
        self.core.close()

    async def signed_on(self, tid: str = "10000001", device: str = "", **settings: object) -> Terminal:
        host, port = self.address
        profile = load_profile(
            tid, self.fixtures, dialect=self.core.dialect.name, host=f"{host}:{port}", timeout=5.0, **settings
        )
        terminal = Terminal(profile, TcpLink(host, port, profile.framing),
                            TerminalState(tid, self.tmp / f"{tid}{device}.sqlite"), clock=self.clock)
        self.terminals.append(terminal)
        assert (await terminal.sign_on()).approved
        return terminal

    def balance(self, account: str) -> int:
        return self.core.journal.balance(account)

    def row(self, terminal: Terminal):
        [txn] = [t for t in self.core.journal.transactions() if t.stan == f"{terminal.state.last_stan:06d}"
                 and t.terminal_id == terminal.profile.tid]
        return txn


def buy(terminal: Terminal, amount: int, card: str, pin: str | None):
    return terminal.purchase(amount, resolve_card(card), pin=pin)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_right_pin_approves_wrong_pin_declines_55_and_posts_nothing(dialect, hsm, tmp_path) -> None:
    async def main() -> None:
        async with Lab(tmp_path, dialect, hsm) as lab:
            t1 = await lab.signed_on()
            right = await buy(t1, 2500, "approve", "1234")
            assert right.response_code == "00", right.message
            assert lab.balance("A-1001") == OPENING["A-1001"] - 2500
            wrong = await buy(t1, 2500, "approve", "4321")
            assert wrong.response_code == "55"
            row = lab.row(t1)
            assert (row.decline_step, row.posted_amount) == ("pin_verified", 0)
            assert "wrong PIN 1 of 3" in row.decline_reason
            assert lab.balance("A-1001") == OPENING["A-1001"] - 2500

    asyncio.run(main())


def test_the_ibm_offset_issuer_verifies_its_cards(hsm, tmp_path) -> None:
    async def main() -> None:
        async with Lab(tmp_path, "cup", hsm) as lab:
            t1 = await lab.signed_on()
            assert (await buy(t1, 5000, "over-limit", "1357")).response_code == "00"
            assert (await buy(t1, 5000, "over-limit", "1358")).response_code == "55"
            assert lab.balance("A-1003") == OPENING["A-1003"] - 5000

    asyncio.run(main())


def test_three_wrong_pins_lock_the_card_until_the_next_business_day(hsm, tmp_path) -> None:
    async def main() -> None:
        async with Lab(tmp_path, "cup", hsm) as lab:
            t1 = await lab.signed_on()
            codes = [(await buy(t1, 1000, "approve2", "0000")).response_code for _ in range(3)]
            assert codes == ["55", "55", "75"]
            locked = await buy(t1, 1000, "approve2", "2580")  # the right PIN, too late
            assert locked.response_code == "75"
            assert "PIN tries exceeded" in lab.row(t1).decline_reason
            other = await buy(t1, 1000, "approve", "1234")  # counted per card, not per terminal
            assert other.response_code == "00"

            lab.clock.advance(timedelta(days=1))
            assert (await t1.sign_on()).approved
            assert (await buy(t1, 1000, "approve2", "2580")).response_code == "00"
            assert lab.balance("A-1004") == OPENING["A-1004"] - 1000

    asyncio.run(main())


def test_a_right_pin_clears_the_wrong_ones_before_it(hsm, tmp_path) -> None:
    async def main() -> None:
        async with Lab(tmp_path, "cup", hsm) as lab:
            t1 = await lab.signed_on()
            for _ in range(2):
                assert (await buy(t1, 1000, "approve2", "0000")).response_code == "55"
            assert (await buy(t1, 1000, "approve2", "2580")).response_code == "00"
            assert (await buy(t1, 1000, "approve2", "0000")).response_code == "55"
            assert "wrong PIN 1 of 3" in lab.row(t1).decline_reason

    asyncio.run(main())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_dukpt_pin_pad_sends_a_new_ksn_each_time_and_the_host_derives_its_key(dialect, hsm, tmp_path) -> None:
    async def main() -> None:
        async with Lab(tmp_path, dialect, hsm) as lab:
            t3 = await lab.signed_on("10000003")
            sent: list[str | None] = []
            encode = t3.encode

            def spy(request):
                sent.append(t3.dialect.get_role(request, "ksn"))
                return encode(request)

            t3.encode = spy  # type: ignore[method-assign]
            assert (await buy(t3, 3000, "approve", "1234")).response_code == "00"
            assert (await buy(t3, 3000, "approve", "9999")).response_code == "55"
            assert [k.upper() for k in sent if k] == ["FFFF9876543210E00001", "FFFF9876543210E00002"]
            assert lab.balance("A-1001") == OPENING["A-1001"] - 3000

    asyncio.run(main())


def test_a_terminal_with_stale_keys_is_refused_and_treats_the_answer_as_none(hsm, tmp_path) -> None:
    """The same TID signs on from a second device: the host now holds other working keys. The first
    device's PIN purchase fails its MAC check (nothing posted, PIN never looked at); the host's MAC-error
    answer is MACed under the new key, so the first device cannot trust it and reverses."""

    async def main() -> None:
        async with Lab(tmp_path, "iso87ascii", hsm) as lab:
            old = await lab.signed_on()
            await lab.signed_on(device="-second")
            result = await buy(old, 1000, "approve", "1234")
            assert result.response_code is None and "MAC (field 64) does not verify" in result.message
            assert result.reversal is not None and not result.reversal.acknowledged
            [purchase] = [t for t in lab.core.journal.transactions() if t.mti == "0200"]
            assert (purchase.response_code, purchase.decline_step) == ("63", "mac")
            assert lab.balance("A-1001") == OPENING["A-1001"]

    asyncio.run(main())


def test_an_unreachable_hsm_declines_96_and_the_host_keeps_serving(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, "possim.host")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()

    async def main() -> None:
        async with Lab(tmp_path, "cup", closed) as lab:
            t1 = await lab.signed_on()
            with_pin = await buy(t1, 1000, "approve", "1234")
            assert with_pin.response_code == "96"
            assert "HSM unavailable" in lab.row(t1).decline_reason
            assert "-> 0210 96 (HSM unavailable: HSM at" in caplog.text  # the operator's log says why
            assert (await buy(t1, 1000, "approve", None)).response_code == "00"

    asyncio.run(main())


def test_a_card_without_pin_data_and_an_issuer_without_pin_keys_decline_55(tmp_path) -> None:
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    for name in ("merchants.yaml", "terminals.yaml", "host_rules.yaml"):
        shutil.copy(fixture_path(name), fixtures / name)
    cards = yaml.safe_load(fixture_path("cards.yaml").read_text())
    for card in cards["cards"]:
        if card["name"] == "approve":
            del card["pvv"]
    (fixtures / "cards.yaml").write_text(yaml.safe_dump(cards))
    accounts = yaml.safe_load(fixture_path("accounts.yaml").read_text())
    del accounts["issuers"][1]["pin"]  # Harbour Card Bank: no PIN keys
    (fixtures / "accounts.yaml").write_text(yaml.safe_dump(accounts))

    async def main() -> None:
        async with Lab(tmp_path, "cup", None, fixtures) as lab:
            t1 = await lab.signed_on()
            assert (await buy(t1, 1000, "approve", "1234")).response_code == "55"
            assert "has no visa-pvv PIN data" in lab.row(t1).decline_reason
            assert (await buy(t1, 1000, "over-limit", "1357")).response_code == "55"
            assert "verifies no PINs" in lab.row(t1).decline_reason
            assert (await buy(t1, 1000, "approve2", "2580")).response_code == "00"  # the built-in HSM works

    asyncio.run(main())


def test_a_terminal_refuses_a_pin_it_cannot_encrypt(tmp_path) -> None:
    async def main() -> None:
        async with Lab(tmp_path, "cup", None) as lab:
            host, port = lab.address
            profile = load_profile("10000001", dialect="cup", host=f"{host}:{port}")
            fresh = Terminal(profile, TcpLink(host, port, profile.framing), TerminalState("10000001", tmp_path / "f.sqlite"))
            lab.terminals.append(fresh)
            with pytest.raises(TerminalError, match="no working PIN key: sign on first"):
                await buy(fresh, 1000, "approve", "1234")
            t1 = await lab.signed_on()
            with pytest.raises(TerminalError, match="PIN not accepted: pin: 3 digits given"):
                await buy(t1, 1000, "approve", "123")
            with pytest.raises(TerminalError, match="PIN not accepted: pin: not all decimal digits"):
                await buy(t1, 1000, "approve", "abcd")
            assert t1.state.pending_reversal() is None  # nothing was sent, nothing is owed

    asyncio.run(main())


def test_a_cup_sign_on_with_004_also_downloads_a_track_key_both_ends_keep_under_their_master_keys(tmp_path) -> None:
    from possim.fixtures import load_fixture
    from possim.hsm_mock.key_download import clear_key
    from possim.hsm_mock.kcv import tdes_kcv
    from possim.hsm_mock.lmk import TEK, VariantLmk

    async def main() -> None:
        async with Lab(tmp_path, "cup", None) as lab:
            plain = await lab.signed_on("10000001")
            with_track = await lab.signed_on("10000002", track_key=True)
            codes = [m.fields.get("60") for m in lab.core.journal.messages() if m.mti == "0800"]
            assert [c[8:11] for c in codes] == ["003", "004"]  # 60.3 after 60.1 (2) and 60.2 (6)
            assert lab.core.journal.terminal("10000001").data_key is None
            stored = lab.core.journal.terminal("10000002").data_key
            host_key = VariantLmk.test().decrypt(bytes.fromhex(stored), TEK)
            tmk = bytes.fromhex(next(t["tmk"] for t in load_fixture("terminals.yaml")["terminals"] if t["tid"] == "10000002"))
            def kept(terminal: Terminal) -> str | None:  # read the state file as any SQLite reader would
                with sqlite3.connect(terminal.state.path) as db:
                    return db.execute("SELECT data_key FROM terminal").fetchone()[0]

            terminal_key = clear_key(tmk, bytes.fromhex(kept(with_track)))
            assert terminal_key == host_key and len(host_key) == 16 and tdes_kcv(host_key, 4) != tdes_kcv(tmk, 4)
            assert kept(plain) is None

    asyncio.run(main())


def test_a_track_key_needs_a_dialect_that_can_ask_for_one() -> None:
    from possim.terminal.profile import ProfileError

    with pytest.raises(ProfileError, match="track_key needs a dialect"):
        load_profile("10000001", dialect="iso87ascii", track_key=True)


@pytest.mark.parametrize(("setting", "complaint"), [
    ({"bdk": "0123456789ABCDEFFEDCBA987654321", "ksn": "FFFF9876543210E00000"}, "dukpt bdk is not hex"),
    ({"bdk": "0023456789ABCDEFFEDCBA9876543210", "ksn": "FFFF9876543210E00000"}, "dukpt bdk byte 1 of 16 has even parity"),
    ({"bdk": "0123456789ABCDEFFEDCBA9876543210", "ksn": "FFFF9876543210E0000"}, "dukpt ksn is not hex"),
    ({"bdk": "0123456789ABCDEFFEDCBA9876543210", "ksn": "FFFF9876543210E00003"}, "initial KSN (transaction counter 0)"),
    ("FFFF", "dukpt must be a mapping"),
])
def test_a_bad_dukpt_setting_is_named_without_its_key(setting, complaint) -> None:
    from possim.terminal.profile import ProfileError

    with pytest.raises(ProfileError, match=r"terminal '10000003': .*" + complaint.replace("(", r"\(").replace(")", r"\)")) as caught:
        load_profile("10000003", dukpt=setting)
    assert "0123456789ABCDEF" not in str(caught.value)


@pytest.mark.parametrize(("pin", "complaint"), [
    ({"method": "pvv", "pvk": "4A016BE0D90225207F57730BEFE545E5", "zpk": "2391C22C85016E4F925762455E2A314F"}, "`method` must be one of"),
    ({"method": "visa-pvv", "pvk": "4A016BE0D90225207F57730BEFE545E4", "zpk": "2391C22C85016E4F925762455E2A314F"}, "pvk byte 16 of 16 has even parity"),
    ({"method": "visa-pvv", "pvk": "4A016BE0D90225207F57730BEFE545E5", "zpk": "2391C22C"}, "zpk is 4 bytes"),
    ({"method": "visa-pvv", "pvk": "4A016BE0D90225207F57730BEFE545E5", "zpk": "2391C22C85016E4F925762455E2A314F", "tries": 0}, "`tries` must be"),
])
def test_a_bad_issuer_pin_setting_is_named_with_its_file_and_issuer(pin, complaint, tmp_path) -> None:
    from possim.acquirer.issuer import IssuerStub
    from possim.fixtures import FixtureError

    shutil.copy(fixture_path("cards.yaml"), tmp_path / "cards.yaml")
    accounts = yaml.safe_load(fixture_path("accounts.yaml").read_text())
    accounts["issuers"][0]["pin"] = pin
    (tmp_path / "accounts.yaml").write_text(yaml.safe_dump(accounts))
    with pytest.raises(FixtureError, match="accounts.yaml: issuer City Commercial Bank: pin: .*" + complaint) as caught:
        IssuerStub.from_fixtures(tmp_path)
    assert "4A016BE0" not in str(caught.value)
