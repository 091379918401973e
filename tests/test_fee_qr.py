"""Government fee notices paid by QR, end to end (acquirer/fee_desk.py "paid by QR", docs/fees.md): a real
Terminal makes an order for a notice over ISO 8583, a real WalletApp pays its payload over the host's signed
HTTP wallet entry, and the host confirms the fee to the simulated finance bureau in the background.

Every test reads every party's own books, not any one party's word: what the terminal was told (the order's
answer, later qr_query answers and their `notice`) and what its state file kept; what the host journaled (the
order and its qr_order row, the fee_payments row, the wallet's account balance — also as the wallet app sees
it); and what the finance bureau's file holds (the notice's status, every confirmation, cancelled ones too).
The closed loop holds when the notice is paid and confirmed everywhere, or paid nowhere with the wallet whole.

Faults are the bureau's own (drop, delay, already_paid); timeouts really elapse, kept short.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from possim.acquirer.core import HostCore, build_host
from possim.acquirer.fee_desk import finance_key
from possim.acquirer.journal import FeePayment, Order, Transaction
from possim.acquirer.partners import Partners
from possim.acquirer.server import HostServer
from possim.acquirer.settings import FeeSettings, HostSettings
from possim.settlement.jobs import run_cutover, run_make_file
from possim.terminal import Terminal, TerminalState, load_profile
from possim.terminal.link import TcpLink
from possim.terminal.results import TransactionResult
from possim.terminal.wallet_app import WalletApp, WalletAppError, login
from possim.wire.nontax import MSG_PAYMENT_CONFIRM

from fee_support import CANCELLED, EXPIRED, FEE_TID, FINE, SMALL_FINE, TUITION, UNKNOWN, Finance, eventually
from settlement_support import query

QUICK = FeeSettings(finance_timeout=0.3, confirm_attempts=2, cancel_backoff=(1,))
"""The host gives the finance system 0.3 s an answer, twice per confirmation."""
PATIENT = FeeSettings(finance_timeout=3.0, confirm_attempts=2, cancel_backoff=(1,))
"""A host that is still waiting on a slow confirmation when it is stopped."""
LATE = 0.6
"""A finance answer later than QUICK allows."""
OPENING = {"alice": 500_000, "carol": 800_000}
"""fixtures/wallets.yaml: alice 5,000.00 (password 123456 above 300.00), carol 8,000.00 (password 111111 always)."""
PASSWORD = {"alice": "123456", "carol": "111111"}
FEE_AMOUNTS = {FINE: 20000, SMALL_FINE: 5000, TUITION: 620000, EXPIRED: 15000, CANCELLED: 10000}


class QrLab:
    """Finance bureau, host (with its HTTP wallet entry) and one fee terminal over files in `folder`; the host
    can be stopped and another HostServer started over the same core and journal, on the same port."""

    def __init__(self, folder: Path, finance: Finance, settings: FeeSettings):
        self.folder = folder
        self.finance = finance
        self.core: HostCore = build_host("cup", folder / "journal.sqlite")
        self.core.fees.settings = settings  # before connect: the client takes its timeout from it
        self.core.fees.connect(finance.address, finance_key())
        self.server: HostServer | None = None
        self.port = 0
        self.terminal: Terminal | None = None

    async def start_host(self) -> None:
        self.server = HostServer(self.core, http=("127.0.0.1", 0), partners=Partners.from_fixtures())
        self.port = (await self.server.start("127.0.0.1", self.port))[1]

    async def stop_host(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def open_terminal(self) -> Terminal:
        profile = load_profile(FEE_TID, dialect="cup", host=f"127.0.0.1:{self.port}", timeout=5.0, reversal_retries=1)
        self.terminal = Terminal(profile, TcpLink("127.0.0.1", self.port, profile.framing),
                                 TerminalState(FEE_TID, self.folder / "terminal.sqlite"))
        assert (await self.terminal.sign_on()).approved
        return self.terminal

    async def close(self) -> None:
        if self.terminal is not None:
            await self.terminal.link.close()
            self.terminal.state.close()
        await self.stop_host()
        self.core.close()
        self.finance.close()

    # ---- the wallet, through the host's HTTP wallet entry ----

    def wallet(self, name: str) -> WalletApp:
        assert self.server is not None and self.server.http_address is not None
        return WalletApp(login(name), "%s:%d" % self.server.http_address)

    async def pay(self, name: str, payload: str, password: str | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.wallet(name).pay, payload, None, password)

    async def app_balance(self, name: str) -> int:
        return int((await asyncio.to_thread(self.wallet(name).balance))["balance"])

    def balance(self, name: str) -> int | None:
        return self.core.journal.balance(f"wallet:{name}")

    # ---- the host's books ----

    def order(self, order_no: str) -> Order:
        order = self.core.journal.order(order_no)
        assert order is not None, f"the journal has no order {order_no}"
        return order

    def row(self, order_no: str) -> Transaction:
        """The order's qr_order row, where its money moves."""
        row = self.core.journal.transaction_by_id(self.order(order_no).transaction_id or 0)
        assert row is not None and row.kind == "qr_order" and row.order_no == order_no
        return row

    def fee(self, order_no: str) -> FeePayment:
        fee = self.core.journal.fee_payment(self.row(order_no).id or 0)
        assert fee is not None, f"order {order_no} pays no fee notice"
        return fee

    def fee_is(self, order_no: str, state: str) -> Callable[[], bool]:
        """For eventually(): the fee's state is reached by background work (confirmations, cancels)."""
        return lambda: self.fee(order_no).state == state


