"""The POS terminal: sign-on, the transaction set of docs/transactions.md, reversals, advices
and batch close, over a `Link`.

Reversal discipline (docs/messages.md, REFERENCE "Terminal reversal
discipline"): before a request that can move money leaves, the reversal it
would need is committed to the state file. A readable answer cancels it. No
answer, or an unreadable one, keeps it: the terminal sends it at once (0400,
then 0401 repeats) and forgets it only when the host answers 0410 with 00.
If the host stays silent it is still owed, and goes before the next purchase.

Advice discipline: a kind whose dialect entry says `on_timeout: repeat`
(refund, offline, qr_refund) is queued in the state before it is first
sent, its card data (if it has any) sealed under the TMK, and goes again as
0221 until the host answers anything at all. Every online request first
sends the owed reversal (and stops if it is not taken), then the queued advices.

QR payments follow the same disciplines with no card: a qr_order or
qr_sale is reversed when unanswered, a qr_refund is an advice. An order
joins the batch (in the batch it was made in, as the host counts it) once
an answer says it is paid: the qr_sale's 00, or a later query, close or
refund answer. Polling an order to its end is terminal/qr_flows.py.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import date, datetime
from typing import Any, Callable

from possim.hsm_mock.key_download import KeyDownloadError, clear_key, unpack
from possim.hsm_mock.pinblock import PinBlockError
from possim.hsm_mock.message_mac import MAC_SCHEMES, MessageMac
from possim.wire.clock import Clock, system_clock
from possim.wire.codec import Codec, CodecError
from possim.wire.emv_cpm import authorization_fields, decode_cpm
from possim.wire.framing import FramingError, frame
from possim.wire.message import Message
from possim.wire.payment_code import looks_like_emv_cpm
from possim.wire.qr_data import QrDataError
from possim.wire.trace import trace_record

from .advice_store import seal, split_card_data, unseal
from .batch_close import BatchCloser
from .cards import Card
from .emv import ChipRead, chip_data
from .link import Link, LinkError, LinkTimeout
from .messages import (
    CHIP_ENTRIES,
    CLOSED,
    ENTRY_MODES,
    FEE_KINDS,
    FEE_RESPONSE_TEXT,
    OPEN_ORDER,
    PAID_ORDER,
    PAYING,
    QR_KINDS,
    QR_MAKES_ORDER,
    REASON_CANCELLED,
    REASON_NO_ANSWER,
    REASON_UNREADABLE,
    REVERSED,
    OriginalRef,
    answer_body,
    answer_problem,
    balance_of,
    build_request,
    build_reversal,
    build_sign_on,
    check_amount,
    check_purchase,
    qr_answer_problem,
    qr_data_of,
    qr_response_text,
    qr_time,
    response_text,
    reversal_original,
    reversal_reuses_stan,
)
from .pin_pad import EncryptedPin, under_dukpt, under_working_key
from .profile import TerminalProfile
from .results import AdviceOutcome, AdviceRun, BatchCloseResult, ReversalOutcome, TerminalError, TransactionResult, Unreadable
from .state import Advice, BatchEntry, PendingReversal, QrOrder, TerminalState

APPROVED = "00"
OFFLINE_APPROVED = "Y1"
"""EMV's authorization response code for an offline approval: the result's code for `offline`."""
VOIDABLE = {"sale": "sale_void", "completion": "completion_void"}
"""What voids each kind of the open batch."""
ORDER_NO_LONGEST = 64
"""An order number longer than this is no host's: refused before anything is sent."""
_MACED_KINDS = ("10", "20", "22", "40", "42", "50", "32")
"""Request kinds (MTI digits 2-3) that carry a MAC, and whose answers must."""


