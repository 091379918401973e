"""The QR order service: one order's life, whoever asks — a terminal over ISO 8583, a partner or a wallet over HTTP.

An order is created (a merchant-presented code to pay) or starts as a
scanned payment code; the wallet pays it, or it waits for the payer's
password ("paying"); it is closed unpaid when it expires or its creator
gives up; a paid order is refunded in parts, or reversed whole. Every
operation returns a `Change` — the order, its transactions row, the balance
change, the notification owed — and the caller commits it in one journal
Unit with its own messages, so an answer never leaves without its books.

The money moves on the order's transactions row, as a card sale's does:
pending while unpaid, approved once paid (posting the wallet account), closed
or reversed otherwise. Settlement reads those rows like card rows, with the
channel, the wallet's transaction ID and the order number on them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from possim.wire import money
from possim.wire.emv_qr import decode_mpm, dynamic_order_qr

from .journal import (
    APPROVED, CLOSED, PENDING, REVERSED, Journal, Notification, Order, Posting, QrRefund, Transaction, Unit,
)
from .partners import Partner
from .registry import Merchant
from .settings import QrSettings
from .wallets import WalletAccount, WalletDecline, WalletNetwork

CREATED, PAYING, PAID, ORDER_CLOSED, REFUNDED, ORDER_REVERSED = "created", "paying", "paid", "closed", "refunded", "reversed"
OPEN = (CREATED, PAYING)
MPM_DYNAMIC, MPM_STATIC, CPM = "mpm_dynamic", "mpm_static", "cpm"
MERCHANT_ACCOUNT_GUI = "com.possim.pay"
"""Sub-ID 00 of template 26 in the codes this host makes: whose merchant account scheme the code follows."""
COUNTRY = "CN"
_ORDER_BLOCK = 100
_PAYING_CODE = "09"
"""ISO 8583 "request in progress": the wallet waits for the payer's password."""


class QrRefusal(Exception):
    """An operation refused with nothing changed: `code` is the API's error code, `iso` the ISO 8583 response code."""

    def __init__(self, code: str, message: str, iso: str):
        super().__init__(message)
        self.code = code
        self.iso = iso


@dataclass(frozen=True)
class Change:
    """What one operation does to the journal; the caller adds it to its Unit."""

    orders: tuple[Order, ...] = ()
    insert: Transaction | None = None
    updates: tuple[Transaction, ...] = ()
    postings: tuple[Posting, ...] = ()
    refunds: tuple[QrRefund, ...] = ()
    notifications: tuple[Notification, ...] = ()

    @property
    def order(self) -> Order:
        return self.orders[-1]

    def unit_parts(self) -> dict[str, Any]:
        return {"insert": self.insert, "updates": self.updates, "postings": self.postings, "orders": self.orders,
                "refunds": self.refunds, "notifications": self.notifications}


@dataclass(frozen=True)
class RowKey:
    """Where a new transactions row goes: a terminal's request key, or the host's own for orders it originates."""

    terminal_id: str
    stan: str | None
    """None: the order number stands in for it (orders the host originates send no STAN)."""
    key_date: str
    business_date: str
    batch_number: str | None = None
    mti: str = "0200"
    processing_code: str | None = None
    rrn: str | None = None