def run(tmp_path: Path, test: Callable[[QrLab], Awaitable[None]], settings: FeeSettings = QUICK) -> None:
    async def main() -> None:
        lab = QrLab(tmp_path, Finance(tmp_path / "finance.sqlite"), settings)
        try:
            await lab.start_host()
            await test(lab)
        finally:
            await lab.close()

    asyncio.run(main())


async def poll(t: Terminal, order_no: str, done: Callable[[TransactionResult], bool],
               within: float = 5.0) -> TransactionResult:
    """qr_query the order, as a terminal waiting for its payer does, until `done` says so."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await t.qr_query(order_no)
        assert result.response_code == "00", result.message
        if done(result):
            return result
        assert loop.time() < deadline, f"order {order_no} stayed {result.status}, notice {result.notice}"
        await asyncio.sleep(0.05)


def notice_paid(result: TransactionResult) -> bool:
    return (result.notice or {}).get("notice_status") == "PAID"


def order_ended(result: TransactionResult) -> bool:
    return notice_paid(result) or result.status in ("reversed", "closed")


async def order_for(lab: QrLab, pay_code: str) -> TransactionResult:
    """Look the notice up, then make an order for exactly its amount due; check the answer and the books."""
    assert lab.terminal is not None
    looked_up = await lab.terminal.fee_query(pay_code)
    assert looked_up.approved and looked_up.notice is not None, looked_up.message
    due = looked_up.notice["amount_due"]
    assert due == FEE_AMOUNTS[pay_code] and looked_up.notice["notice_status"] == "UNPAID"
    made = await lab.terminal.fee_qr_order(pay_code, due)
    assert (made.response_code, made.approved, made.status) == ("00", True, "created"), made.message
    assert made.notice == {"pay_code": pay_code, "notice_status": "UNPAID"}
    assert made.order_no and made.payload and made.rrn
    # the host: a pending row for the amount due, a fee awaiting the wallet, nothing at the finance system yet
    row, fee = lab.row(made.order_no), lab.fee(made.order_no)
    assert (row.status, row.amount, row.rrn, lab.order(made.order_no).status) == ("pending", due, made.rrn, "created")
    assert (fee.state, fee.channel, fee.pay_code, fee.amount, fee.trade_no) == (
        "awaiting_payment", "QR", pay_code, due, row.rrn)
    assert lab.finance.status(pay_code) == "unpaid"
    return made


async def paid_nowhere(lab: QrLab, made: TransactionResult, wallet: str, fee_state: str) -> None:
    """The wallet paid the order, the finance system never kept it: every party's books say paid nowhere."""
    assert lab.terminal is not None and made.order_no is not None
    code = made.notice["pay_code"] if made.notice else ""
    ended = await poll(lab.terminal, made.order_no, order_ended)
    assert (ended.status, ended.approved) == ("reversed", False)
    assert ended.notice == {"pay_code": code, "notice_status": "UNPAID"}  # no confirm_no
    assert lab.terminal.state.qr_order(made.order_no).status == "reversed"
    assert lab.terminal.state.pending_reversal() is None
    # the host: the order reversed by the host itself, the wallet given it all back, the fee undone
    assert await eventually(lab.fee_is(made.order_no, fee_state)), lab.fee(made.order_no)
    row, fee = lab.row(made.order_no), lab.fee(made.order_no)
    assert (lab.order(made.order_no).status, row.status, row.reversal_reason) == ("reversed", "reversed", "finance")
    assert (fee.channel, fee.confirm_no, fee.trade_no) == ("QR", None, row.rrn)
    assert lab.balance(wallet) == await lab.app_balance(wallet) == OPENING[wallet]
    # the finance bureau: nothing standing, the notice payable again
    assert [c for c in lab.finance.confirmations(code) if c.state == "confirmed"] == []
    assert lab.finance.status(code) == "unpaid"


