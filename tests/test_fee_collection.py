"""Government fees paid at the POS, end to end: a real Terminal, the real host and the simulated finance
bureau, over loopback TCP and three SQLite files (docs/fees.md, acquirer/fee_desk.py).

Every test ends by reading all three sets of books: what the terminal was told and kept (its open batch,
the reversal it owes), what the host journaled (the card payment's row, the cardholder's balance, the fee's
state), and what the finance bureau recorded (the notice's status, every confirmation, cancelled ones too).
The closed loop holds when a payment is paid and confirmed everywhere, or paid nowhere.

Faults are the bureau's own (Faults: delay, drop, lose_answer, error, already_paid); timeouts really elapse,
kept short (finance_timeout 0.3 s unless a test needs the host to sit a delay out).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from possim.acquirer.settings import FeeSettings
from possim.terminal.cards import Card, resolve_card
from possim.terminal.messages import answer_body
from possim.terminal.terminal import Terminal
from possim.wire.codec import Codec
from possim.wire.framing import FrameReader
from possim.wire.message import Message
from possim.wire.nontax import MSG_CONFIRM_CANCEL, MSG_NOTICE_QUERY, MSG_PAYMENT_CONFIRM

from fee_support import (
    AMOUNTS, CANCELLED, EXPIRED, FEE_TID, FINE, LICENCE, OPENING, PAYER_CARD, SHOP_TID, SMALL_FINE, TUITION, UNKNOWN,
    Finance, Host, RecordingLink, close_terminal, eventually, paid_everywhere, paid_nowhere, terminal,
)

QUICK = FeeSettings(finance_timeout=0.3, confirm_attempts=2, cancel_backoff=(1,))
"""A host that gives the finance system 0.3 s an answer, twice per confirmation."""
PATIENT = FeeSettings(finance_timeout=2.0, confirm_attempts=2, cancel_backoff=(1,))
"""A host that sits out a finance answer that takes a second."""
LATE = 0.6
"""A finance answer later than QUICK allows."""


class Lab:
    """The three parties of one test; `host` may be replaced by a restarted one."""

    def __init__(self, folder: Path, finance: Finance, host: Host):
        self.folder = folder
        self.finance = finance
        self.host = host
        self.terminals: list[Terminal] = []

    async def terminal(self, tid: str = FEE_TID, timeout: float = 5.0, retries: int = 1) -> Terminal:
        """A terminal of the current host, signed on."""
        t = terminal(self.host, self.folder / f"terminal-{tid}.sqlite", tid, timeout, retries)
        self.terminals.append(t)
        assert (await t.sign_on()).approved
        return t

    async def restart_host(self, settings: FeeSettings) -> None:
        """Stop the host and start another over the same journal file (the finance address kept)."""
        await self.host.stop()
        self.host = await Host(self.folder / "journal.sqlite", self.finance.address, settings).start()
        for t in self.terminals:
            assert isinstance(t.link, RecordingLink) and self.host.address is not None
            t.link.link.port = self.host.address[1]


def run(tmp_path: Path, test: Callable[[Lab], Awaitable[None]], settings: FeeSettings = QUICK,
        finance_up: bool = True) -> None:
    async def main() -> None:
        finance = Finance(tmp_path / "finance.sqlite")
        if not finance_up:
            finance.stop()
        host = await Host(tmp_path / "journal.sqlite", finance.address, settings).start()
        lab = Lab(tmp_path, finance, host)
        try:
            await test(lab)
        finally:
            for t in lab.terminals:
                await close_terminal(t)
            await lab.host.stop()
            lab.finance.close()

    asyncio.run(main())


def card() -> Card:
    return resolve_card(PAYER_CARD)


# ---- 1. the happy path ----

def test_notice_looked_up_then_paid_and_confirmed_everywhere_and_the_batch_balances(tmp_path):
    async def test(lab: Lab) -> None:
        t = await lab.terminal()
        query = await t.fee_query(LICENCE)
        assert query.approved and query.response_code == "00"
        assert query.notice == {
            "pay_code": LICENCE, "agency_code": "310101002", "amount_due": 11000, "due_date": "20300630",
            "notice_status": "UNPAID", "items": "103040501:10000;103040502:1000",
        }
        assert t.state.open_batch() == [] and lab.host.balance() == OPENING and lab.host.fees() == []
        assert lab.finance.confirmations(LICENCE) == []

        paid = await t.fee_payment(LICENCE, 11000, card())
        paid_everywhere(paid, t, lab.host, lab.finance, LICENCE)
        assert paid.notice["agency_code"] == "310101002" and paid.notice["amount_due"] == 11000
        assert lab.host.fees()[0].attempts == 1

        closed = await t.batch_close()
        assert closed.closed and closed.balanced
        assert (closed.totals.combined.debit_count, closed.totals.combined.debit_amount) == (1, 11000)
        assert t.state.open_batch() == []

    run(tmp_path, test)


# ---- 2. refused before anything is charged ----

@pytest.mark.parametrize("pay_code, amount, code, query_code", [
    (UNKNOWN, 20000, "25", "25"),
    (FINE, 19999, "13", "00"),
    (EXPIRED, AMOUNTS[EXPIRED], "N2", "N2"),
    (CANCELLED, AMOUNTS[CANCELLED], "N3", "N3"),
], ids=["unknown", "wrong-amount", "expired", "cancelled"])
def test_notice_that_cannot_be_paid_is_declined_and_charged_nowhere(tmp_path, pay_code, amount, code, query_code):
    async def test(lab: Lab) -> None:
        before = lab.finance.status(pay_code)
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "error")  # stays queued unless a confirmation arrives
        t = await lab.terminal()
        query = await t.fee_query(pay_code)
        assert query.response_code == query_code
        if query.approved:  # a wrong amount: the query says what is due
            assert query.notice is not None and query.notice["amount_due"] == AMOUNTS[pay_code]
        result = await t.fee_payment(pay_code, amount, card())
        assert (result.response_code, result.approved, result.timed_out) == (code, False, False)
        assert lab.finance.bureau.faults.pending(MSG_PAYMENT_CONFIRM) == 1
        (row,) = lab.host.fee_rows()
        assert (row.status, row.response_code, row.posted_amount) == ("declined", code, 0)
        assert lab.host.fees() == [] and lab.finance.confirmations(pay_code) == []
        assert lab.finance.status(pay_code) == before
        paid_nowhere(t, lab.host, lab.finance, pay_code)

    run(tmp_path, test)


def test_notice_paid_once_is_refused_the_second_time_and_charged_once(tmp_path):
    async def test(lab: Lab) -> None:
        t = await lab.terminal()
        first = await t.fee_payment(SMALL_FINE, 5000, card())
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "error")
        assert (await t.fee_query(SMALL_FINE)).response_code == "N1"
        again = await t.fee_payment(SMALL_FINE, 5000, card())
        assert (again.response_code, again.approved) == ("N1", False)
        assert again.message == "notice already paid"
        assert lab.finance.bureau.faults.pending(MSG_PAYMENT_CONFIRM) == 1
        assert [(r.status, r.response_code) for r in lab.host.fee_rows()] == [("approved", "00"), ("declined", "N1")]
        paid_everywhere(first, t, lab.host, lab.finance, SMALL_FINE)

    run(tmp_path, test)


@pytest.mark.parametrize("card_name, account, balance, pay_code, code", [
    ("lost", "A-1001", 5_000_000, FINE, "41"),
    ("insufficient", "A-1002", 1000, SMALL_FINE, "51"),   # holds 10.00
    ("over-limit", "A-1003", 5_000_000, FINE, "61"),      # 100.00 per payment
])
def test_card_declined_is_never_confirmed_to_finance(tmp_path, card_name, account, balance, pay_code, code):
    async def test(lab: Lab) -> None:
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "error")  # stays queued unless a confirmation arrives
        t = await lab.terminal()
        result = await t.fee_payment(pay_code, AMOUNTS[pay_code], resolve_card(card_name))
        assert (result.response_code, result.approved) == (code, False)
        assert lab.finance.bureau.faults.pending(MSG_PAYMENT_CONFIRM) == 1
        (row,) = lab.host.fee_rows()
        assert (row.status, row.response_code, row.posted_amount) == ("declined", code, 0)
        assert lab.host.balance(account) == balance and lab.host.fees() == []
        assert lab.finance.status(pay_code) == "unpaid" and lab.finance.confirmations(pay_code) == []
        paid_nowhere(t, lab.host, lab.finance, pay_code)

    run(tmp_path, test)


def test_finance_not_listening_declines_query_and_payment_91_charging_nothing(tmp_path):
    async def test(lab: Lab) -> None:
        t = await lab.terminal()
        query = await t.fee_query(FINE)
        assert (query.response_code, query.approved, query.notice) == ("91", False, None)
        result = await t.fee_payment(FINE, 20000, card())
        assert (result.response_code, result.approved) == ("91", False)
        assert result.message == "the finance system did not answer: nothing charged"
        (row,) = lab.host.fee_rows()
        assert (row.status, row.response_code) == ("declined", "91")
        assert lab.host.fees() == [] and lab.finance.confirmations(FINE) == []
        paid_nowhere(t, lab.host, lab.finance, FINE)

    run(tmp_path, test, finance_up=False)


# ---- 3-5. a confirmation unanswered once: sent again with the same trade number ----

@pytest.mark.parametrize("fault, seconds, second_answer", [
    ("delay", LATE, "1001"),       # finance took the first; its answer came after the host stopped waiting
    ("lose_answer", 0.0, "1001"),  # finance took the first; its answer never left
    ("error", 0.0, "0000"),        # finance failed (9999) without taking it
])
def test_confirmation_unanswered_once_is_repeated_and_confirmed_once(tmp_path, fault, seconds, second_answer):
    async def test(lab: Lab) -> None:
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, fault, seconds=seconds)
        t = await lab.terminal()
        paid = await t.fee_payment(FINE, 20000, card())
        paid_everywhere(paid, t, lab.host, lab.finance, FINE)
        (fee,) = lab.host.fees()
        assert (fee.attempts, fee.last_result) == (2, f"attempt 2: {second_answer}")
        assert lab.finance.bureau.faults.pending() == 0

    run(tmp_path, test)


# ---- 6-8. never confirmed, or refused: the card payment reversed, the confirmation cancelled ----

def fee_state(lab: Lab) -> str | None:
    fees = lab.host.fees()
    return fees[0].state if len(fees) == 1 else None


def test_confirmations_dropped_every_time_reverse_the_card_payment_N4(tmp_path):
    async def test(lab: Lab) -> None:
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "drop", times=QUICK.confirm_attempts)
        t = await lab.terminal()
        result = await t.fee_payment(FINE, 20000, card())
        assert (result.response_code, result.approved, result.timed_out) == ("N4", False, False)
        assert result.message.startswith("the finance system did not confirm the payment")
        assert result.notice is not None and result.notice["notice_status"] == "UNPAID"
        assert "confirm_no" not in result.notice and result.auth_code is None
        (row,) = lab.host.fee_rows()
        assert (row.status, row.reversal_reason, row.rrn) == ("reversed", "finance", result.rrn)
        assert await eventually(lambda: fee_state(lab) == "cancelled")
        (fee,) = lab.host.fees()
        assert (fee.trade_no, fee.attempts, fee.last_result) == (result.rrn, 2, "cancel: 1007")  # nothing to cancel
        assert lab.finance.confirmations(FINE) == [] and lab.finance.status(FINE) == "unpaid"
        paid_nowhere(t, lab.host, lab.finance, FINE)

    run(tmp_path, test)


def test_confirmations_answered_late_every_time_are_cancelled_at_finance_N4(tmp_path):
    async def test(lab: Lab) -> None:
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "delay", times=QUICK.confirm_attempts, seconds=LATE)
        t = await lab.terminal()
        result = await t.fee_payment(FINE, 20000, card())
        assert (result.response_code, result.approved) == ("N4", False)
        (row,) = lab.host.fee_rows()
        assert (row.status, row.reversal_reason) == ("reversed", "finance")
        assert await eventually(lambda: fee_state(lab) == "cancelled")
        assert lab.host.fees()[0].last_result == "cancel: 0000"
        (confirmation,) = lab.finance.confirmations(FINE)  # the first attempt's, which finance did take
        assert (confirmation.trade_no, confirmation.state) == (result.rrn, "cancelled")
        assert lab.finance.status(FINE) == "unpaid"
        paid_nowhere(t, lab.host, lab.finance, FINE)

    run(tmp_path, test)


def test_finance_saying_another_payment_paid_it_reverses_the_card_payment_N1(tmp_path):
    async def test(lab: Lab) -> None:
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "already_paid")
        lab.finance.bureau.faults.add(MSG_CONFIRM_CANCEL, "error")  # stays queued: nothing to cancel
        t = await lab.terminal()
        result = await t.fee_payment(FINE, 20000, card())
        assert (result.response_code, result.approved) == ("N1", False)
        assert result.notice is not None and "confirm_no" not in result.notice
        (row,) = lab.host.fee_rows()
        assert (row.status, row.reversal_reason) == ("reversed", "finance")
        (fee,) = lab.host.fees()
        assert (fee.state, fee.attempts, fee.last_result) == ("rolled_back", 1, "attempt 1: 1001")
        assert lab.finance.bureau.faults.pending(MSG_CONFIRM_CANCEL) == 1
        # the bureau's own books: the fault claimed a payment it never recorded
        assert lab.finance.confirmations(FINE) == [] and lab.finance.status(FINE) == "unpaid"
        paid_nowhere(t, lab.host, lab.finance, FINE)

    run(tmp_path, test)


# ---- 9. the terminal reverses ----

def test_terminal_giving_up_while_the_host_confirms_leaves_the_notice_unpaid(tmp_path):
    async def test(lab: Lab) -> None:
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "delay", seconds=1.0)
        t = await lab.terminal(timeout=0.5)
        result = await t.fee_payment(FINE, 20000, card())
        assert (result.timed_out, result.approved, result.response_code) == (True, False, None)
        assert result.reversal is not None and result.reversal.acknowledged and result.reversal.response_code == "00"
        assert await eventually(lambda: fee_state(lab) == "cancelled")
        (row,) = lab.host.fee_rows()
        assert row.status == "reversed" and row.reversal_mti == "0400"
        (confirmation,) = lab.finance.confirmations(FINE)  # it did get there, and was cancelled after
        assert (confirmation.trade_no, confirmation.state) == (row.rrn, "cancelled")
        assert lab.host.fees()[0].last_result == "cancel: 0000"
        paid_nowhere(t, lab.host, lab.finance, FINE)

    run(tmp_path, test, PATIENT)


def test_terminal_reversing_a_confirmed_payment_cancels_it_at_finance(tmp_path):
    async def test(lab: Lab) -> None:
        t = await lab.terminal()
        paid = await t.fee_payment(FINE, 20000, card())
        paid_everywhere(paid, t, lab.host, lab.finance, FINE)
        reversed_ = await t.reverse()
        assert reversed_.approved and reversed_.amount == 20000
        assert await eventually(lambda: fee_state(lab) == "cancelled")
        (row,) = lab.host.fee_rows()
        assert row.status == "reversed"
        (confirmation,) = lab.finance.confirmations(FINE)
        assert (confirmation.trade_no, confirmation.state) == (paid.rrn, "cancelled")
        paid_nowhere(t, lab.host, lab.finance, FINE)

    run(tmp_path, test)


def test_terminal_giving_up_while_the_notice_is_looked_up_charges_nothing(tmp_path):
    async def test(lab: Lab) -> None:
        lab.finance.bureau.faults.add(MSG_NOTICE_QUERY, "delay", seconds=1.0)
        t = await lab.terminal(timeout=0.5)
        result = await t.fee_payment(FINE, 20000, card())
        assert result.timed_out and result.reversal is not None and result.reversal.acknowledged
        # the notice's answer comes after the reversal: whatever the host does then must charge nothing
        assert not await eventually(lambda: lab.host.balance() != OPENING or lab.finance.confirmations(FINE) != [],
                                    within=1.5)
        assert lab.host.fees() == []
        paid_nowhere(t, lab.host, lab.finance, FINE)

    run(tmp_path, test, PATIENT)


# ---- 10. a cancellation that cannot get through at first ----

async def reversed_while_finance_is_down(lab: Lab) -> Terminal:
    """A confirmed payment the terminal reverses while the finance system is stopped: the cancel is owed."""
    t = await lab.terminal()
    paid = await t.fee_payment(FINE, 20000, card())
    paid_everywhere(paid, t, lab.host, lab.finance, FINE)
    lab.finance.stop()
    assert (await t.reverse()).approved
    assert await eventually(lambda: (lab.host.fees()[0].last_result or "").startswith("cancel attempt 1:"))
    assert fee_state(lab) == "cancel_pending" and lab.host.balance() == OPENING
    assert lab.finance.status(FINE) == "paid"
    return t


def test_cancel_refused_by_a_stopped_finance_goes_through_once_it_is_back(tmp_path):
    async def test(lab: Lab) -> None:
        t = await reversed_while_finance_is_down(lab)
        lab.finance.restart()
        assert await eventually(lambda: fee_state(lab) == "cancelled")
        (confirmation,) = lab.finance.confirmations(FINE)
        assert confirmation.state == "cancelled" and lab.finance.status(FINE) == "unpaid"
        paid_nowhere(t, lab.host, lab.finance, FINE)

    run(tmp_path, test)


def test_cancel_still_owed_when_the_host_stops_is_sent_by_the_restarted_host(tmp_path):
    async def test(lab: Lab) -> None:
        t = await reversed_while_finance_is_down(lab)
        await lab.host.stop()
        lab.finance.restart()
        await lab.restart_host(QUICK)
        assert await eventually(lambda: fee_state(lab) == "cancelled")
        (confirmation,) = lab.finance.confirmations(FINE)
        assert confirmation.state == "cancelled" and lab.finance.status(FINE) == "unpaid"
        paid_nowhere(t, lab.host, lab.finance, FINE)

    run(tmp_path, test)


def test_host_restarted_while_confirming_then_reversed_by_the_terminal_cancels_at_finance(tmp_path):
    async def test(lab: Lab) -> None:
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "delay", seconds=1.0)
        t = await lab.terminal(retries=0)
        paying = asyncio.create_task(t.fee_payment(FINE, 20000, card()))
        assert await eventually(lambda: fee_state(lab) == "confirming")
        await lab.host.stop()  # the confirmation has reached finance; its answer is still on the way
        result = await paying
        assert result.response_code is None and t.state.pending_reversal() is not None
        await lab.restart_host(PATIENT)
        assert (await t.reverse()).approved
        assert lab.host.balance() == OPENING
        assert await eventually(lambda: fee_state(lab) == "cancelled", within=2.0)
        paid_nowhere(t, lab.host, lab.finance, FINE)

    run(tmp_path, test, PATIENT)


# ---- 11-12. the host while a fee payment waits ----

def test_other_terminals_are_served_while_a_fee_payment_waits_for_finance(tmp_path):
    async def test(lab: Lab) -> None:
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "delay", seconds=LATE)
        fees, shop = await lab.terminal(), await lab.terminal(SHOP_TID)
        finished: list[str] = []

        async def pay():
            paid = await fees.fee_payment(FINE, 20000, card())
            finished.append("fee payment")
            return paid

        paying = asyncio.create_task(pay())
        assert await eventually(lambda: fee_state(lab) == "confirming")
        bought = await shop.purchase(1250, resolve_card("approve"))
        finished.append("purchase")
        paid = await paying
        assert finished == ["purchase", "fee payment"]
        assert bought.approved and lab.host.balance("A-1001") == 5_000_000 - 1250
        paid_everywhere(paid, fees, lab.host, lab.finance, FINE)

    run(tmp_path, test, PATIENT)


def decoded(t: Terminal, payload: bytes) -> Message:
    return Codec(t.dialect).decode(answer_body(t.framing, payload))


async def send_again(address: tuple[str, int], frame: bytes, t: Terminal) -> Message:
    """Send a frame the terminal sent, on a connection of its own (a retransmission), and read the answer."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(frame)
        frames = FrameReader(t.framing)
        while not (payloads := frames.feed(await asyncio.wait_for(reader.read(65536), 5))):
            pass
        return decoded(t, payloads[0])
    finally:
        writer.close()


