"""Shared pieces of the fee-collection tests (no tests here): the three parties of a government fee payment,
each with books of its own in tmp_path, and readers of what each one recorded.

- the finance bureau (acquirer/finance) on its own thread, over its own SQLite file, with the sample notices
  of fixtures/finance.yaml; it can be stopped and started again on the same file and port, as a real one
  restarts;
- the acquirer host (HostServer) on the test's event loop, over its own journal file;
- real Terminals, talking to the host over loopback TCP.

The closed loop (docs/fees.md) says every fee payment ends paid and confirmed everywhere or paid nowhere;
`paid_everywhere` and `paid_nowhere` check that from all three sets of books, not from any one party's word.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from possim.acquirer.core import HostCore, build_host
from possim.acquirer.fee_desk import finance_key
from possim.acquirer.finance.bureau import FinanceBureau, open_bureau
from possim.acquirer.finance.notices import make_pay_code
from possim.acquirer.finance.server import FinanceThread
from possim.acquirer.journal import FeePayment, Transaction
from possim.acquirer.server import HostServer
from possim.acquirer.settings import FeeSettings
from possim.terminal.link import TcpLink
from possim.terminal.profile import load_profile
from possim.terminal.results import TransactionResult
from possim.terminal.state import TerminalState
from possim.terminal.terminal import Terminal

# Sample notices of fixtures/finance.yaml (region 310101, 20 digits, Luhn digit last).
FINE = "31010157462740291971"
"""200.00 to agency 310101001, unpaid, due 2030-12-31, one item."""
LICENCE = "31010156080501553255"
"""110.00 to agency 310101002 in two items, unpaid, due 2030-06-30."""
TUITION = "31010195281670669848"
"""6200.00 to agency 310101003, unpaid."""
SMALL_FINE = "31010120407659736338"
"""50.00 to agency 310101001, unpaid."""
EXPIRED = "31010139944550089291"
"""150.00, due 2020-03-31, never paid."""
CANCELLED = "31010199990247352912"
"""100.00, cancelled by the agency."""
UNKNOWN = make_pay_code("310101", random.Random(7))
"""A well-formed code (right length, right check digit) that no agency issued."""
AMOUNTS = {FINE: 20000, LICENCE: 11000, TUITION: 620000, SMALL_FINE: 5000, EXPIRED: 15000, CANCELLED: 10000}

FEE_TID = "10000002"
"""The vehicle licensing office's terminal: pays the fees."""
SHOP_TID = "10000001"
"""Another terminal of the same host, for ordinary purchases."""
PAYER_CARD, PAYER_ACCOUNT = "approve2", "A-1004"
OPENING = 5_000_000
"""A-1004's opening balance (fixtures/accounts.yaml)."""


@dataclass(frozen=True)
class Confirmed:
    """One row of the finance bureau's confirmations, as its file holds it."""

    trade_no: str
    confirm_no: str
    amount: int
    state: str


