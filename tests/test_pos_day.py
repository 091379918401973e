"""Our terminal against our host over TCP, in every built-in dialect: every transaction kind, advices,
and batch close balanced and out of balance — and afterwards the host's journal and the terminal's batch
agree (docs/transactions.md)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from possim.acquirer.core import build_host
from possim.acquirer.server import HostServer
from possim.terminal.cards import resolve_card
from possim.terminal.link import TcpLink
from possim.terminal.profile import load_profile
from possim.terminal.state import TerminalState
from possim.terminal.terminal import Terminal
from possim.wire.clock import SteppingClock

DIALECTS = ("cup", "iso87ascii", "iso87binary")
OPENING = 5_000_000  # A-1001, behind `approve`


class Day:
    def __init__(self, tmp: Path, dialect: str):
        self.tmp, self.dialect = tmp, dialect
        self.clock = SteppingClock(datetime(2026, 6, 15, 9, 0), timedelta(milliseconds=5))
        self.core = build_host(dialect, tmp / "journal.sqlite", clock=self.clock)
        self.server = HostServer(self.core)
        self.terminals: list[Terminal] = []

    async def __aenter__(self) -> Day:
        self.address = await self.server.start("127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        for t in self.terminals:
            await t.link.close()
            t.state.close()
        await self.server.stop()
        self.core.close()

    async def terminal(self, tid: str = "10000001") -> Terminal:
        host, port = self.address
        profile = load_profile(tid, dialect=self.dialect, host=f"{host}:{port}", timeout=3.0, reversal_retries=1)
        terminal = Terminal(profile, TcpLink(host, port, profile.framing), TerminalState(tid, self.tmp / f"{tid}.sqlite"),
                            clock=self.clock)
        self.terminals.append(terminal)
        assert (await terminal.sign_on()).approved
        return terminal

    def balance(self, account: str = "A-1001") -> int:
        return self.core.journal.balance(account)


def card(name: str = "approve"):
    return resolve_card(name)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_kind_then_a_balanced_close(dialect, tmp_path) -> None:
    async def main() -> None:
        async with Day(tmp_path, dialect) as day:
            t = await day.terminal()
            results = {
                "chip": await t.purchase(1000, card(), entry="chip"),
                "contactless": await t.purchase(2000, card(), entry="contactless"),
                "keyed": await t.purchase(3000, card(), entry="manual"),
            }
            results["void"] = await t.void(results["keyed"].stan)
            results["refund"] = await t.refund(500, card(), results["chip"].rrn)
            hold = await t.preauth(8000, card())
            results["preauth"] = hold
            results["completion"] = await t.completion(8500, card(), hold.rrn, hold.auth_code)
            cancel = await t.preauth(4000, card())
            results["preauth_void"] = await t.preauth_void(cancel.rrn, cancel.auth_code, 4000, card())
            results["balance"] = await t.balance(card())
            results["offline"] = await t.offline(700, card())
            assert {k: r.response_code for k, r in results.items()} == {
                "chip": "00", "contactless": "00", "keyed": "00", "void": "00", "refund": "00", "preauth": "00",
                "completion": "00", "preauth_void": "00", "balance": "00", "offline": "Y1",
            }
            assert results["balance"].balance == OPENING - 1000 - 2000 + 500 - 8500  # the completion took 85.00
            advices = await t.send_advices()
            assert advices.remaining == 0 and [a.response_code for a in advices.advices] == ["00"]
            # taken: 10.00 + 20.00 + 85.00 + 7.00, given back: 5.00 (the keyed 30.00 was voided)
            assert day.balance() == OPENING - 1000 - 2000 - 8500 - 700 + 500

            closed = await t.batch_close()
            assert closed.closed and closed.balanced, closed.message
            assert closed.totals.combined.debit_count == 5  # chip, contactless, keyed, completion, offline
            assert closed.totals.combined.credit_count == 2  # void, refund
            session = day.core.journal.terminal(t.profile.tid)
            assert session.batch_number == "000002" and t.state.batch_number == 2
            host_batch = day.core.journal.closed_batch(t.profile.tid, "000001")
            assert host_batch.balanced and host_batch.terminal_totals == host_batch.host_totals
            if dialect == "cup":  # cup uploads even when balanced
                assert len(day.core.journal.uploads(t.profile.tid, "000001")) == 7

            after = await t.purchase(1200, card())
            assert after.approved
            assert day.core.journal.transaction(t.profile.tid, after.stan, "0615").batch_number == "000002"

    asyncio.run(main())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_sale_the_terminal_never_recorded_puts_the_batch_out_of_balance_and_the_upload_follows(dialect, tmp_path) -> None:
    """The terminal's state file is replaced mid-batch (a swapped terminal): the host has a sale its batch
    lacks. The close is out of balance, every record the terminal has goes up, and both ends move on."""

    async def main() -> None:
        async with Day(tmp_path, dialect) as day:
            first = await day.terminal()
            assert (await first.purchase(4100, card())).approved
            await first.link.close()
            first.state.close()
            day.terminals.remove(first)
            (tmp_path / "10000001.sqlite").rename(tmp_path / "lost.sqlite")
            swapped = await day.terminal()
            swapped.state.mark_signed_on(day.clock().date(), 1)
            for _ in range(2):  # the new state restarts STANs: skip past the ones the host has seen
                swapped.state.next_stan()
            assert (await swapped.purchase(1500, card())).approved
            closed = await swapped.batch_close()
            assert closed.closed and closed.balanced is False, closed.message
            assert closed.uploaded == closed.upload_total == 1
            host_batch = day.core.journal.closed_batch("10000001", "000001")
            assert not host_batch.balanced
            uploads = day.core.journal.uploads("10000001", "000001")
            assert [u.amount for u in uploads] == [1500]
            assert (await swapped.purchase(900, card())).approved  # the next batch is open at both ends

    asyncio.run(main())


def test_closing_twice_is_refused_and_changes_nothing(tmp_path) -> None:
    async def main() -> None:
        async with Day(tmp_path, "cup") as day:
            t = await day.terminal()
            await t.purchase(1000, card())
            assert (await t.batch_close()).balanced
            t.state._db.execute("UPDATE terminal SET batch_number = 1")  # a terminal restored from an old backup
            again = await t.batch_close()
            assert again.already_closed and again.response_code == "80"
            assert day.core.journal.terminal("10000001").batch_number == "000002"

    asyncio.run(main())