def test_fee_payment_retransmitted_while_confirming_gets_the_same_answer_and_is_charged_once(tmp_path):
    async def test(lab: Lab) -> None:
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "delay", seconds=LATE)
        t = await lab.terminal()
        assert isinstance(t.link, RecordingLink) and lab.host.address is not None
        paying = asyncio.create_task(t.fee_payment(FINE, 20000, card()))
        assert await eventually(lambda: fee_state(lab) == "confirming")
        again = await send_again(lab.host.address, t.link.sent[-1], t)
        paid = await paying
        assert again.fields == decoded(t, t.link.answers[-1]).fields and again[39] == "00"
        paid_everywhere(paid, t, lab.host, lab.finance, FINE)
        assert len(lab.host.fee_rows()) == 1 and lab.host.fees()[0].attempts == 1

    run(tmp_path, test, PATIENT)


@pytest.mark.parametrize("drops, code", [
    (0, "00"),
    (QUICK.confirm_attempts, "N4"),
], ids=["confirmed", "never-confirmed"])
def test_fee_payment_retransmitted_after_its_answer_gets_that_answer_again(tmp_path, drops, code):
    async def test(lab: Lab) -> None:
        if drops:
            lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "drop", times=drops)
        t = await lab.terminal()
        assert isinstance(t.link, RecordingLink) and lab.host.address is not None
        result = await t.fee_payment(FINE, 20000, card())
        assert result.response_code == code
        again = await send_again(lab.host.address, t.link.sent[-1], t)
        first = decoded(t, t.link.answers[-1])
        assert (again[39], again.get(59)) == (first[39], first[59])
        assert len(lab.host.fee_rows()) == 1
        if code == "00":
            paid_everywhere(result, t, lab.host, lab.finance, FINE)
        else:
            assert await eventually(lambda: fee_state(lab) == "cancelled")
            paid_nowhere(t, lab.host, lab.finance, FINE)

    run(tmp_path, test)