async def paid_everywhere(lab: QrLab, made: TransactionResult, wallet: str) -> None:
    """Poll until the notice is PAID; check it is paid once and alike in every party's books."""
    assert lab.terminal is not None and made.order_no is not None and made.notice is not None
    code, amount = made.notice["pay_code"], FEE_AMOUNTS[made.notice["pay_code"]]
    done = await poll(lab.terminal, made.order_no, order_ended)
    assert (done.status, done.approved) == ("paid", True), done.message
    (confirmed,) = [c for c in lab.finance.confirmations(code) if c.state == "confirmed"]
    assert done.notice == {"pay_code": code, "notice_status": "PAID", "confirm_no": confirmed.confirm_no}
    assert lab.terminal.state.qr_order(made.order_no).status == "paid"
    # the host
    row, fee = lab.row(made.order_no), lab.fee(made.order_no)
    assert (row.status, row.amount, row.posted_amount, row.account_id) == (
        "approved", amount, amount, f"wallet:{wallet}")
    assert lab.order(made.order_no).status == "paid"
    assert (fee.state, fee.channel, fee.confirm_no, fee.trade_no) == ("confirmed", "QR", confirmed.confirm_no, row.rrn)
    # the finance bureau: paid by exactly this order, its RRN the trade number
    assert (confirmed.trade_no, confirmed.amount) == (made.rrn, amount)
    assert lab.finance.status(code) == "paid"


# ---- 1. the happy path, through cut-over and the collection statement ----


def test_notice_paid_by_qr_is_confirmed_once_everywhere_then_settled_and_on_the_collection_statement(tmp_path):
    made: dict[str, Any] = {}

    async def test(lab: QrLab) -> None:
        t = await lab.open_terminal()
        order = await order_for(lab, SMALL_FINE)
        assert lab.balance("alice") == await lab.app_balance("alice") == OPENING["alice"]

        paid = await lab.pay("alice", order.payload or "")
        assert (paid["status"], paid["order_no"], paid["amount"]) == ("paid", order.order_no, 5000)
        await paid_everywhere(lab, order, "alice")
        assert lab.fee(order.order_no or "").attempts == 1
        (confirmed,) = lab.finance.confirmations(SMALL_FINE)
        assert confirmed.state == "confirmed"
        # debited once, whatever the terminal asked meanwhile
        await t.qr_query(order.order_no or "")
        assert lab.balance("alice") == await lab.app_balance("alice") == OPENING["alice"] - 5000
        # the terminal counts the paid order once in its batch
        assert [(e.kind, e.amount, e.order_no) for e in t.state.open_batch()] == [("qr_order", 5000, order.order_no)]
        made["row"] = lab.row(order.order_no or "")

    run(tmp_path, test)

    row: Transaction = made["row"]
    journal, day = tmp_path / "journal.sqlite", row.business_date
    next_morning = datetime.combine(date.fromisoformat(day) + timedelta(days=1), datetime.min.time()).replace(minute=30)
    cut = run_cutover(journal, day, out=tmp_path / "settlement", clock=lambda: next_morning)
    assert not cut.failed, cut.to_json()
    assert query(journal, "SELECT settlement_state, settlement_channel FROM transactions WHERE id = ?",
                 row.id) == [("settled", "qr:wechat")]
    statement = tmp_path / "collection.csv"
    run_make_file(journal, day, "collection", None, 7, statement)
    with open(statement, encoding="utf-8", newline="") as f:
        lines = list(csv.DictReader(f))
    assert [(r["account"], r["direction"], r["amount"], r["currency"], r["reference"]) for r in lines] == [
        (HostSettings.from_fixtures().fees.collection_account, "CR", "50.00", "156", row.rrn)]
    assert SMALL_FINE in lines[0]["description"]