class Terminal:
    """One POS terminal. Calls on one terminal run one at a time; many terminals can share a loop."""

    def __init__(
        self,
        profile: TerminalProfile,
        link: Link,
        state: TerminalState,
        clock: Clock = system_clock,
        trace: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
    ):
        if state.tid != profile.tid:
            raise ValueError(f"state {state.path} is terminal {state.tid!r}, profile is {profile.tid!r}")
        self.profile = profile
        self.link = link
        self.state = state
        self.clock = clock
        self.trace = trace
        """Receives a redacted trace record for every message sent and received."""
        self.rewrite: Callable[[Message], None] | None = None
        """Replay's hook for a step's field overrides (terminal/replay/runner.py), None otherwise: called with every
        request just before it is encoded and MACed, it may change the request in place. The terminal then holds
        the changed request as the one it made: the answer is checked against it, its reversal or advice built from it."""
        self.rng = rng if rng is not None else random.SystemRandom()
        """Source of the chip's unpredictable numbers (9F37); a seeded Random makes them reproducible."""
        self.dialect = profile.load_dialect()
        self.codec = Codec(self.dialect)
        self.framing = self.dialect.framing
        self._tmk = profile.master_key
        self._dukpt = profile.dukpt_setup
        self._initial_key = self._dukpt.initial_key if self._dukpt is not None else None
        maced = self.dialect.mac_scheme in MAC_SCHEMES and "mac" in self.dialect.roles
        self._mac = MessageMac(self.codec) if maced and self._tmk is not None else None
        self._busy = asyncio.Lock()

    # flows

    async def sign_on(self) -> TransactionResult:
        """0800 sign-on. Not held back by an owed reversal: a host may need the sign-on to take it."""
        async with self._busy:
            now = self.clock()
            request = build_sign_on(
                self.dialect, tid=self.profile.tid, mid=self.profile.mid, stan=self.state.next_stan(),
                now=now, batch_number=self.state.batch_number, track_key=self.profile.track_key,
            )
            data = self._frame(request)
            try:
                answer = await self._ask(request, data)
            except LinkError as exc:
                if not exc.sent:
                    raise
                return self._unanswered("signon", request, str(exc), isinstance(exc, LinkTimeout))
            except Unreadable as exc:
                return self._unanswered("signon", request, f"answer unreadable: {exc}", False)
            if answer[39] == APPROVED:
                refused = self._take_working_keys(answer)
                if refused is not None:
                    return replace(self._answered("signon", request, answer), approved=False, message=refused)
                batch = self.dialect.get_role(answer, "batch_number")
                self.state.mark_signed_on(now.date(), int(batch) if batch and batch.isdigit() else None)
            return self._answered("signon", request, answer)

    async def purchase(
        self, amount: int, card: Card, manual: bool = False, processing_code: str = "000000", pin: str | None = None,
        entry: str = "swipe",
    ) -> TransactionResult:
        """A sale (operation "sale") of `amount` minor units in the profile's currency; approved ones join the open batch.

        `entry` is how the card was read: swipe, chip, contactless or manual
        (`manual=True` is the same as entry manual). `pin` is what the
        cardholder types on the PIN pad; it leaves only as an encrypted PIN
        block. Raises LinkError when the host cannot be reached and nothing was sent.
        """
        check_purchase(amount, processing_code)
        if manual and entry not in ("swipe", "manual"):
            raise ValueError(f"manual=True and entry {entry!r} contradict each other")
        return await self._online(
            "sale", amount, card, "manual" if manual else entry, pin, processing_code=processing_code
        )

    async def void(
        self, stan: str | None = None, card: Card | None = None, entry: str = "swipe", pin: str | None = None
    ) -> TransactionResult:
        """Void a sale or completion of the open batch: the one with STAN `stan`, else the last one not voided.

        Sent as sale_void / completion_void for the original's amount, naming
        it by RRN (37) and, in cup, batch · STAN · date (61). The card may be
        presented again (`card`); it must be the original's. On approval
        the original is marked voided; it still counts as a debit, the void as a credit.
        """
        candidates = [e for e in self.state.open_batch() if e.kind in VOIDABLE and not e.voided and e.rrn]
        if stan is not None:
            candidates = [e for e in candidates if e.stan == stan]
        if not candidates:
            which = f"with STAN {stan}" if stan is not None else ""
            raise TerminalError(
                f"terminal {self.profile.tid}: nothing to void: no approved sale or completion {which} that is not "
                f"voided yet in open batch {self.state.batch_number}".replace("  ", " ")
            )
        target = candidates[-1]
        if card is not None and card.masked_pan != target.masked_pan:
            raise TerminalError(f"card {card.masked_pan} is not the card of STAN {target.stan} ({target.masked_pan})")
        return await self._online(
            VOIDABLE[target.kind], target.amount, card, entry, pin, original=_reference(target), voids=target.stan
        )

    async def refund(
        self, amount: int, card: Card, rrn: str, original_date: date | None = None, entry: str = "swipe"
    ) -> TransactionResult:
        """Give back (part of) a sale or completion named by its RRN: an advice (0220), never reversed.

        An unanswered refund stays queued (card data sealed under the TMK)
        and goes again as 0221 before the next request; it joins the batch
        when the host approves it. `original_date` fills cup 61's date when
        the original is not in this terminal's state. Needs a TMK.
        """
        check_amount(amount)
        known = self.state.entry_by_rrn(rrn)
        original = _reference(known) if known is not None else OriginalRef(rrn)
        if original_date is not None:
            original = replace(original, day=original_date.strftime("%m%d"))
        return await self._online("refund", amount, card, entry, None, original=original)

    async def preauth(self, amount: int, card: Card, pin: str | None = None, entry: str = "swipe") -> TransactionResult:
        """Hold `amount` on the card's account (0100); kept in the batch (counted nowhere) for a later completion."""
        check_amount(amount)
        return await self._online("preauth", amount, card, entry, pin)

    async def preauth_void(
        self, rrn: str, auth_code: str, amount: int, card: Card, entry: str = "swipe", pin: str | None = None
    ) -> TransactionResult:
        """Release the hold of the pre-auth with this RRN and authorization code."""
        check_amount(amount)
        return await self._online("preauth_void", amount, card, entry, pin, original=self._preauth_reference(rrn, auth_code))

    async def completion(
        self, amount: int, card: Card, rrn: str, auth_code: str, entry: str = "swipe", pin: str | None = None
    ) -> TransactionResult:
        """Take `amount` of the pre-auth with this RRN and authorization code (a debit of the batch)."""
        check_amount(amount)
        return await self._online("completion", amount, card, entry, pin, original=self._preauth_reference(rrn, auth_code))

    async def balance(self, card: Card, pin: str | None = None, entry: str = "swipe") -> TransactionResult:
        """Ask the available balance; the result's `balance` is field 54's amount. Nothing joins the batch."""
        return await self._online("balance", None, card, entry, pin)

    async def offline(self, amount: int, card: Card, entry: str = "chip") -> TransactionResult:
        """Approve a sale offline: nothing is sent now. It joins the batch with a terminal-made
        authorization code and waits as an advice (0220) for `send_advices`, the next online
        request or the batch close. Needs a TMK, to seal the card data the advice will carry."""
        check_amount(amount)
        self._check_entry(entry)
        tmk = self._advice_key("an offline sale")
        async with self._busy:
            self._refuse_during_close()
            now = self.clock()
            stan = self.state.next_stan()
            spec = self.dialect.transaction("offline")
            chip = self._chip(card, amount, spec.processing_code, now, pin=False, offline=True) if entry in CHIP_ENTRIES else None
            code = f"{OFFLINE_APPROVED}{stan[-4:]}"
            request = build_request(
                self.dialect, "offline", tid=self.profile.tid, mid=self.profile.mid, stan=stan, now=now, amount=amount,
                currency=self.profile.currency, card=card, entry=entry, pin_pad=self.profile.pin_pad,
                batch_number=self.state.batch_number, chip=chip, local_auth_code=code,
            )
            self._frame(request)  # refuse now what could never be sent
            advice = self._advice_of("offline", request, card.masked_pan, now, tmk)
            entry_row = BatchEntry(
                advice.batch_number, stan, None, code, amount, self.profile.currency, card.masked_pan, now,
                reversal_original(request), "offline",
            )
            self.state.queue_advice(advice, entry_row)
            return TransactionResult(
                operation="offline", tid=self.profile.tid, request_mti=request.mti, mti=None, stan=stan,
                response_code=OFFLINE_APPROVED, approved=True, rrn=None, auth_code=code, amount=amount,
                currency=self.profile.currency, masked_pan=card.masked_pan,
                message="approved offline; advice queued", timed_out=False, sent=False, queued=True,
            )

    async def send_advices(self) -> AdviceRun:
        """Send the owed reversal, then every queued advice (0220, repeats 0221) until each is answered.

        Each advice gets 1 + `reversal_retries` tries; the round stops at
        the first one still unanswered, so the queue keeps its order.
        """
        async with self._busy:
            prior, outcomes = await self._backlog()
            remaining = len(self.state.queued_advices())
            if prior is not None and not prior.acknowledged:
                message = f"advices not sent: {prior.message}"
            else:
                message = f"{len(outcomes)} advice(s) sent, {remaining} still queued"
            return AdviceRun(self.profile.tid, tuple(outcomes), remaining, prior, message)

    async def reverse(self) -> TransactionResult:
        """Send the reversal still owed, or else reverse the last approved reversible transaction of the open batch.

        A reversal the host does not take stays owed, like any other.
        """
        async with self._busy:
            owed = self.state.pending_reversal()
            if owed is None:
                self._refuse_during_close()
                reversible = [
                    e for e in self.state.open_batch() if self.dialect.transaction(e.kind).on_timeout == "reverse"
                ]
                if not reversible:
                    raise TerminalError(
                        f"terminal {self.profile.tid}: nothing to reverse (no reversal owed, "
                        f"no approved purchase in open batch {self.state.batch_number})"
                    )
                last = reversible[-1]
                owed = PendingReversal(
                    last.original, last.batch_number, REASON_CANCELLED, None, 0, last.masked_pan, self.clock()
                )
                self.state.save_reversal(owed)
            return self._reversal_result(owed, await self._deliver(owed))

    async def batch_close(self) -> BatchCloseResult:
        """Close the open batch as docs/transactions.md "Batch close" says; call again to resume an interrupted one
        (terminal/batch_close.py).

        First asks the state of every order of the batch still open here: a
        wallet that paid since the last answer counts in the totals, as the host counts it.
        """
        async with self._busy:
            if self.state.close_progress().phase is None:
                await self._refresh_orders()
            return await BatchCloser(self).close()

    # QR

    async def fee_query(self, pay_code: str) -> TransactionResult:
        """Look a payment notice up (docs/fees.md): `approved` when it can be paid; `notice` says what is due, to
        whom, from whom. Nothing is charged, nothing is reversed."""
        return await self._online("fee_query", None, None, "swipe", None, qr={"pay_code": _pay_code(pay_code)})

    async def fee_payment(self, pay_code: str, amount: int, card: Card, pin: str | None = None,
                          entry: str = "swipe") -> TransactionResult:
        """Pay a notice by card, exactly its amount due: the host charges the card and confirms the payment to
        the finance system before it answers. Reversed when unanswered, like a sale; approved ones join the
        batch as debits."""
        check_amount(amount)
        return await self._online("fee_payment", amount, card, entry, pin, qr={"pay_code": _pay_code(pay_code)})

    async def fee_qr_order(self, pay_code: str, amount: int) -> TransactionResult:
        """A QR order for a notice's amount due, to show the payer (docs/fees.md): the host makes it only for an
        unpaid notice and exactly its amount. Once a wallet pays it, the host confirms the fee to the finance
        system; a query's `notice` says PAID (with the confirmation number) when it has — or the order comes
        back reversed, the wallet refunded, when the finance system never confirms it."""
        check_amount(amount)
        return await self._online("qr_order", amount, None, "swipe", None, qr={"pay_code": _pay_code(pay_code)})

    async def qr_order(self, amount: int) -> TransactionResult:
        """Create a merchant-presented order for `amount` minor units: the answer gives its order number, the EMV
        payload to show the payer and when it expires.

        Reversed when unanswered (the host then closes the order, or refunds
        the wallet that paid it already). It joins the batch only once a
        query, close or refund answer says it is paid.
        """
        check_amount(amount)
        return await self._online("qr_order", amount, None, "swipe", None)

    async def qr_query(self, order_no: str) -> TransactionResult:
        """Ask the state of an order; `approved` when it is paid. A payment learned here joins the batch."""
        return await self._online("qr_query", None, None, "swipe", None, qr={"order_no": _order_no(order_no)})

    async def qr_close(self, order_no: str) -> TransactionResult:
        """Close an unpaid order so no wallet can pay it any more. The answer's status is what the order is after:
        closed, or paid when a wallet paid first (then it joins the batch, and `approved` is set)."""
        return await self._online("qr_close", None, None, "swipe", None, qr={"order_no": _order_no(order_no)})

    async def qr_scan(self, code: str, amount: int) -> TransactionResult:
        """Take `amount` with a code the payer shows: a wallet payment code (digits) goes as a qr_sale; an EMV
        consumer-presented code (base64) is a card, sold as one (kind `sale`, its card data from the code).

        A qr_sale answers 00 (paid, into the batch) or 09: the wallet waits
        for the payer's password; qr_flows.settle_scan polls it and cancels
        it when it does not come. Both are reversed when unanswered. The
        code is judged by the host, not here: anything of digits is sent.
        """
        check_amount(amount)
        text = code.strip()
        if looks_like_emv_cpm(text):
            scanned = decode_cpm(text)
            return await self._online("sale", amount, None, "swipe", None, card_fields=authorization_fields(scanned),
                                      scanned_pan=scanned.masked_pan() or "")
        stray = next((i for i, ch in enumerate(text) if not ("0" <= ch <= "9")), None)
        if not text or stray is not None:
            where = f"a character other than a digit at offset {stray}" if stray is not None else "nothing"
            raise ValueError(f"scanned code: {where}; expected a wallet payment code (digits) "
                             "or an EMV consumer-presented code (base64)")
        return await self._online("qr_sale", amount, None, "swipe", None, qr={"payment_code": text})

    async def qr_refund(self, order_no: str, amount: int) -> TransactionResult:
        """Give back (part of) a paid order: an advice (0220), repeated (0221) until answered, never reversed.

        It carries no card, so nothing is sealed and no TMK is needed. The
        host answers 13 for more than remains, 25 for an order not paid (or
        not this terminal's); an approved refund joins the batch as a credit.
        """
        check_amount(amount)
        return await self._online("qr_refund", amount, None, "swipe", None, qr={"order_no": _order_no(order_no)})

    async def qr_cancel(self, order_no: str, reason: str = REASON_CANCELLED) -> TransactionResult:
        """Reverse the request that made an order of this terminal (its qr_order or qr_sale): the host closes it
        unpaid, or gives the wallet its money back. Owed until the host acknowledges it, like any reversal.

        A reversal owed from before goes first; while it is not taken this
        one is not sent. An order refunded in part is refused here: the host
        would acknowledge the reversal and undo nothing.
        """
        async with self._busy:
            self._refuse_during_close()
            order = self.state.qr_order(_order_no(order_no))
            if order is None:
                raise TerminalError(f"terminal {self.profile.tid}: order {order_no} is not one this terminal made "
                                    f"(its state {self.state.path} does not know it)")
            if order.refunded:
                raise TerminalError(f"order {order.order_no} was refunded in part ({order.refunded}): "
                                    "reverse nothing on top of a refund")
            if order.status in (CLOSED, REVERSED):
                raise TerminalError(f"order {order.order_no} is {order.status} already: nothing to cancel")
            owed = self.state.pending_reversal()
            prior = None
            if owed is not None and (owed.batch_number, owed.original_stan) != (order.batch_number, order.stan):
                prior = await self._deliver(owed)
                if not prior.acknowledged:
                    return replace(self._blocked(order.kind, order.amount, None, prior), operation="reversal",
                                   request_mti="0400", order_no=order.order_no,
                                   message=f"reversal of order {order.order_no} not sent: {prior.message}")
                owed = None
            if owed is None:
                owed = PendingReversal(order.original, order.batch_number, reason, None, 0, "", self.clock())
                self.state.save_reversal(owed)
            outcome = await self._deliver(owed)
            after = self.state.qr_order(order.order_no)
            return replace(self._reversal_result(owed, outcome), prior_reversal=prior, order_no=order.order_no,
                           status=after.status if after is not None and outcome.acknowledged else None,
                           channel=order.channel, wallet_txn_id=order.wallet_txn_id)

    async def _refresh_orders(self) -> None:
        """Ask the state of the open batch's orders still open here; stops quietly when the host cannot be reached."""
        for order in self.state.qr_orders(OPEN_ORDER, self.state.batch_number):
            request = build_request(
                self.dialect, "qr_query", tid=self.profile.tid, mid=self.profile.mid, stan=self.state.next_stan(),
                now=self.clock(), amount=None, currency=self.profile.currency, card=None, pin_pad=self.profile.pin_pad,
                batch_number=self.state.batch_number, qr={"order_no": order.order_no},
            )
            try:
                await self._send("qr_query", request, None, self.clock(), None, False)
            except LinkError:
                return

    def _qr_learned(self, kind: str, request: Message, answer: Message, now: datetime) -> tuple[BatchEntry | None, QrOrder | None]:
        """What a QR answer teaches the state: the order it made (or the known one it names, as it is now) and, when
        it newly says the order is paid, the batch entry of that payment."""
        if answer[39] not in (APPROVED, PAYING):
            return None, None
        data = qr_data_of(self.dialect, answer)  # qr_answer_problem has read it already
        previous = None
        if kind in QR_MAKES_ORDER:
            order = QrOrder(
                data["order_no"], kind, self.state.batch_number, request[11], _amount(request) or 0, request[49],
                data["status"], reversal_original(request), now, answer.get(37),
            )
        else:
            previous = self.state.qr_order(data["order_no"])
            if previous is None:
                return None, None
            order = previous
        order = replace(
            order, status=data["status"], channel=data.get("channel") or order.channel,
            wallet_txn_id=data.get("wallet_txn_id") or order.wallet_txn_id,
            refunded=int(data["refunded"]) if data.get("refunded", "").isdigit() else order.refunded,
            expires_at=data.get("expires_at") or order.expires_at,
        )
        if order.status not in PAID_ORDER or (previous is not None and previous.status in PAID_ORDER):
            return None, order
        paid = BatchEntry(order.batch_number, order.stan, order.rrn, None, order.amount, order.currency, "",
                          order.created, order.original, order.kind, order_no=order.order_no)
        return paid, order

    def _with_qr(self, result: TransactionResult, request: Message, answer: Message | None) -> TransactionResult:
        """A QR result: the order's number and state from the answer (the number asked about when none came)."""
        try:
            data = qr_data_of(self.dialect, answer) if answer is not None else {}
            asked = qr_data_of(self.dialect, request)
        except QrDataError:
            data, asked = {}, {}
        status = data.get("status")
        order_no = data.get("order_no") or asked.get("order_no")
        approved = result.approved
        message = result.message
        if answer is not None:
            fee_text = FEE_RESPONSE_TEXT.get(result.response_code or "") if "pay_code" in asked else None
            message = fee_text or qr_response_text(result.response_code)
        if result.operation in ("qr_query", "qr_close") and result.response_code == APPROVED:
            approved = status in PAID_ORDER
            message = f"order {order_no} is {status}"
        notice = {k: data[k] for k in ("pay_code", "notice_status", "confirm_no") if k in data} or None
        return replace(
            result, approved=approved, message=message, order_no=order_no, status=status, notice=notice,
            channel=data.get("channel"), wallet_txn_id=data.get("wallet_txn_id"), payload=data.get("payload"),
            expires_at=qr_time(data.get("expires_at")),
            refunded=int(data["refunded"]) if data.get("refunded", "").isdigit() else None,
        )

    # one online transaction

    async def _online(
        self, kind: str, amount: int | None, card: Card | None, entry: str, pin: str | None,
        original: OriginalRef | None = None, processing_code: str | None = None, voids: str | None = None,
        qr: dict[str, str] | None = None, card_fields: dict[int, str] | None = None, scanned_pan: str | None = None,
    ) -> TransactionResult:
        """Any online kind: backlog first, then the request, with the reversal or advice discipline its dialect entry says.

        `qr` is a QR kind's QR data; `card_fields` a card read from a scanned
        code (`scanned_pan` its masked PAN), sent instead of `card`.
        """
        spec = self.dialect.transaction(kind)
        self._check_entry(entry)
        if pin is not None and not self.profile.pin_pad:
            raise TerminalError(f"terminal {self.profile.tid} has no PIN pad (pin_pad: false)")
        if pin is not None and card is None:
            raise TerminalError("a PIN needs the card presented (it is bound to the PAN)")
        tmk = self._advice_key(f"a {kind}") if spec.on_timeout == "repeat" and card is not None else None
        async with self._busy:
            self._refuse_during_close()
            prior, advices = await self._backlog()
            if prior is not None and not prior.acknowledged:
                return self._blocked(kind, amount, card, prior)
            now = self.clock()
            encrypted = self._encrypt_pin(pin, card) if pin is not None and card is not None else None
            stan = self.state.next_stan()
            chip = None
            if card is not None and entry in CHIP_ENTRIES:
                chip = self._chip(card, amount or 0, processing_code or spec.processing_code, now, pin is not None)
            request = build_request(
                self.dialect, kind, tid=self.profile.tid, mid=self.profile.mid, stan=stan, now=now, amount=amount,
                currency=self.profile.currency, card=card, entry=entry, pin_pad=self.profile.pin_pad,
                batch_number=self.state.batch_number, pin=encrypted, chip=chip, original=original,
                processing_code=processing_code, qr=qr, card_fields=card_fields,
            )
            masked = card.masked_pan if card is not None else scanned_pan or self._voided_pan(voids)
            if spec.on_timeout == "repeat":
                result = await self._send_advice_now(kind, request, masked or "", now, tmk)
            else:
                result = await self._send(kind, request, masked, now, voids, spec.on_timeout == "reverse")
            return replace(result, prior_reversal=prior, prior_advices=tuple(advices))

    async def _send(
        self, kind: str, request: Message, masked: str | None, now: datetime, voids: str | None, reversed_: bool
    ) -> TransactionResult:
        """Send a request that is reversed on no answer (or, for a balance, a QR query or close, simply reported)."""
        data = self._frame(request)
        reversal = None
        if reversed_:
            reversal = PendingReversal(
                reversal_original(request), self.state.batch_number, REASON_NO_ANSWER, None, 0, masked or "", now
            )
            self.state.save_reversal(reversal)
        try:
            answer = await self._ask(request, data)
        except LinkError as exc:
            if not exc.sent:
                if reversal is not None:
                    self.state.drop_reversal()
                raise
            outcome = await self._deliver(reversal) if reversal is not None else None
            return self._unanswered(kind, request, str(exc), isinstance(exc, LinkTimeout), masked, outcome)
        except Unreadable as exc:
            outcome = None
            if reversal is not None:
                reversal = replace(reversal, reason=REASON_UNREADABLE)
                self.state.save_reversal(reversal)
                outcome = await self._deliver(reversal)
            return self._unanswered(kind, request, f"answer unreadable: {exc}", False, masked, outcome)
        if kind in QR_KINDS:
            paid, order = self._qr_learned(kind, request, answer, now)
            if reversed_:
                self.state.answered(paid, order)
            elif order is not None:
                self.state.qr_learned(order, paid)
            return self._answered(kind, request, answer, masked)
        approved = None
        if answer[39] == APPROVED and kind not in ("balance", "fee_query"):  # inquiries move no money
            approved = BatchEntry(
                self.state.batch_number, request[11], answer.get(37), answer.get(38), _amount(request) or 0,
                self.profile.currency, masked or "", now, reversal_original(request), kind, original_stan=voids,
            )
        self.state.answered(approved)
        result = self._answered(kind, request, answer, masked)
        return replace(result, balance=balance_of(answer)) if kind == "balance" else result

    def _voided_pan(self, stan: str | None) -> str | None:
        """A void sent without the card shows (and keeps) the voided entry's masked PAN."""
        return next((e.masked_pan for e in self.state.open_batch() if e.stan == stan), None) if stan else None

    async def _send_advice_now(
        self, kind: str, request: Message, masked: str, now: datetime, tmk: bytes | None
    ) -> TransactionResult:
        """An online advice (refund, qr_refund): queued before it leaves, then sent once; unanswered, it stays queued
        for 0221."""
        self._frame(request)
        advice = self.state.queue_advice(self._advice_of(kind, request, masked, now, tmk))
        outcome, answer = await self._deliver_advice(advice, tries=1, drop_unsent=True)
        if answer is not None:
            return self._answered(kind, request, answer, masked or None)
        result = TransactionResult(
            operation=kind, tid=self.profile.tid, request_mti=request.mti, mti=None, stan=request[11],
            response_code=None, approved=False, rrn=None, auth_code=None, amount=_amount(request),
            currency=request.get(49), masked_pan=masked or None,
            message=f"{outcome.message}; queued as an advice, repeated (0221) until the host answers",
            timed_out=outcome.timed_out, sent=True, queued=True,
        )
        return self._with_qr(result, request, None) if kind in QR_KINDS else result

    # advices

    def _advice_key(self, what: str) -> bytes:
        if self._tmk is None:
            raise TerminalError(
                f"terminal {self.profile.tid} has no TMK: {what} must be kept as an advice with its card data"
                " encrypted under the TMK (set tmk in terminals.yaml)"
            )
        return self._tmk

    def _advice_of(self, kind: str, request: Message, masked: str, now: datetime, tmk: bytes | None) -> Advice:
        """The advice to keep: the request without its card data, which goes sealed under the TMK (an advice
        without a card, a qr_refund, seals nothing and needs no TMK)."""
        safe, card_fields = split_card_data(request.fields)
        sealed = None
        if card_fields:
            sealed = seal(tmk if tmk is not None else self._advice_key(f"a {kind}"), card_fields)
        return Advice(kind, self.state.batch_number, Message(request.mti, safe), sealed, masked, 0, now)

    async def _backlog(self) -> tuple[ReversalOutcome | None, list[AdviceOutcome]]:
        """The owed reversal, then (once it is taken) the queued advices, oldest first; stops at the first left unanswered."""
        prior = None
        owed = self.state.pending_reversal()
        if owed is not None:
            prior = await self._deliver(owed)
            if not prior.acknowledged:
                return prior, []
        outcomes = []
        for advice in self.state.queued_advices():
            outcome, _ = await self._deliver_advice(advice, tries=1 + self.profile.reversal_retries)
            outcomes.append(outcome)
            if not outcome.answered:
                break
        return prior, outcomes

    async def _deliver_advice(
        self, advice: Advice, tries: int, drop_unsent: bool = False
    ) -> tuple[AdviceOutcome, Message | None]:
        """Send an advice (0220, then 0221) until the host answers anything; its card data is unsealed per send."""
        problem, timed_out, mti = "", False, None
        tmk = self._advice_key(f"advice STAN {advice.stan}") if advice.sealed_card is not None else None
        for _ in range(tries):
            card_fields = unseal(tmk, advice.sealed_card) if tmk is not None and advice.sealed_card is not None else {}
            repeat_mti = advice.message.mti[:3] + ("1" if advice.attempts else "0")
            request = Message(repeat_mti, {**advice.message.fields, **card_fields})
            data = self._frame(request)
            advice = replace(advice, attempts=advice.attempts + 1)
            self.state.advice_attempt(advice)
            try:
                answer = await self._ask(request, data)
            except LinkError as exc:
                problem, timed_out = str(exc), isinstance(exc, LinkTimeout)
                if not exc.sent:
                    advice = replace(advice, attempts=advice.attempts - 1)
                    if drop_unsent:
                        self.state.drop_advice(advice)
                        raise
                    self.state.advice_attempt(advice)
                    break
                mti = request.mti
                continue
            except Unreadable as exc:
                problem, timed_out, mti = f"answer unreadable: {exc}", False, request.mti
                continue
            code = answer[39]
            joins = None
            qr = advice.kind in QR_KINDS
            if code == APPROVED and advice.kind != "offline":  # an offline sale is in the batch already
                joins = BatchEntry(
                    advice.batch_number, advice.stan, answer.get(37), answer.get(38), advice.amount or 0,
                    advice.message.get(49) or self.profile.currency, advice.masked_pan, advice.created,
                    reversal_original(advice.message), advice.kind,
                    order_no=qr_data_of(self.dialect, advice.message).get("order_no") if qr else None,
                )
            self.state.advice_answered(advice, code, answer.get(37), joins)
            if qr:  # the refund's answer tells the order's refunded total, and that it was paid
                paid, order = self._qr_learned(advice.kind, request, answer, advice.created)
                if order is not None:
                    self.state.qr_learned(order, paid)
            return AdviceOutcome(
                advice.kind, advice.stan, True, code, advice.attempts, request.mti, False,
                f"{advice.kind} advice STAN {advice.stan} answered {code} ({response_text(code)})",
            ), answer
        return AdviceOutcome(
            advice.kind, advice.stan, False, None, advice.attempts, mti, timed_out,
            f"{advice.kind} advice STAN {advice.stan} still queued: {problem}",
        ), None

    # checks and chip

    def _refuse_during_close(self) -> None:
        if self.state.close_progress().phase is not None:
            raise TerminalError(
                f"terminal {self.profile.tid}: batch {self.state.batch_number} is being closed "
                "(its totals were answered): finish it with batch_close() first"
            )

    def _check_entry(self, entry: str) -> None:
        if entry not in ENTRY_MODES:
            raise ValueError(f"entry {entry!r} must be one of {', '.join(ENTRY_MODES)}")

    def _preauth_reference(self, rrn: str, auth_code: str) -> OriginalRef:
        known = self.state.entry_by_rrn(rrn)
        reference = _reference(known) if known is not None else OriginalRef(rrn)
        return replace(reference, auth_code=auth_code)

    def _chip(self, card: Card, amount: int, processing_code: str, now: datetime, pin: bool, offline: bool = False) -> bytes:
        """Field 55 for this read: a fresh unpredictable number, and the next ATC committed before it leaves."""
        read = ChipRead(
            amount=amount, currency=self.profile.currency, day=now.date(), transaction_type=processing_code[:2],
            unpredictable_number=self.rng.getrandbits(32).to_bytes(4, "big"), atc=self.state.next_atc(),
            pin=pin, pin_pad=self.profile.pin_pad, offline=offline,
        )
        return chip_data(card, read)

    def _take_working_keys(self, answer: Message) -> str | None:
        """Store the working keys a sign-on answer carries once their check values match; else why not."""
        block = self.dialect.get_role(answer, "working_keys")
        if block is None or self._tmk is None:
            return None
        try:
            cryptograms, _ = unpack(self._tmk, bytes.fromhex(block))
        except (KeyDownloadError, ValueError) as exc:
            return f"sign-on failed: {exc}; keys not stored"
        if self.profile.track_key and cryptograms.data_key is None:
            return "sign-on failed: a track key was asked for and none came; keys not stored"
        self.state.save_working_keys(cryptograms.pin_key, cryptograms.mac_key, cryptograms.data_key)
        return None

    def _encrypt_pin(self, pin: str, card: Card) -> EncryptedPin:
        """The PIN block for field 52: under the next DUKPT key, or under the sign-on's working PIN key."""
        try:
            if self._dukpt is not None and self._initial_key is not None:
                return under_dukpt(self._initial_key, self.state.next_ksn(self._dukpt.initial_ksn), pin, card.pan)
            keys = self.state.working_keys()
            if keys is None or self._tmk is None:
                raise TerminalError(f"terminal {self.profile.tid} has no working PIN key: sign on first")
            return under_working_key(clear_key(self._tmk, keys[0]), pin, card.pan)
        except PinBlockError as exc:
            raise TerminalError(f"PIN not accepted: {exc}") from None

    def _mac_key(self) -> bytes | None:
        """The working MAC key in clear, for one message; None before a sign-on delivered keys."""
        keys = self.state.working_keys()
        if keys is None or self._tmk is None:
            return None
        return clear_key(self._tmk, keys[1])

    # reversal delivery

    async def _deliver(self, owed: PendingReversal) -> ReversalOutcome:
        """Send an owed reversal now: the first try and up to `reversal_retries` repeats.

        Stops early when the host cannot be reached at all, or answers with
        something other than 00: repeating at once would not change either.
        """
        problem, timed_out, code, mti = "", False, None, None
        for _ in range(1 + self.profile.reversal_retries):
            if owed.reversal_stan is None:
                stan = owed.original_stan if reversal_reuses_stan(self.dialect) else self.state.next_stan()
                owed = replace(owed, reversal_stan=stan)
                self.state.save_reversal(owed)
            request = build_reversal(
                self.dialect, owed.original, stan=owed.reversal_stan, now=self.clock(),
                reason=owed.reason, repeat=owed.attempts > 0,
            )
            data = self._frame(request)
            try:
                answer = await self._ask(request, data)
            except LinkError as exc:
                problem, timed_out = str(exc), isinstance(exc, LinkTimeout)
                if not exc.sent:
                    break
                mti, owed = request.mti, replace(owed, attempts=owed.attempts + 1)
                self.state.save_reversal(owed)
                continue
            except Unreadable as exc:
                problem, timed_out = f"answer unreadable: {exc}", False
                mti, owed = request.mti, replace(owed, attempts=owed.attempts + 1)
                self.state.save_reversal(owed)
                continue
            mti, owed, code = request.mti, replace(owed, attempts=owed.attempts + 1), answer[39]
            if code == APPROVED:
                self.state.reversal_acknowledged(owed)
                return self._outcome(owed, True, mti, code, False, f"reversal of STAN {owed.original_stan} acknowledged")
            self.state.save_reversal(owed)
            problem, timed_out = f"host answered {answer.mti} with {code} ({response_text(code)})", False
            break
        return self._outcome(
            owed, False, mti, code, timed_out, f"reversal of STAN {owed.original_stan} still owed: {problem}"
        )

    def _outcome(
        self, owed: PendingReversal, acknowledged: bool, mti: str | None, code: str | None, timed_out: bool, message: str
    ) -> ReversalOutcome:
        return ReversalOutcome(
            original_stan=owed.original_stan, stan=owed.reversal_stan, reason=owed.reason,
            acknowledged=acknowledged, attempts=owed.attempts, mti=mti, response_code=code,
            timed_out=timed_out, message=message,
        )

    # one exchange

    def _frame(self, request: Message) -> bytes:
        """Encode before anything is recorded, so a request that cannot be sent leaves no trace in the state."""
        return frame(self.framing, self.encode(request))

    def encode(self, request: Message) -> bytes:
        """The message body as this terminal sends it: purchases and reversals MACed once a sign-on delivered a MAC key."""
        if self.rewrite is not None:
            self.rewrite(request)
        key = self._mac_key() if self._mac is not None and request.mti[1:3] in _MACED_KINDS else None
        if key is None or self._mac is None:
            return self.codec.encode(request)
        return self._mac.sign(request, key)

    async def _ask(self, request: Message, data: bytes) -> Message:
        envelope_end = self.framing.length_size + self.framing.envelope_size
        self._trace("->", data[envelope_end:], data[:envelope_end])
        try:
            payload = await self.link.exchange(data, self.profile.timeout)
            body = answer_body(self.framing, payload)
        except FramingError as exc:
            raise Unreadable(str(exc)) from None
        self._trace("<-", body, payload[: len(payload) - len(body)])
        try:
            answer = self.codec.decode(body)
        except CodecError as exc:
            raise Unreadable(str(exc)) from None
        problem = answer_problem(request, answer) or qr_answer_problem(self.dialect, request, answer)
        if problem is None and self._mac is not None and self._mac.field_for(request) in request:
            key = self._mac_key()
            problem = self._mac.verify(body, key) if key is not None else "no MAC key to check the answer"
            problem = f"answer {problem}" if problem else None
        if problem is not None:
            raise Unreadable(problem)
        return answer

    def _trace(self, direction: str, body: bytes, prefix: bytes) -> None:
        if self.trace is not None:
            self.trace(trace_record(self.clock(), direction, getattr(self.link, "peer", self.profile.host), self.codec,
                                    body, prefix))

    # results

    def _answered(self, operation: str, request: Message, answer: Message, masked_pan: str | None = None) -> TransactionResult:
        code = answer[39]
        result = TransactionResult(
            operation=operation, tid=self.profile.tid, request_mti=request.mti, mti=answer.mti,
            stan=request[11], response_code=code, approved=code == APPROVED, rrn=answer.get(37),
            auth_code=answer.get(38), amount=_amount(request), currency=request.get(49),
            masked_pan=masked_pan, message=response_text(code), timed_out=False, sent=True,
        )
        if operation in FEE_KINDS:
            return self._with_notice(result, answer)
        return self._with_qr(result, request, answer) if operation in QR_KINDS else result

    def _with_notice(self, result: TransactionResult, answer: Message) -> TransactionResult:
        """A fee result: the notice as the answer describes it, and the fee's own words for its codes."""
        try:
            data = qr_data_of(self.dialect, answer)
        except QrDataError:
            data = {}
        notice: dict[str, Any] = dict(data)
        if notice.get("amount_due", "").isdigit():
            notice["amount_due"] = int(notice["amount_due"])
        message = FEE_RESPONSE_TEXT.get(result.response_code or "", result.message)
        return replace(result, notice=notice or None, message=message)

    def _unanswered(
        self, operation: str, request: Message, problem: str, timed_out: bool, masked_pan: str | None = None,
        reversal: ReversalOutcome | None = None,
    ) -> TransactionResult:
        message = problem if reversal is None else f"{problem}; {reversal.message}"
        result = TransactionResult(
            operation=operation, tid=self.profile.tid, request_mti=request.mti, mti=None, stan=request[11],
            response_code=None, approved=False, rrn=None, auth_code=None, amount=_amount(request),
            currency=request.get(49), masked_pan=masked_pan, message=message,
            timed_out=timed_out, sent=True, reversal=reversal,
        )
        return self._with_qr(result, request, None) if operation in QR_KINDS else result

    def _reversal_result(self, owed: PendingReversal, outcome: ReversalOutcome) -> TransactionResult:
        return TransactionResult(
            operation="reversal", tid=self.profile.tid, request_mti=outcome.mti or "0400",
            mti="0410" if outcome.response_code is not None else None, stan=outcome.stan,
            response_code=outcome.response_code, approved=outcome.acknowledged, rrn=None, auth_code=None,
            amount=owed.amount, currency=owed.original.get(49), masked_pan=owed.masked_pan, message=outcome.message,
            timed_out=outcome.timed_out, sent=outcome.attempts > owed.attempts, reversal=outcome,
        )

    def _blocked(self, kind: str, amount: int | None, card: Card | None, prior: ReversalOutcome) -> TransactionResult:
        return TransactionResult(
            operation=kind, tid=self.profile.tid, request_mti=self.dialect.transaction(kind).mti, mti=None, stan=None,
            response_code=None, approved=False, rrn=None, auth_code=None, amount=amount,
            currency=self.profile.currency, masked_pan=card.masked_pan if card is not None else None,
            message=f"{kind} not sent: {prior.message}", timed_out=False, sent=False, prior_reversal=prior,
        )


def _reference(entry: BatchEntry) -> OriginalRef:
    """How a later request names `entry`: its RRN, authorization code, batch, STAN and date."""
    return OriginalRef(entry.rrn or "", entry.auth_code, entry.batch_number, entry.stan, entry.time.strftime("%m%d"))


def _amount(request: Message) -> int | None:
    return int(request[4]) if 4 in request else None


def _order_no(order_no: str) -> str:
    """An order number as typed, checked before anything is sent (the host judges whether it knows it)."""
    text = order_no.strip()
    if not text or len(text) > ORDER_NO_LONGEST or not text.isascii() or not text.isprintable() or " " in text:
        raise ValueError(f"order number must be 1 to {ORDER_NO_LONGEST} visible ASCII characters without spaces")
    return text


def _pay_code(code: str) -> str:
    """A payment notice's code as typed or scanned: digits only (spaces a cashier types between groups are
    dropped); whether it is a code the finance system knows is for the host to find out."""
    text = "".join(code.split())
    if not text.isdigit() or not 10 <= len(text) <= 30:
        raise ValueError("payment code must be 10 to 30 digits")
    return text
