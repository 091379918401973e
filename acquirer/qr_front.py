"""QR requests from terminals over ISO 8583: order, query, close, scan, refund, and their reversals.

The terminal's QR data travels in the dialect's `qr_data` field (wire/qr_data.py:
order number, payment code, status …); kinds and codes are dialect data
(docs/qr.md). Creating an order, scanning a code and refunding are
transactions with their own row, so a retransmission gets its first answer
and a reversal finds its original, as for cards; a query or a close only
reads or changes the order they name, and is answered from its state.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from possim.wire import money
from possim.wire.message import Message
from possim.wire.qr_data import QrDataError, decode_qr_data, encode_qr_data

from .fee_desk import CONFIRMING, fee_fields
from .journal import DECLINED, FeePayment, Order, Transaction, Unit
from .pipeline import CardData, Context, Outcome, fingerprint, run, scenario_rules, terminal_signed_on
from .qr_orders import OPEN, PAID, PAYING, REFUNDED, Change, OrderService, QrRefusal, RowKey
from .reply import Reply, shaped

if TYPE_CHECKING:
    from .core import HostCore, _Request
    from .rules import Rule

log = logging.getLogger("possim.host")

QR_KINDS = frozenset({"qr_order", "qr_query", "qr_close", "qr_sale", "qr_refund"})
REVERSIBLE = frozenset({"qr_order", "qr_sale"})
"""Kinds whose reversal undoes an order: closes it unpaid, or gives the wallet its money back."""
_ECHO = (3, 4, 7, 11, 25, 41, 42, 49)
_NEEDS_AMOUNT = frozenset({"qr_order", "qr_sale", "qr_refund"})
_NEEDS = {"qr_query": "order_no", "qr_close": "order_no", "qr_refund": "order_no", "qr_sale": "payment_code"}


class QrFront:
    def __init__(self, host: HostCore, orders: OrderService):
        self._host = host
        self.orders = orders

    def handle(self, req: _Request, kind_name: str, rule: Rule | None) -> Reply:
        host, message = self._host, req.message
        ctx = Context(message, req.now, req.business_date, host._services, CardData(None, None, False), rule,
                      session=host.journal.terminal(message[41]), kind=host.dialect.transaction_of(message))
        outcome = run((terminal_signed_on, scenario_rules), ctx)
        data: dict[str, str] = {}
        if outcome.approved:
            outcome, data = self._readable(message, kind_name)
        if not outcome.approved or ctx.merchant is None:
            outcome = outcome if not outcome.approved else Outcome("03", "terminal", "the terminal has no merchant")
            return self._declined(req, kind_name, outcome, rule)
        try:
            if kind_name == "qr_order" and data.get("pay_code"):
                return host.fees.qr_order(req, ctx, data["pay_code"], rule, self)
            if kind_name == "qr_order":
                return self._order(req, ctx, rule)
            if kind_name == "qr_sale":
                return self._scan(req, ctx, data["payment_code"], rule)
            order = host.journal.order(data["order_no"])
            if order is None or order.terminal_id != message[41]:
                raise QrRefusal("ORDER_NOT_FOUND", f"order {data['order_no']} is not one of terminal {message[41]}", "25")
            if kind_name == "qr_query":
                self.orders.close_expired(req.now)
                return self._answer(req, "00", host.journal.order(order.order_no) or order, rule)
            if kind_name == "qr_close":
                return self._close(req, order, rule)
            return self._refund(req, ctx, order, rule)
        except QrRefusal as refusal:
            return self._declined(req, kind_name, Outcome(refusal.iso, "qr", str(refusal)), rule)

    # ---- kinds ----

    def _order(self, req: _Request, ctx: Context, rule: Rule | None) -> Reply:
        assert ctx.merchant is not None
        message = req.message
        change = self.orders.create(merchant=ctx.merchant, amount=int(message[4]), currency=message[49], now=req.now,
                                    key=self._key(req, ctx), terminal_id=message[41])
        return self._record(req, change, "00", rule)

    def _scan(self, req: _Request, ctx: Context, code: str, rule: Rule | None) -> Reply:
        assert ctx.merchant is not None
        message = req.message
        change, iso = self.orders.scan(code=code, merchant=ctx.merchant, terminal_id=message[41], amount=int(message[4]),
                                       currency=message[49], now=req.now, key=self._key(req, ctx))
        return self._record(req, change, iso, rule, reason=change.insert.decline_reason if change.insert else None)

    def _close(self, req: _Request, order: Order, rule: Rule | None) -> Reply:
        try:
            change = self.orders.close(order, req.now)
        except QrRefusal as refusal:
            if refusal.code != "ORDER_PAID":
                raise
            return self._answer(req, "00", order, rule, note="close of a paid order: answered with its state")
        return self._record(req, change, "00", rule, row=False)

    def _refund(self, req: _Request, ctx: Context, order: Order, rule: Rule | None) -> Reply:
        message = req.message
        if order.transaction_id is not None and self._host.journal.fee_payment(order.transaction_id) is not None:
            raise QrRefusal("FEE_ORDER", f"order {order.order_no} paid a fee notice: a fee is refunded by its collecting"
                                         " agency, not at the terminal", "12")
        if message[49] != order.currency:
            raise QrRefusal("CURRENCY_MISMATCH", f"currency {message[49]} is not the order's {order.currency}", "30")
        change = self.orders.refund(order, amount=int(message[4]), out_refund_no=f"T{message[41]}{req.key_date}{message[11]}",
                                    now=req.now, key=self._key(req, ctx))
        return self._record(req, change, "00", rule)

    # ---- reversal (from the host's 0400 flow) ----

    def reverse(self, original: Transaction, message: Message, req: _Request) -> tuple[Change | None, str]:
        """What a reversal of `original` (an order or a scan) changes, and the note to journal with it."""
        order = self._host.journal.order(original.order_no or "")
        if order is None:
            return None, f"transaction {original.id} names no QR order: nothing reversed"
        fields = {"reversal_mti": message.mti, "reversal_stan": message[11], "reversal_reason": message.get(39)}
        try:
            change = self.orders.reverse(order, original, req.now, fields)
        except QrRefusal as refusal:
            return None, f"does not reverse transaction {original.id}: {refusal}"
        was = "paid: the wallet is refunded" if order.status == PAID else "unpaid: closed"
        return change, f"reverses transaction {original.id} (order {order.order_no} {was})"

    # ---- building answers ----

    def _readable(self, message: Message, kind_name: str) -> tuple[Outcome, dict[str, str]]:
        """The request's QR data and amount, or the format error (30) naming the field and tag."""
        dialect = self._host.dialect
        field = dialect.roles.get("qr_data")
        if kind_name in _NEEDS_AMOUNT:
            missing = [str(n) for n in (4, 49) if n not in message]
            if missing:
                return Outcome("30", "fields", f"missing mandatory field {', '.join(missing)}"), {}
            if not message[4].isdigit() or int(message[4]) == 0:
                return Outcome("13", "fields", "amount is zero or not numeric"), {}
            try:
                money.currency(message[49])
            except ValueError:
                return Outcome("30", "fields", f"currency {message[49]!r} is not an ISO 4217 numeric code"), {}
        needed = _NEEDS.get(kind_name)
        raw = dialect.get_role(message, "qr_data") if field else None
        if needed is None:  # an order may still name a fee notice it pays (docs/fees.md)
            try:
                return Outcome("00"), decode_qr_data(raw) if raw is not None else {}
            except QrDataError as exc:
                return Outcome("30", "fields", f"field {field}: {exc}"), {}
        if raw is None:
            return Outcome("30", "fields", f"missing mandatory field {field or 'qr_data'} (QR data: {needed})"), {}
        try:
            data = decode_qr_data(raw)
        except QrDataError as exc:
            return Outcome("30", "fields", f"field {field}: {exc}"), {}
        if needed not in data:
            return Outcome("30", "fields", f"field {field}: no {needed} in the QR data"), {}
        return Outcome("00"), data

    def _key(self, req: _Request, ctx: Context) -> RowKey:
        message = req.message
        return RowKey(message[41], message[11], req.key_date, req.business_date,
                      ctx.session.batch_number if ctx.session else None, message.mti, message.get(3),
                      self._host._rrn(req.now))

    def _record(self, req: _Request, change: Change, code: str, rule: Rule | None, reason: str | None = None,
                row: bool = True, fee_payments: tuple[FeePayment, ...] = ()) -> Reply:
        host = self._host
        response = self._response(req, code, change.order, fee_payments[0] if fee_payments else None)
        insert = change.insert
        if row and insert is not None:
            response[37] = insert.rrn or host._rrn(req.now)
            insert = _answered(insert, req.message, response)
        data = host._frame(response, req.envelope)
        parts = {**change.unit_parts(), "insert": insert}
        host.journal.record(Unit((host._entry_in(req, reason), host._entry_out(req, response, reason)), at=req.at,
                                 fee_payments=fee_payments, **parts))
        return shaped(data, rule)

    def _answer(self, req: _Request, code: str, order: Order, rule: Rule | None, note: str | None = None) -> Reply:
        host = self._host
        response = self._response(req, code, order)
        data = host._frame(response, req.envelope)
        host.journal.record(Unit((host._entry_in(req, note), host._entry_out(req, response)), at=req.at))
        return shaped(data, rule)

    def _declined(self, req: _Request, kind_name: str, outcome: Outcome, rule: Rule | None) -> Reply:
        """A refusal: journaled as a declined row when the request was a transaction, else as messages only."""
        host, message = self._host, req.message
        response = host._response(message, _ECHO, outcome.code, req.now)
        if kind_name in ("qr_query", "qr_close"):
            data = host._frame(response, req.envelope)
            host.journal.record(Unit((host._entry_in(req, outcome.reason),
                                      host._entry_out(req, response, outcome.reason)), at=req.at))
            return shaped(data, rule)
        response[37] = host._rrn(req.now)
        amount = message.get(4)
        row = Transaction(
            business_date=req.business_date, terminal_id=message[41], merchant_id=message.get(42), stan=message[11],
            key_date=req.key_date, mti=message.mti, processing_code=message.get(3),
            amount=int(amount) if amount and amount.isdigit() else None, currency=message.get(49), pan_masked=None,
            pan_hash=None, entry_mode=message.get(22), response_code=outcome.code, auth_code=None, rrn=response[37],
            status=DECLINED, decline_step=outcome.step, decline_reason=outcome.reason, account_id=None,
            posted_amount=0, fingerprint="", response_mti=None, response_fields=None,
            created_at=req.at, updated_at=req.at, kind=kind_name,
        )
        data = host._frame(response, req.envelope)
        host.journal.record(Unit((host._entry_in(req, outcome.reason), host._entry_out(req, response, outcome.reason)),
                                 insert=_answered(row, message, response), at=req.at))
        return shaped(data, rule)

    def _response(self, req: _Request, code: str, order: Order, fee: FeePayment | None = None) -> Message:
        """The answer with the order's QR data; an order that pays a fee notice also says where the fee stands."""
        host = self._host
        response = host._response(req.message, _ECHO, code, req.now)
        if "qr_data" in host.dialect.roles:
            if fee is None and order.transaction_id is not None:
                fee = host.journal.fee_payment(order.transaction_id)
            fields = _qr_fields(order) | (fee_fields(fee) if fee is not None else {})
            if fee is not None and fee.state == CONFIRMING and order.status == PAID:
                fields["status"] = PAYING  # not paid for the terminal's batch until the finance system confirms it
            host.dialect.set_role(response, "qr_data", encode_qr_data(fields))
        return response


def _qr_fields(order: Order) -> dict[str, str]:
    values = {"order_no": order.order_no, "status": order.status, "expires_at": _compact(order.expires_at)}
    if order.payload and order.status in OPEN:
        values["payload"] = order.payload
    if order.channel:
        values["channel"] = order.channel
    if order.wallet_txn_id and order.status in (PAID, REFUNDED, "reversed"):
        values["wallet_txn_id"] = order.wallet_txn_id
    if order.paid_amount:
        values["paid"] = str(order.paid_amount)
    if order.refunded_amount:
        values["refunded"] = str(order.refunded_amount)
    return values


def _compact(stamp: str) -> str:
    """YYYYMMDDhhmmss of a journal timestamp."""
    return stamp[:19].replace("-", "").replace("T", "").replace(":", "")


def _answered(row: Transaction, request: Message, response: Message) -> Transaction:
    """The row as the terminal's request made it: its answer kept for a retransmission, its fingerprint the request's."""
    row.response_mti = response.mti
    row.response_fields = {str(n): v for n, v in response.fields.items()}
    row.rrn = response.get(37, row.rrn)
    row.fingerprint = fingerprint(request, None)
    return row