# ---- 2. refused when the order is asked for: no order, nothing charged ----


def _paid_at_another_bank(finance: Finance, pay_code: str) -> None:
    """The notice was paid elsewhere before the payer came: the finance bureau's books say so."""
    now = datetime.now()
    finance.bureau.store.confirm(pay_code, FEE_AMOUNTS[pay_code], "COUNTER", "OTHERBANK0000000001", now, now.date(),
                                 currency_numeric="156")


@pytest.mark.parametrize("case, pay_code, amount, code", [
    ("unknown", UNKNOWN, 5000, "25"),
    ("wrong amount", SMALL_FINE, 4999, "13"),
    ("already paid", FINE, 20000, "N1"),
    ("expired", EXPIRED, 15000, "N2"),
    ("cancelled", CANCELLED, 10000, "N3"),
    ("finance down", SMALL_FINE, 5000, "91"),
])
def test_an_order_for_a_notice_that_cannot_be_paid_is_refused_and_nothing_is_made_or_charged(
        tmp_path, case, pay_code, amount, code):
    async def test(lab: QrLab) -> None:
        t = await lab.open_terminal()
        if case == "already paid":
            _paid_at_another_bank(lab.finance, pay_code)
        before = lab.finance.confirmations(pay_code), lab.finance.status(pay_code)
        if case == "finance down":
            lab.finance.stop()

        refused = await t.fee_qr_order(pay_code, amount)
        assert (refused.response_code, refused.approved) == (code, False), refused.message
        assert refused.payload is None and refused.status is None
        # the terminal: no order to show or poll, nothing owed, nothing in the batch
        assert t.state.qr_orders() == [] and t.state.pending_reversal() is None and t.state.open_batch() == []
        # the host: a declined row only; no order, no fee, the wallet untouched
        assert lab.core.journal.orders() == [] and lab.core.journal.fee_payments() == []
        rows = [r for r in lab.core.journal.transactions() if r.kind == "qr_order"]
        assert [(r.status, r.response_code, r.amount, r.order_no) for r in rows] == [("declined", code, amount, None)]
        assert lab.balance("alice") == await lab.app_balance("alice") == OPENING["alice"]
        # the finance bureau: as it was
        if case == "finance down":
            lab.finance.restart()
        assert (lab.finance.confirmations(pay_code), lab.finance.status(pay_code)) == before

    run(tmp_path, test)


# ---- 3. the confirmation never answered ----


def test_confirmation_never_answered_reverses_the_order_refunds_the_wallet_and_the_notice_can_be_paid_again(tmp_path):
    async def test(lab: QrLab) -> None:
        t = await lab.open_terminal()
        first = await order_for(lab, FINE)
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "drop", times=QUICK.confirm_attempts)
        paid = await lab.pay("alice", first.payload or "")
        assert paid["status"] == "paid"
        await paid_nowhere(lab, first, "alice", "cancelled")
        fee = lab.fee(first.order_no or "")
        assert fee.attempts == QUICK.confirm_attempts and lab.finance.bureau.faults.pending(MSG_PAYMENT_CONFIRM) == 0
        assert lab.finance.confirmations(FINE) == []  # dropped unread: the cancel found nothing to cancel

        again = await order_for(lab, FINE)
        assert again.order_no != first.order_no and again.rrn != first.rrn
        await lab.pay("alice", again.payload or "")
        await paid_everywhere(lab, again, "alice")
        assert lab.balance("alice") == await lab.app_balance("alice") == OPENING["alice"] - 20000
        assert [f.state for f in lab.core.journal.fee_payments()] == ["cancelled", "confirmed"]
        assert lab.fee(first.order_no or "").state == "cancelled"  # the first stays undone
        assert t.state.qr_order(first.order_no or "").status == "reversed"

    run(tmp_path, test)