def test_two_terminals_paying_one_notice_at_once_pay_it_once(tmp_path):
    async def test(lab: Lab) -> None:
        lab.finance.bureau.faults.add(MSG_PAYMENT_CONFIRM, "delay", seconds=LATE)
        counters = (await lab.terminal(), await lab.terminal("10000003"))
        results = await asyncio.gather(counters[0].fee_payment(TUITION, 620000, card()),
                                       counters[1].fee_payment(TUITION, 620000, resolve_card("approve")))
        assert sorted(r.response_code for r in results) == ["00", "N1"]
        (paid,) = [r for r in results if r.approved]
        charged = (OPENING - lab.host.balance("A-1004"), 5_000_000 - lab.host.balance("A-1001"))
        assert charged == tuple(620000 if r.approved else 0 for r in results)
        (confirmation,) = lab.finance.confirmations(TUITION)
        assert (confirmation.trade_no, confirmation.state) == (paid.rrn, "confirmed")
        assert lab.finance.status(TUITION) == "paid"
        assert [f.trade_no for f in lab.host.fees() if f.state == "confirmed"] == [paid.rrn]
        assert all(t.state.pending_reversal() is None for t in counters)
        assert [e.rrn for t in counters for e in t.state.open_batch()] == [paid.rrn]

    run(tmp_path, test, PATIENT)
