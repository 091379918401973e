"""The terminal against the real acquirer host over loopback TCP: the two meet only as bytes."""

import asyncio
from pathlib import Path

import pytest

from possim.acquirer.core import build_host
from possim.acquirer.server import HostServer
from possim.terminal.cards import resolve_card
from possim.terminal.link import TcpLink
from possim.terminal.profile import load_profile
from possim.terminal.state import TerminalState
from possim.terminal.terminal import Terminal

OPENING = 5_000_000  # A-1001 in accounts.yaml, behind the `approve` card
LATE = 6801


def rules(folder: Path, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "host_rules.yaml").write_text(text)
    return folder


LATE_PURCHASE = f"rules:\n  - {{name: late purchase, when: {{amount: {LATE}}}, delay: 1.0}}\n"
LATE_REVERSAL = "  - {name: late reversal, when: {mti: '0400'}, delay: 1.0}\n  - {name: late repeat, when: {mti: '0401'}, delay: 1.0}\n"
REFUSED_REVERSAL = "  - {name: no reversals, when: {mti: '0400'}, respond: '96'}\n  - {name: no repeats, when: {mti: '0401'}, respond: '96'}\n"


class Host:
    def __init__(self, dialect: str, db: Path, fixtures: Path | None = None):
        self.core = build_host(dialect, db, fixtures)
        self.server = HostServer(self.core)

    async def __aenter__(self):
        self.address = await self.server.start("127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc):
        await self.server.stop()
        self.core.close()

    def terminal(self, state: Path, tid: str = "10000001", timeout: float = 5.0, retries: int = 1) -> Terminal:
        host, port = self.address
        profile = load_profile(
            tid, dialect=self.core.dialect.name, host=f"{host}:{port}", timeout=timeout, reversal_retries=retries
        )
        return Terminal(profile, TcpLink(host, port, profile.framing), TerminalState(profile.tid, state))

    def balance(self) -> int:
        return self.core.journal.balance("A-1001")


async def done(*terminals: Terminal) -> None:
    for terminal in terminals:
        await terminal.link.close()
        terminal.state.close()


@pytest.mark.parametrize("dialect", ["cup", "iso87ascii", "iso87binary"])
def test_sign_on_then_approved_purchase(tmp_path, dialect):
    async def main():
        async with Host(dialect, tmp_path / "journal.sqlite") as host:
            terminal = host.terminal(tmp_path / "t.sqlite")
            not_yet = await terminal.purchase(1250, resolve_card("approve"))
            assert not_yet.response_code == host.core.dialect.response_code("not_signed_on")
            signed = await terminal.sign_on()
            assert signed.approved and terminal.state.signed_on_date is not None
            result = await terminal.purchase(1250, resolve_card("approve"))
            assert result.approved and result.mti == "0210" and len(result.rrn) == 12 and len(result.auth_code) == 6
            assert host.balance() == OPENING - 1250
            assert [e.amount for e in terminal.state.open_batch()] == [1250]
            await done(terminal)

    asyncio.run(main())


def test_each_test_card_gets_its_decline(tmp_path):
    expected = {
        "insufficient": "51", "expired": "54", "lost": "41", "stolen": "43", "restricted": "57",
        "blocked": "05", "over-limit": "61", "issuer-down": "91", "invalid-pan": "14",
    }

    async def main():
        async with Host("cup", tmp_path / "journal.sqlite") as host:
            terminal = host.terminal(tmp_path / "t.sqlite")
            await terminal.sign_on()
            codes = {name: (await terminal.purchase(12000, resolve_card(name))).response_code for name in expected}
            assert codes == expected
            assert terminal.state.open_batch() == []
            await done(terminal)

    asyncio.run(main())


def test_keyed_entry_where_the_merchant_forbids_it(tmp_path):
    async def main():
        async with Host("cup", tmp_path / "journal.sqlite") as host:
            terminal = host.terminal(tmp_path / "t.sqlite", tid="10000002")
            await terminal.sign_on()
            assert (await terminal.purchase(100, resolve_card("approve"), manual=True)).response_code == "58"
            assert (await terminal.purchase(100, resolve_card("approve"))).approved
            await done(terminal)

    asyncio.run(main())


@pytest.mark.parametrize("dialect", ["cup", "iso87ascii"])
def test_late_answer_is_reversed_and_the_funds_come_back(tmp_path, dialect):
    async def main():
        fixtures = rules(tmp_path / "fixtures", LATE_PURCHASE)
        async with Host(dialect, tmp_path / "journal.sqlite", fixtures) as host:
            terminal = host.terminal(tmp_path / "t.sqlite", timeout=0.5)
            await terminal.sign_on()
            result = await terminal.purchase(LATE, resolve_card("approve"))
            assert result.timed_out and not result.approved
            assert result.reversal.acknowledged and result.reversal.response_code == "00"
            assert host.balance() == OPENING
            (txn,) = host.core.journal.transactions()
            assert txn.status == "reversed" and txn.amount == LATE
            assert terminal.state.pending_reversal() is None and terminal.state.open_batch() == []
            await done(terminal)

    asyncio.run(main())


def test_reversal_answered_too_late_is_repeated_and_restores_funds_once(tmp_path):
    journal, state = tmp_path / "journal.sqlite", tmp_path / "t.sqlite"

    async def host_answering_reversals_too_late():
        fixtures = rules(tmp_path / "fixtures", LATE_PURCHASE + LATE_REVERSAL)
        async with Host("cup", journal, fixtures) as host:
            terminal = host.terminal(state, timeout=0.5, retries=1)
            await terminal.sign_on()
            result = await terminal.purchase(LATE, resolve_card("approve"))
            assert result.timed_out and not result.reversal.acknowledged
            assert (result.reversal.attempts, result.reversal.mti) == (2, "0401")
            assert terminal.state.pending_reversal() is not None
            assert host.balance() == OPENING  # the host took the reversal; only its answer was late
            await done(terminal)

    async def host_back_to_normal():
        async with Host("cup", journal) as host:
            terminal = host.terminal(state)
            result = await terminal.purchase(300, resolve_card("approve"))
            assert result.prior_reversal.acknowledged and result.prior_reversal.mti == "0401"
            assert result.approved
            assert host.balance() == OPENING - 300
            assert terminal.state.pending_reversal() is None
            await done(terminal)

    asyncio.run(host_answering_reversals_too_late())
    asyncio.run(host_back_to_normal())


def test_refused_reversal_stays_owed_until_a_host_takes_it(tmp_path):
    journal, state = tmp_path / "journal.sqlite", tmp_path / "t.sqlite"

    async def host_refusing_reversals():
        fixtures = rules(tmp_path / "fixtures", LATE_PURCHASE + REFUSED_REVERSAL)
        async with Host("iso87ascii", journal, fixtures) as host:
            terminal = host.terminal(state, timeout=0.5)
            await terminal.sign_on()
            result = await terminal.purchase(LATE, resolve_card("approve"))
            assert result.timed_out and result.reversal.response_code == "96"
            blocked = await terminal.purchase(300, resolve_card("approve"))
            assert not blocked.sent and blocked.prior_reversal.response_code == "96"
            assert host.balance() == OPENING - LATE
            await done(terminal)

    async def host_back_to_normal():
        async with Host("iso87ascii", journal) as host:
            terminal = host.terminal(state)
            result = await terminal.reverse()
            assert result.approved and result.request_mti == "0401" and result.amount == LATE
            assert host.balance() == OPENING
            assert terminal.state.pending_reversal() is None
            await done(terminal)

    asyncio.run(host_refusing_reversals())
    asyncio.run(host_back_to_normal())


def test_merchant_reversal_of_the_last_purchase_restores_funds(tmp_path):
    async def main():
        async with Host("iso87ascii", tmp_path / "journal.sqlite") as host:
            terminal = host.terminal(tmp_path / "t.sqlite")
            await terminal.sign_on()
            await terminal.purchase(1000, resolve_card("approve"))
            await terminal.purchase(2500, resolve_card("approve"))
            assert host.balance() == OPENING - 3500
            result = await terminal.reverse()
            assert result.approved and result.amount == 2500
            assert host.balance() == OPENING - 1000
            assert [e.amount for e in terminal.state.open_batch()] == [1000]
            await done(terminal)

    asyncio.run(main())