def test_a_fee_order_the_host_reverses_after_the_terminal_saw_it_paid_leaves_the_terminal_batch_balanced(tmp_path):
    async def test(lab: QrLab) -> None:
        t = await lab.open_terminal()
        made = await order_for(lab, FINE)
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "drop", times=QUICK.confirm_attempts)
        await lab.pay("alice", made.payload or "")
        confirming = await t.qr_query(made.order_no or "")  # the finance system has 2 × 0.3 s to go
        assert lab.fee(made.order_no or "").state == "confirming"
        assert confirming.notice == {"pay_code": FINE, "notice_status": "UNPAID"}
        await paid_nowhere(lab, made, "alice", "cancelled")
        assert [e for e in t.state.open_batch() if e.order_no == made.order_no] == []
        closed = await t.batch_close()
        assert closed.closed and closed.balanced

    run(tmp_path, test)


# ---- 4. the confirmation answered late once ----


def test_confirmation_answered_late_is_sent_again_and_counts_once(tmp_path):
    async def test(lab: QrLab) -> None:
        await lab.open_terminal()
        made = await order_for(lab, FINE)
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "delay", seconds=LATE)
        await lab.pay("alice", made.payload or "")
        await paid_everywhere(lab, made, "alice")
        # the late first attempt was taken; the second got "already paid" with this trade number and its number
        fee = lab.fee(made.order_no or "")
        assert fee.attempts == 2 and fee.last_result == "attempt 2: 1001"
        (confirmed,) = lab.finance.confirmations(FINE)
        assert (confirmed.state, confirmed.trade_no) == ("confirmed", made.rrn)
        assert lab.balance("alice") == await lab.app_balance("alice") == OPENING["alice"] - 20000

    run(tmp_path, test)


# ---- 5. the finance system refuses the confirmation ----


def test_confirmation_refused_rolls_back_at_once_and_refunds_the_wallet(tmp_path):
    async def test(lab: QrLab) -> None:
        await lab.open_terminal()
        made = await order_for(lab, FINE)
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "already_paid")  # by another trade number
        await lab.pay("alice", made.payload or "")
        await paid_nowhere(lab, made, "alice", "rolled_back")
        fee = lab.fee(made.order_no or "")
        assert (fee.attempts, fee.last_result) == (1, "attempt 1: 1001")  # a refusal is not retried
        assert lab.finance.confirmations(FINE) == []
        await asyncio.sleep(0.2)  # a refusal has nothing at the finance system to cancel: nothing more happens
        assert lab.fee(made.order_no or "").state == "rolled_back"

    run(tmp_path, test)


# ---- 6. a wallet that wants its password ----


def test_a_wallet_that_wants_its_password_pays_nothing_until_it_has_it_and_finance_hears_nothing_before(tmp_path):
    """A merchant-presented code is paid with the password typed in the app beforehand (OrderService.pay): the
    order never waits in "paying" — that is a scanned code's state — and WalletApp.confirm has nothing to
    confirm. Without the password, or with a wrong one, nothing moves and nothing reaches the finance system."""

    async def test(lab: QrLab) -> None:
        t = await lab.open_terminal()
        made = await order_for(lab, TUITION)  # 6,200.00: above alice's 300.00, and more than she has
        payload = made.payload or ""
        for name, password in (("alice", None), ("carol", None), ("carol", "000000")):
            with pytest.raises(WalletAppError, match="WRONG_PASSWORD"):
                await lab.pay(name, payload, password)
        declined = await lab.pay("alice", payload, PASSWORD["alice"])
        assert (declined["status"], declined["response_code"]) == ("declined", "51")
        assert await asyncio.to_thread(lab.wallet("carol").waiting) == []
        with pytest.raises(WalletAppError, match="no payment waiting"):
            await asyncio.to_thread(lab.wallet("carol").confirm, PASSWORD["carol"])
        # nothing moved anywhere: the order still payable, the fee still waiting, the finance system unasked
        waiting = await t.qr_query(made.order_no or "")
        assert (waiting.status, waiting.approved, waiting.notice) == (
            "created", False, {"pay_code": TUITION, "notice_status": "UNPAID"})
        assert (lab.order(made.order_no or "").status, lab.row(made.order_no or "").status) == ("created", "pending")
        assert lab.fee(made.order_no or "").state == "awaiting_payment"
        assert lab.finance.confirmations(TUITION) == [] and lab.finance.status(TUITION) == "unpaid"
        for name in ("alice", "carol"):
            assert lab.balance(name) == await lab.app_balance(name) == OPENING[name]

        paid = await lab.pay("carol", payload, PASSWORD["carol"])
        assert paid["status"] == "paid"
        await paid_everywhere(lab, made, "carol")
        assert lab.balance("carol") == await lab.app_balance("carol") == OPENING["carol"] - 620000
        assert lab.balance("alice") == OPENING["alice"]

    run(tmp_path, test)