class Finance:
    """The finance bureau's system on a background thread, over the SQLite file `db`."""

    def __init__(self, db: Path):
        self.db = db
        self.bureau: FinanceBureau = open_bureau(db)
        self._thread: FinanceThread | None = FinanceThread(self.bureau)
        self.address = self._thread.start("127.0.0.1", 0)

    def stop(self) -> None:
        """Stop answering (the port is closed: a host gets connection refused); its books stay readable."""
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.bureau.store.close()

    def restart(self) -> None:
        """Start again as a restarted bureau would: the same file reopened, the same port."""
        self.close()
        self.bureau = open_bureau(self.db)
        self._thread = FinanceThread(self.bureau)
        self._thread.start(*self.address)

    def status(self, pay_code: str) -> str | None:
        """The notice's status as the bureau's books have it (unpaid, paid, expired, cancelled); None: no notice."""
        notice = self.bureau.store.get(pay_code)
        return None if notice is None else notice.status

    def confirmations(self, pay_code: str) -> list[Confirmed]:
        """Every confirmation of `pay_code` the bureau's file holds, cancelled ones included, oldest first."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT trade_no, confirm_no, amount, state FROM confirmations WHERE pay_code = ?"
                              " ORDER BY id", (pay_code,)).fetchall()
        return [Confirmed(*row) for row in rows]


class Host:
    """The acquirer host on the running event loop, its journal at `journal`, taking fees through `finance`."""

    def __init__(self, journal: Path, finance: tuple[str, int] | None, settings: FeeSettings):
        self.core: HostCore = build_host("cup", journal)
        self.core.fees.settings = settings
        if finance is not None:
            self.core.fees.connect(finance, finance_key())
        self.server = HostServer(self.core)
        self.address: tuple[str, int] | None = None

    async def start(self) -> Host:
        self.address = await self.server.start("127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        """Stop serving and close the journal; again is harmless."""
        if self.address is not None:
            self.address = None
            await self.server.stop()
            self.core.close()

    def balance(self, account: str = PAYER_ACCOUNT) -> int | None:
        return self.core.journal.balance(account)

    def fee_rows(self) -> list[Transaction]:
        return [t for t in self.core.journal.transactions() if t.kind == "fee_payment"]

    def fees(self) -> list[FeePayment]:
        return self.core.journal.fee_payments()


class RecordingLink:
    """A TcpLink that keeps every frame the terminal sent and every answer it got, so a test can send a
    request again byte for byte (a retransmission) and compare the answers."""

    def __init__(self, link: TcpLink):
        self.link = link
        self.sent: list[bytes] = []
        self.answers: list[bytes] = []

    @property
    def peer(self) -> str:
        return self.link.peer

    async def exchange(self, frame: bytes, timeout: float) -> bytes:
        self.sent.append(frame)
        answer = await self.link.exchange(frame, timeout)
        self.answers.append(answer)
        return answer

    async def close(self) -> None:
        await self.link.close()


def terminal(host: Host, state: Path, tid: str = FEE_TID, timeout: float = 5.0, retries: int = 1) -> Terminal:
    assert host.address is not None
    address, port = host.address
    profile = load_profile(tid, dialect="cup", host=f"{address}:{port}", timeout=timeout, reversal_retries=retries)
    link = RecordingLink(TcpLink(address, port, profile.framing))
    return Terminal(profile, link, TerminalState(profile.tid, state))


async def close_terminal(t: Terminal) -> None:
    await t.link.close()
    t.state.close()


async def eventually(check: Callable[[], bool], within: float = 5.0) -> bool:
    """Whether `check` comes true within `within` seconds (background work: cancels, resumed confirmations)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def paid_everywhere(result: TransactionResult, t: Terminal, host: Host, finance: Finance, pay_code: str) -> None:
    """The payment `result` approved is charged once, confirmed once, and recorded alike by all three parties;
    any other attempt at the notice is charged and confirmed nowhere."""
    amount = AMOUNTS[pay_code]
    assert result.response_code == "00" and result.approved, result.message
    assert result.notice is not None and result.notice["notice_status"] == "PAID"
    # the terminal
    assert t.state.pending_reversal() is None
    (entry,) = [e for e in t.state.open_batch() if e.kind == "fee_payment"]
    assert (entry.amount, entry.rrn, entry.stan) == (amount, result.rrn, result.stan)
    # the host
    (row,) = [r for r in host.fee_rows() if r.status == "approved"]
    assert (row.response_code, row.amount, row.rrn) == ("00", amount, result.rrn)
    assert host.balance() == OPENING - amount
    (fee,) = [f for f in host.fees() if f.state == "confirmed"]
    assert (fee.transaction_id, fee.trade_no, fee.pay_code, fee.amount) == (row.id, result.rrn, pay_code, amount)
    # the finance bureau
    (confirmed,) = finance.confirmations(pay_code)
    assert (confirmed.trade_no, confirmed.amount, confirmed.state) == (result.rrn, amount, "confirmed")
    assert finance.status(pay_code) == "paid"
    assert fee.confirm_no == confirmed.confirm_no == result.notice["confirm_no"]


def paid_nowhere(t: Terminal, host: Host, finance: Finance, pay_code: str) -> None:
    """Nothing of `pay_code` is charged or standing anywhere (a fee row may exist, reversed or declined)."""
    assert t.state.pending_reversal() is None
    assert [e for e in t.state.open_batch() if e.kind == "fee_payment"] == []
    assert host.balance() == OPENING
    assert all(row.status in ("declined", "reversed") for row in host.fee_rows())
    assert all(fee.state in ("rolled_back", "cancelled") for fee in host.fees())
    assert [c for c in finance.confirmations(pay_code) if c.state == "confirmed"] == []
    assert finance.status(pay_code) != "paid"
