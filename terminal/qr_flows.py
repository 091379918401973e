"""Seeing a QR payment through to its end: what a cashier's terminal does after showing a code or scanning one.

A merchant-presented order is paid (or not) while the terminal waits;
a scanned payment code may wait for the payer's password (09). Either way
the terminal asks until it knows, and when it stops waiting it makes sure
no wallet can still pay behind its back: it closes the order, or reverses
the request that made it. The rule: never a paid order the terminal does
not know about — whatever the host says last is in the terminal's state
(and batch), or a reversal is owed until the host takes it.

Time is injected: `sleep` waits, `clock` reads seconds (monotonic), so a
test can run a whole deadline without waiting it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from .messages import CLOSED, PAID_ORDER, PAYING, REASON_NO_ANSWER, REVERSED
from .results import TransactionResult
from .terminal import Terminal

Sleep = Callable[[float], Awaitable[object]]
Seconds = Callable[[], float]
Progress = Callable[[TransactionResult], None]
ENDED = PAID_ORDER | {CLOSED, REVERSED}
"""Order states nobody can change by waiting: paid (or refunded), closed, reversed."""


async def collect(
    terminal: Terminal, order: TransactionResult, deadline_s: float, interval_s: float, sleep: Sleep = asyncio.sleep,
    clock: Seconds = time.monotonic, progress: Progress | None = None,
) -> TransactionResult:
    """Wait for a wallet to pay a merchant-presented order (the result of `qr_order`); returns the last result.

    Queries every `interval_s` until the order is paid or ended, or
    `deadline_s` has passed; then closes it. The close's answer is the
    order's fate: closed, or paid when a wallet paid first (the terminal
    counts it). A close that gets no answer leaves the order's fate
    unknown, so the order's own request is reversed (reason 98): the host
    closes it, or refunds the wallet — owed until the host takes it.
    `progress` sees every result on the way.
    """
    order_no = _order_of(order)
    if order.status in ENDED:
        return order
    last = await _poll(terminal, order_no, deadline_s, interval_s, sleep, clock, progress)
    if last is not None:
        return last
    closing = await terminal.qr_close(order_no)
    _report(progress, closing)
    if closing.response_code is not None or not closing.sent:
        return closing
    cancelled = await terminal.qr_cancel(order_no, reason=REASON_NO_ANSWER)
    _report(progress, cancelled)
    return cancelled


async def collect_fee(
    terminal: Terminal, order: TransactionResult, deadline_s: float, interval_s: float, sleep: Sleep = asyncio.sleep,
    clock: Seconds = time.monotonic, progress: Progress | None = None,
) -> TransactionResult:
    """`collect` for an order that pays a fee notice (`fee_qr_order`), then the fee's fate: once a wallet paid,
    the host confirms it to the finance system; queries go on until the answer's notice says PAID, or the order
    comes back reversed (the finance system never confirmed it: the wallet was refunded), or the deadline —
    counted again from the payment — passes (then the last answer says where it stands)."""
    last = await collect(terminal, order, deadline_s, interval_s, sleep, clock, progress)
    if last.status != "paid":
        return last
    until = clock() + deadline_s
    while not _fee_settled(last) and clock() < until:
        await sleep(interval_s)
        last = await terminal.qr_query(_order_of(order))
        _report(progress, last)
    return last


def _fee_settled(result: TransactionResult) -> bool:
    return (result.notice or {}).get("notice_status") == "PAID" or result.status in ENDED - {"paid"}


async def settle_scan(
    terminal: Terminal, result: TransactionResult, deadline_s: float, interval_s: float, sleep: Sleep = asyncio.sleep,
    clock: Seconds = time.monotonic, progress: Progress | None = None,
) -> TransactionResult:
    """After a qr_sale answered 09, wait for the payer's password: query until the payment is paid or ended, or
    `deadline_s` has passed, then cancel it (reverse the qr_sale: the host cancels the payment, or refunds it
    when it was paid meanwhile). Any other result is returned as it is."""
    if result.operation != "qr_sale" or result.response_code != PAYING:
        return result
    order_no = _order_of(result)
    last = await _poll(terminal, order_no, deadline_s, interval_s, sleep, clock, progress)
    if last is not None:
        return last
    cancelled = await terminal.qr_cancel(order_no)
    _report(progress, cancelled)
    return cancelled


async def _poll(
    terminal: Terminal, order_no: str, deadline_s: float, interval_s: float, sleep: Sleep, clock: Seconds,
    progress: Progress | None,
) -> TransactionResult | None:
    """Query until the order has ended (that answer is returned) or the deadline passed (None)."""
    if deadline_s < 0 or interval_s <= 0:
        raise ValueError(f"deadline {deadline_s} s must be ≥ 0 and interval {interval_s} s > 0")
    end = clock() + deadline_s
    while (left := end - clock()) > 0:
        await sleep(min(interval_s, left))
        answer = await terminal.qr_query(order_no)
        _report(progress, answer)
        if answer.status in ENDED:
            return answer
    return None


def _order_of(result: TransactionResult) -> str:
    if result.order_no is None:
        raise ValueError(f"{result.operation} result names no order (response {result.response_code}): nothing to wait for")
    return result.order_no


def _report(progress: Progress | None, result: TransactionResult) -> None:
    if progress is not None:
        progress(result)