# ---- 7. the host stopped while confirming ----


def test_host_stopped_while_confirming_is_rolled_back_on_restart_and_cancelled_at_the_finance_system(tmp_path):
    async def test(lab: QrLab) -> None:
        await lab.open_terminal()
        made = await order_for(lab, FINE)
        order_no = made.order_no or ""
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "delay", seconds=2.5)
        await lab.pay("alice", made.payload or "")
        # the finance system took the confirmation and sits on its answer; the host stops meanwhile
        assert await eventually(lambda: len(lab.finance.confirmations(FINE)) == 1)
        assert lab.fee(order_no).state == "confirming"
        await lab.stop_host()
        assert lab.fee(order_no).state == "confirming"  # stopped unfinished: nothing decided
        assert lab.balance("alice") == OPENING["alice"] - 20000

        await lab.start_host()  # another server over the same core and journal, on the same port
        assert await eventually(lab.fee_is(order_no, "cancelled")), lab.fee(order_no)
        (cancelled,) = lab.finance.confirmations(FINE)
        assert (cancelled.trade_no, cancelled.state) == (made.rrn, "cancelled")
        await paid_nowhere(lab, made, "alice", "cancelled")

    run(tmp_path, test, PATIENT)


# ---- a terminal's reversal of a paid fee order ----


def test_a_terminal_reversal_of_a_confirmed_fee_order_cancels_the_confirmation_too(tmp_path):
    async def test(lab: QrLab) -> None:
        t = await lab.open_terminal()
        made = await order_for(lab, SMALL_FINE)
        await lab.pay("alice", made.payload or "")
        await paid_everywhere(lab, made, "alice")
        cancel = await t.qr_cancel(made.order_no or "")
        assert (cancel.response_code, cancel.status) == ("00", "reversed")
        assert lab.balance("alice") == await lab.app_balance("alice") == OPENING["alice"]
        # the wallet has its money back: the finance system must not keep the notice paid
        assert await eventually(lab.fee_is(made.order_no or "", "cancelled"), within=2.0), \
            lab.fee(made.order_no or "")
        (cancelled,) = lab.finance.confirmations(SMALL_FINE)
        assert cancelled.state == "cancelled" and lab.finance.status(SMALL_FINE) == "unpaid"

    run(tmp_path, test)


def test_a_refund_of_a_confirmed_fee_order_never_leaves_the_notice_paid_with_the_wallet_refunded(tmp_path):
    async def test(lab: QrLab) -> None:
        t = await lab.open_terminal()
        made = await order_for(lab, SMALL_FINE)
        await lab.pay("alice", made.payload or "")
        await paid_everywhere(lab, made, "alice")
        refund = await t.qr_refund(made.order_no or "", 5000)
        # either the refund is refused (paid everywhere) or the confirmation goes with it (paid nowhere)
        if lab.balance("alice") == await lab.app_balance("alice") == OPENING["alice"] - 5000:
            assert not refund.approved and lab.finance.status(SMALL_FINE) == "paid"
        else:
            assert lab.balance("alice") == OPENING["alice"] and refund.approved
            assert await eventually(lambda: lab.finance.status(SMALL_FINE) == "unpaid", within=2.0), \
                lab.fee(made.order_no or "")

    run(tmp_path, test)