class OrderService:
    def __init__(self, journal: Journal, wallets: WalletNetwork, settings: QrSettings, rng: random.Random,
                 rrn: Callable[[datetime], str], business_date: Callable[[datetime], str]):
        """`rrn` numbers the rows the service inserts, from the host's one RRN sequence; `business_date`
        is the host's calendar, so a row the service originates joins the same day as a terminal's."""
        self.journal = journal
        self.business_date = business_date
        self.wallets = wallets
        self.settings = settings
        self._rng = rng
        self._rrn = rrn
        self._next = self._end = 0

    # ---- creating ----

    def create(self, *, merchant: Merchant, amount: int, currency: str, now: datetime, key: RowKey,
               terminal_id: str | None, partner: Partner | None = None, out_order_no: str | None = None,
               expires_in: timedelta | None = None, notify_url: str | None = None, description: str | None = None,
               request_hash: str | None = None, kind: str = "qr_order") -> Change:
        """A dynamic merchant-presented order and its pending row: the code carries the amount and the order number."""
        order_no = self._order_no(now)
        cur = money.currency(currency)
        payload = dynamic_order_qr(
            merchant_account={"00": MERCHANT_ACCOUNT_GUI, "01": merchant.id}, mcc=merchant.mcc, currency=cur.numeric,
            amount_minor=amount, country=COUNTRY, name=merchant.name[:25], city=merchant.city[:15],
            reference=order_no, terminal_label=terminal_id,
        )
        at = _stamp(now)
        order = Order(
            order_no=order_no, kind=MPM_DYNAMIC, channel=None, merchant_id=merchant.id, terminal_id=terminal_id,
            partner_id=partner.id if partner else None, out_order_no=out_order_no, amount=amount, currency=cur.numeric,
            status=CREATED, paid_amount=0, refunded_amount=0, wallet_account=None, wallet_txn_id=None, payload=payload,
            notify_url=notify_url, description=description, request_hash=request_hash, transaction_id=None,
            created_at=at, expires_at=_stamp(now + (expires_in or self.settings.order_expiry)), paid_at=None,
            closed_at=None, updated_at=at,
        )
        row = self._row(order, key, kind, PENDING, "00", now)
        return Change(orders=(order,), insert=row)

    def scan(self, *, code: str, merchant: Merchant, terminal_id: str, amount: int, currency: str, now: datetime,
             key: RowKey) -> tuple[Change, str]:
        """A payment code the terminal scanned: paid at once, or paying until the payer types the password.

        Returns the change and the ISO response code (00, 09, or the wallet's decline: nothing then moves,
        and the row is journaled as declined).
        """
        order_no = self._order_no(now)
        at = _stamp(now)
        order = Order(
            order_no=order_no, kind=CPM, channel=None, merchant_id=merchant.id, terminal_id=terminal_id,
            partner_id=None, out_order_no=None, amount=amount, currency=currency, status=CREATED, paid_amount=0,
            refunded_amount=0, wallet_account=None, wallet_txn_id=None, payload=None, notify_url=None,
            description=None, request_hash=None, transaction_id=None, created_at=at,
            expires_at=_stamp(now + self.settings.paying_timeout), paid_at=None, closed_at=None, updated_at=at,
        )
        try:
            account = self.wallets.account_for_code(code, now)
        except WalletDecline as exc:
            closed = dataclasses.replace(order, status=ORDER_CLOSED, closed_at=at)
            return Change(orders=(closed,), insert=self._row(closed, key, "qr_sale", "declined", exc.code, now, exc.reason)), exc.code
        order = dataclasses.replace(order, channel=account.provider, wallet_account=account.name)
        if (refusal := self._refusal(account, amount, currency)) is not None:
            closed = dataclasses.replace(order, status=ORDER_CLOSED, closed_at=at)
            row = self._row(closed, key, "qr_sale", "declined", refusal.iso, now, str(refusal))
            return Change(orders=(closed,), insert=row), refusal.iso
        txn_id = self._wallet_txn_id(account, now)
        if self.wallets.needs_password(account, amount):
            paying = dataclasses.replace(order, status=PAYING, wallet_txn_id=txn_id)
            return Change(orders=(paying,), insert=self._row(paying, key, "qr_sale", PENDING, _PAYING_CODE, now)), _PAYING_CODE
        paid = self._paid(order, account, txn_id, now)
        row = self._row(paid, key, "qr_sale", APPROVED, "00", now)
        return Change(orders=(paid,), insert=dataclasses.replace(row, account_id=account.journal_account_id,
                                                                 posted_amount=amount),
                      postings=(Posting(account.journal_account_id, -amount),)), "00"

    # ---- the wallet's side ----

    def pay(self, *, payload: str, account: WalletAccount, now: datetime, amount: int | None = None,
            password: str | None = None, merchant: Callable[[str], Merchant | None] = lambda _: None) -> Change:
        """The wallet app scanned `payload` and pays it from `account`.

        A dynamic code names its order (62.05); a static one (01 = 11) names the
        merchant (26.01) and terminal (62.07), and the payer typed the amount:
        a new order is made and paid at once. The app has asked the payer's
        password when the wallet wants it, so nothing waits here.
        """
        decoded = decode_mpm(payload)
        if not decoded.valid:
            first = decoded.errors[0]
            raise QrRefusal("INVALID_REQUEST", f"payload: tag {first.tag} at offset {first.offset}: {first.message}", "30")
        fields = decoded.fields
        if fields.get("01") == "11":
            return self._pay_static(fields, account, amount, password, now, merchant)
        reference = (fields.get("62") or {}).get("05") if isinstance(fields.get("62"), dict) else None
        order = self.journal.order(reference) if reference else None
        if order is None or order.kind != MPM_DYNAMIC:
            raise QrRefusal("ORDER_NOT_FOUND", "the code names no order of this host (62.05)", "25")
        if _payload_amount(fields) != order.amount or (amount is not None and amount != order.amount):
            raise QrRefusal("AMOUNT_MISMATCH", f"the code's amount is not the order's {order.amount}", "13")
        self._check_password(account, order.amount, password)
        self._payable(order, now)
        if (refusal := self._refusal(account, order.amount, order.currency)) is not None:
            raise refusal
        paid = self._paid(order, account, self._wallet_txn_id(account, now), now)
        return self._settle_row(paid, now)

    def confirm(self, *, wallet_txn_id: str, account: WalletAccount, password: str, now: datetime) -> Change:
        """The payer typed the password for a scanned payment code that was waiting for it."""
        order = self.journal.order_by_wallet_txn(wallet_txn_id)
        if order is None or order.wallet_account != account.name:
            raise QrRefusal("PAYMENT_NOT_FOUND", "no payment of this account has that wallet transaction ID", "25")
        if order.status == PAID:
            return Change(orders=(order,))
        self._payable(order, now)
        if not self.wallets.check_password(account, password):
            raise QrRefusal("WRONG_PASSWORD", "the wallet password is wrong", "55")
        if (refusal := self._refusal(account, order.amount, order.currency)) is not None:
            raise refusal
        paid = self._paid(order, account, order.wallet_txn_id or wallet_txn_id, now)
        return self._settle_row(paid, now)

    # ---- closing, reversing, refunding ----

    def close(self, order: Order, now: datetime) -> Change:
        """Close an unpaid order (expired, or its creator gave up); closing a closed order changes nothing.

        A paid order is refused: closing must never hide money that moved.
        """
        if order.status in (PAID, REFUNDED):
            raise QrRefusal("ORDER_PAID", f"order {order.order_no} is paid: refund or reverse it", "00")
        if order.status not in OPEN:
            return Change(orders=(order,))
        at = _stamp(now)
        closed = dataclasses.replace(order, status=ORDER_CLOSED, closed_at=at, updated_at=at)
        updates = ()
        if (row := self._order_row(order)) is not None:
            updates = (dataclasses.replace(row, status=CLOSED, updated_at=at),)
        return Change(orders=(closed,), updates=updates, notifications=self._notify(closed, "order.closed", now))

    def reverse(self, order: Order, row: Transaction, now: datetime, reversal: dict[str, str | None]) -> Change:
        """A terminal's reversal of the request that made the order: unpaid, it closes; paid, the wallet gets it all back.

        Refused (nothing done) once refunds were made on it, as a card sale's reversal is.
        """
        at = _stamp(now)
        if order.refunded_amount:
            raise QrRefusal("ORDER_PAID", f"order {order.order_no} was refunded in part: reverse nothing on top", "00")
        marked = dataclasses.replace(row, status=REVERSED, reversed_at=at, updated_at=at, **reversal)
        if order.status in OPEN:
            closed = dataclasses.replace(order, status=ORDER_REVERSED, closed_at=at, updated_at=at)
            return Change(orders=(closed,), updates=(marked,), notifications=self._notify(closed, "order.closed", now))
        if order.status != PAID:
            return Change(orders=(order,))
        back = dataclasses.replace(order, status=ORDER_REVERSED, closed_at=at, updated_at=at)
        postings = (Posting(row.account_id, row.posted_amount),) if row.account_id and row.posted_amount else ()
        return Change(orders=(back,), updates=(marked,), postings=postings,
                      notifications=self._notify(back, "order.closed", now))

    def refund(self, order: Order, *, amount: int, out_refund_no: str, now: datetime, key: RowKey) -> Change:
        """Give back part of a paid order; repeated refunds never exceed what was paid."""
        if order.status not in (PAID, REFUNDED):
            raise QrRefusal("ORDER_NOT_PAID", f"order {order.order_no} is {order.status}: nothing to refund", "25")
        remaining = order.paid_amount - order.refunded_amount
        if amount > remaining:
            raise QrRefusal("REFUND_EXCEEDS_REMAINING", f"refund {amount} is more than the {remaining} that remains", "13")
        paid_row = self._order_row(order)
        if paid_row is None or order.wallet_account is None:
            raise QrRefusal("ORDER_NOT_PAID", f"order {order.order_no} has no payment on record", "25")
        account = self.wallets.account(order.wallet_account)
        account_id = account.journal_account_id if account else paid_row.account_id
        at = _stamp(now)
        total = order.refunded_amount + amount
        refunded = dataclasses.replace(order, refunded_amount=total, status=REFUNDED if total == order.paid_amount else PAID,
                                       updated_at=at)
        row = dataclasses.replace(
            self._row(refunded, key, "qr_refund", APPROVED, "00", now), amount=amount, account_id=account_id,
            posted_amount=-amount, original_id=paid_row.id, channel=order.channel, wallet_txn_id=order.wallet_txn_id,
        )
        original = dataclasses.replace(paid_row, refunded_amount=paid_row.refunded_amount + amount, updated_at=at)
        return Change(
            orders=(refunded,), insert=row, updates=(original,), postings=(Posting(account_id or "", amount),),
            refunds=(QrRefund(order.order_no, out_refund_no, amount, order.currency, None, at),),
            notifications=self._notify(refunded, "order.refunded", now),
        )

    def close_expired(self, now: datetime) -> int:
        """Close and commit what is due — unpaid orders past their validity, payment codes nobody confirmed
        in time — as the timers tick and before anyone reads an order's state; returns how many."""
        due = self.journal.orders_due(_stamp(now))
        for order in due:
            self.journal.record(Unit(at=_stamp(now), **self.close(order, now).unit_parts()))
        return len(due)

    # ---- helpers ----

    def _pay_static(self, fields: dict[str, Any], account: WalletAccount, amount: int | None, password: str | None,
                    now: datetime, merchant: Callable[[str], Merchant | None]) -> Change:
        template = fields.get("26") if isinstance(fields.get("26"), dict) else {}
        shop = merchant(template.get("01", "")) if template.get("00") == MERCHANT_ACCOUNT_GUI else None
        if shop is None:
            raise QrRefusal("ORDER_NOT_FOUND", "the static code names no merchant of this host (26.01)", "03")
        fixed = _payload_amount(fields)
        if fixed is not None and amount is not None and amount != fixed:
            raise QrRefusal("AMOUNT_MISMATCH", f"the code's amount is {fixed}", "13")
        amount = fixed if fixed is not None else amount
        if amount is None or amount <= 0:
            raise QrRefusal("INVALID_REQUEST", "amount: a static code without an amount needs the payer's amount", "13")
        self._check_password(account, amount, password)
        currency = str(fields.get("53", shop.currency))
        extra = fields.get("62") if isinstance(fields.get("62"), dict) else {}
        at = _stamp(now)
        order = Order(
            order_no=self._order_no(now), kind=MPM_STATIC, channel=None, merchant_id=shop.id,
            terminal_id=extra.get("07"), partner_id=None, out_order_no=None, amount=amount, currency=currency,
            status=CREATED, paid_amount=0, refunded_amount=0, wallet_account=None, wallet_txn_id=None,
            payload=None, notify_url=None, description=None, request_hash=None,
            transaction_id=None, created_at=at, expires_at=at, paid_at=None, closed_at=None, updated_at=at,
        )
        if (refusal := self._refusal(account, amount, currency)) is not None:
            raise refusal
        paid = self._paid(order, account, self._wallet_txn_id(account, now), now)
        key = self.host_key(paid, now)
        row = self._row(paid, key, "qr_sale", APPROVED, "00", now)
        return Change(orders=(paid,), insert=dataclasses.replace(row, account_id=account.journal_account_id, posted_amount=amount),
                      postings=(Posting(account.journal_account_id, -amount),))

    def host_key(self, order: Order, now: datetime, suffix: str = "") -> RowKey:
        """The key of a row the host originates: the order number stands in for a STAN, so it meets no terminal's."""
        return RowKey(order.terminal_id or "", order.order_no + suffix, f"{now.month:02d}{now.day:02d}",
                      self.business_date(now))

    def _settle_row(self, paid: Order, now: datetime) -> Change:
        """The pending row of a paid order becomes the approved payment that posts the wallet account."""
        row = self._order_row(paid)
        account = self.wallets.account(paid.wallet_account or "")
        assert row is not None and account is not None
        at = _stamp(now)
        approved = dataclasses.replace(
            row, status=APPROVED, response_code="00", account_id=account.journal_account_id, posted_amount=paid.amount,
            channel=paid.channel, wallet_txn_id=paid.wallet_txn_id, updated_at=at,
        )
        return Change(orders=(paid,), updates=(approved,), postings=(Posting(account.journal_account_id, -paid.amount),),
                      notifications=self._notify(paid, "order.paid", now))

    def _paid(self, order: Order, account: WalletAccount, txn_id: str, now: datetime) -> Order:
        at = _stamp(now)
        return dataclasses.replace(order, status=PAID, channel=account.provider, wallet_account=account.name,
                                   wallet_txn_id=txn_id, paid_amount=order.amount, paid_at=at, updated_at=at)

    def _check_password(self, account: WalletAccount, amount: int, password: str | None) -> None:
        """The app asked the payer's password when the wallet wants it for this amount: it must be right."""
        if self.wallets.needs_password(account, amount) and (
                password is None or not self.wallets.check_password(account, password)):
            raise QrRefusal("WRONG_PASSWORD", "the wallet password is missing or wrong", "55")

    def _payable(self, order: Order, now: datetime) -> None:
        if order.status == PAID or order.status == REFUNDED:
            raise QrRefusal("ORDER_PAID", f"order {order.order_no} is already paid", "94")
        if order.status not in OPEN:
            raise QrRefusal("ORDER_CLOSED", f"order {order.order_no} is {order.status}", "25")
        if order.expires_at <= _stamp(now):
            raise QrRefusal("ORDER_EXPIRED", f"order {order.order_no} expired at {order.expires_at}", "25")

    def _refusal(self, account: WalletAccount, amount: int, currency: str) -> QrRefusal | None:
        code = self.wallets.decide(account, amount, currency, self.journal.balance(account.journal_account_id) or 0)
        if code is None:
            return None
        reasons = {"51": "insufficient wallet balance", "57": "the wallet holds another currency",
                   "62": "the wallet account is frozen"}
        return QrRefusal("WALLET_DECLINED", reasons.get(code, f"the wallet declined ({code})"), code)

    def _order_row(self, order: Order) -> Transaction | None:
        return self.journal.transaction_by_id(order.transaction_id) if order.transaction_id else None

    def _row(self, order: Order, key: RowKey, kind: str, status: str, code: str, now: datetime,
             reason: str | None = None) -> Transaction:
        at = _stamp(now)
        return Transaction(
            business_date=key.business_date, terminal_id=key.terminal_id, merchant_id=order.merchant_id,
            stan=key.stan or order.order_no, key_date=key.key_date, mti=key.mti, processing_code=key.processing_code,
            amount=order.amount, currency=order.currency, pan_masked=None, pan_hash=None, entry_mode=None,
            response_code=code, auth_code=None, rrn=key.rrn or self._rrn(now), status=status,
            decline_step="wallet" if status == "declined" else None, decline_reason=reason, account_id=None,
            posted_amount=0, fingerprint=hashlib.sha256(f"{kind}|{order.order_no}".encode()).hexdigest()[:32],
            response_mti=None, response_fields=None, created_at=at, updated_at=at, kind=kind,
            batch_number=key.batch_number, channel=order.channel, wallet_txn_id=order.wallet_txn_id,
            order_no=order.order_no,
        )

    def _notify(self, order: Order, event: str, now: datetime) -> tuple[Notification, ...]:
        """The signed callback a partner's order owes (docs/openapi.yaml, webhooks)."""
        if order.partner_id is None or not order.notify_url:
            return ()
        at = _stamp(now)
        notify_id = f"N{order.order_no}{self._rng.randrange(16 ** 8):08x}"
        body = json.dumps({"notify_id": notify_id, "event": event, "order": order_json(order)}, separators=(",", ":"))
        return (Notification(notify_id, order.partner_id, order.notify_url, event, body, 0, at, "pending", None, at, at),)

    def _order_no(self, now: datetime) -> str:
        """YYMMDD and a 10-digit host-wide sequence: 16 digits, unique across restarts (62.05 holds 25)."""
        if self._next >= self._end:
            self._next = self.journal.reserve("qr_order", _ORDER_BLOCK)
            self._end = self._next + _ORDER_BLOCK
        number, self._next = self._next, self._next + 1
        return f"{now:%y%m%d}{number % 10 ** 10:010d}"

    def _wallet_txn_id(self, account: WalletAccount, now: datetime) -> str:
        return self.wallets.txn_id(account.provider, now, self.journal.reserve(f"wallet_txn:{account.provider}", 1))


def order_json(order: Order) -> dict[str, Any]:
    """An order as the API and the notifications show it (docs/openapi.yaml, Order)."""
    return {
        "order_no": order.order_no, "out_order_no": order.out_order_no, "partner_id": order.partner_id,
        "merchant_id": order.merchant_id, "terminal_id": order.terminal_id, "kind": order.kind,
        "channel": order.channel, "amount": order.amount, "currency": order.currency, "status": order.status,
        "paid_amount": order.paid_amount, "refunded_amount": order.refunded_amount,
        "wallet_txn_id": order.wallet_txn_id, "payload": order.payload, "created_at": order.created_at,
        "expires_at": order.expires_at, "paid_at": order.paid_at, "closed_at": order.closed_at,
    }


def _payload_amount(fields: dict[str, Any]) -> int | None:
    """Tag 54 in minor units of tag 53's currency; None when the code carries no amount."""
    text = fields.get("54")
    if not isinstance(text, str):
        return None
    try:
        return money.parse_major(text, money.currency(str(fields.get("53", "156"))))
    except ValueError:
        return None


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")
