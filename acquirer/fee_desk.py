"""Government fees paid at the POS: the host's half of the closed loop (docs/fees.md).

A fee payment is one terminal request with three parties behind it: the
host looks the payment notice up at the finance system, charges the card
for exactly the amount due, then confirms the payment to the finance
system, and only then answers the terminal. Every way this can fail ends in
one of two states — paid and confirmed everywhere, or paid nowhere:

- the notice cannot be read (finance silent): declined 91, nothing charged;
- the notice is unknown, paid, expired, cancelled, or the amount is not the
  amount due: declined with its own code, nothing charged;
- the card is declined: nothing to confirm;
- the confirmation goes unanswered: sent again with the same trade number
  (the finance system answers "already paid" to a repeat it already took),
  up to `confirm_attempts`; still nothing, or a refusal, and the card
  payment is reversed here and the terminal told N4 (or the refusal's code);
  a confirmation that may have reached the finance system is then cancelled
  there, retried with back-off until acknowledged;
- the terminal gives up and reverses: the card payment is reversed as any
  purchase, and the confirmation cancelled at the finance system.

The waits happen in a coroutine the transport awaits (Reply.later), so the
host goes on serving every other terminal meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from possim.fixtures import FixtureError, fixture_path, load_fixture

from possim.wire.nontax import (
    MSG_CONFIRM_CANCEL, MSG_NOTICE_QUERY, MSG_PAYMENT_CONFIRM, RESULT_ALREADY_PAID, RESULT_DAY_RECONCILED,
    RESULT_NOTHING_TO_CANCEL, RESULT_OK, NontaxMessage, amount_text, parse_amount,
)
from possim.wire.money import currency as find_currency
from possim.wire.qr_data import QrDataError, decode_qr_data, encode_qr_data

from .effects import approved_effects
from .finance_client import FinanceClient, FinanceUnavailable
from .journal import APPROVED, DECLINED, REVERSED, FeePayment, Posting, Transaction, Unit
from .pipeline import CardData, Context, Outcome, run, scenario_rules, terminal_signed_on
from .reply import Reply, shaped
from .settings import FeeSettings

if TYPE_CHECKING:
    from .core import HostCore, _Request
    from .rules import Rule

log = logging.getLogger("possim.host")

FEE_KINDS = frozenset({"fee_query", "fee_payment"})
_ECHO = (3, 4, 7, 11, 25, 41, 42, 49)
AWAITING_PAYMENT, CONFIRMING, CONFIRMED, ROLLED_BACK = "awaiting_payment", "confirming", "confirmed", "rolled_back"
CANCEL_PENDING, CANCELLED, CANCEL_REFUSED = "cancel_pending", "cancelled", "cancel_refused"
NOT_CONFIRMED = "N4"
"""The finance system never confirmed the payment: the card payment was reversed, nothing was charged."""
FINANCE_SILENT = "91"
"""The finance system did not answer the notice query: nothing was charged."""
NOTICE_CODES = {"PAID": "N1", "EXPIRED": "N2", "CANCELLED": "N3"}
"""A notice that cannot be paid, by its status."""
RESULT_CODES = {"1001": "N1", "1002": "13", "1003": "25", "1004": "N2", "1005": "N3"}
"""A finance refusal, as the terminal is told it."""
CHANNEL = "POS"
QR_CHANNEL = "QR"
HOST_ROLLBACK = "finance"
"""The reversal reason of a fee payment the host reversed itself because the finance system never confirmed
it: its answer (N4) still stands, and a retransmission gets it again."""


@dataclasses.dataclass(frozen=True)
class Notice:
    """A payment notice as the finance system described it, in the host's terms."""

    pay_code: str
    status: str
    amount: int
    currency: str
    agency_code: str
    agency_name: str
    payer_name: str
    due_date: str
    items: tuple[tuple[str, int], ...]

    @classmethod
    def from_answer(cls, body: dict[str, Any]) -> Notice:
        cur = find_currency(body["currency"])
        return cls(body["payCode"], body["status"], parse_amount(body["amount"], cur.alpha, "body/amount"), cur.numeric,
                   body.get("agencyCode", ""), body.get("agencyName", ""), body.get("payerName", ""),
                   body.get("dueDate", ""), tuple((i["code"], parse_amount(i["amount"], cur.alpha, "body/items/item/amount"))
                                                  for i in body.get("items", [])))

    def fields(self) -> dict[str, str]:
        """The notice for the terminal's screen and receipt (wire/qr_data.py tags 11-19). Names the ASCII field
        cannot carry are left out: the terminal shows the agency code instead."""
        values = {"pay_code": self.pay_code, "agency_code": self.agency_code, "amount_due": str(self.amount),
                  "due_date": self.due_date, "notice_status": self.status,
                  "items": ";".join(f"{code}:{amount}" for code, amount in self.items)}
        for name, text in (("agency_name", self.agency_name), ("payer_name", self.payer_name)):
            if text and text.isascii() and text.isprintable():
                values[name] = text[:99]
        return values


def finance_key(folder: str | Path | None = None) -> bytes:
    """The MAC key host and finance system share (fixtures/finance.yaml `mac_key`: a lab key, in clear)."""
    source = fixture_path("finance.yaml", folder)
    value = load_fixture("finance.yaml", folder).get("mac_key")
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        raise FixtureError(f"{source}: mac_key must be hex") from None


def fee_fields(fee: FeePayment) -> dict[str, str]:
    """Where a QR-paid fee stands, for the terminal polling its order: the notice's code, PAID once the finance
    system confirmed it (with its number), else UNPAID."""
    values = {"pay_code": fee.pay_code, "notice_status": "PAID" if fee.state == CONFIRMED else "UNPAID"}
    if fee.state == CONFIRMED and fee.confirm_no:
        values["confirm_no"] = fee.confirm_no
    return values


class FeeDesk:
    def __init__(self, host: HostCore, settings: FeeSettings):
        self._host = host
        self.settings = settings
        self.client: FinanceClient | None = None
        self._inflight: dict[tuple[str, str, str], asyncio.Future[Reply]] = {}
        self._confirming: set[int] = set()
        self._cancels: dict[int, asyncio.Task[None]] = {}
        self._confirmations: set[asyncio.Task[None]] = set()
        """Confirmations of QR-paid fees under way in the background."""

    def connect(self, address: tuple[str, int], key: bytes) -> None:
        self.client = FinanceClient(address, key, self._host.clock, self._host._rng, self.settings.finance_timeout,
                                    self.settings.bank_id)

    # ---- requests ----

    def in_flight(self, key: tuple[str, str, str]) -> Reply | None:
        """A retransmission of a fee request still being worked on waits for the first one's answer."""
        first = self._inflight.get(key)
        if first is None:
            return None

        async def same_answer() -> Reply:
            reply = await asyncio.shield(first)
            return Reply(reply.data)

        return Reply(later=same_answer())

    def handle(self, req: _Request, kind_name: str, rule: Rule | None, card: CardData, pan_hash: str | None,
               request_fingerprint: str) -> Reply:
        key = (req.message[41], req.message[11], req.key_date)
        work = self._query(req, rule) if kind_name == "fee_query" else \
            self._pay(req, rule, card, pan_hash, request_fingerprint)
        try:
            done: asyncio.Future[Reply] | None = asyncio.get_running_loop().create_future()
        except RuntimeError:  # no event loop: a caller driving the core by hand awaits `later` itself
            done = None
        if done is not None:
            self._inflight[key] = done

        async def answer() -> Reply:
            try:
                reply = await work
            except asyncio.CancelledError:  # the host is stopping
                if done is not None:
                    done.cancel()
                raise
            except Exception as exc:
                if done is not None:
                    done.set_exception(exc)
                    done.exception()  # retrieved: a retransmission's waiter may never come
                raise
            finally:
                self._inflight.pop(key, None)
            if done is not None:
                done.set_result(reply)
            return reply

        return Reply(later=answer())

    async def _query(self, req: _Request, rule: Rule | None) -> Reply:
        ready = self._readable(req, rule, needs_amount=False)
        if isinstance(ready, Outcome):
            return self._answer(req, rule, ready.code, None, ready.reason)
        code, notice, why = await self._notice(ready)
        return self._answer(req, rule, code, notice, why)

    async def _pay(self, req: _Request, rule: Rule | None, card: CardData, pan_hash: str | None,
                   request_fingerprint: str) -> Reply:
        host, message = self._host, req.message
        ready = self._readable(req, rule, needs_amount=True)
        if isinstance(ready, Outcome):
            return self._declined(req, rule, card, pan_hash, request_fingerprint, ready)
        code, notice, why = await self._notice(ready)
        if code == "00" and notice is not None and (notice.amount != int(message[4]) or notice.currency != message[49]):
            code, why = "13", f"amount {message[4]} {message[49]} is not the notice's {notice.amount} {notice.currency}"
        if code != "00" or notice is None:
            return self._declined(req, rule, card, pan_hash, request_fingerprint, Outcome(code, "notice", why),
                                  notice=notice)
        if host.journal.transaction(message[41], message[11], req.key_date) is not None:
            # the terminal gave up while the notice was looked up, and its reversal came first: charge nothing
            log.info("fee %s: reversed by terminal %s before it was charged; not charged", notice.pay_code, message[41])
            return Reply()
        ctx = Context(message, req.now, req.business_date, host._services, card, rule,
                      session=host.journal.terminal(message[41]), pan_hash=pan_hash,
                      kind=host.dialect.transaction_of(message))
        outcome = run(host._steps, ctx)
        if not outcome.approved:
            return self._declined(req, rule, card, pan_hash, request_fingerprint, outcome, ctx)
        response = host._response(message, _ECHO, "00", req.now)
        response[37] = host._rrn(req.now)
        auth_code = response[38] = f"{host._rng.randrange(1_000_000):06d}"
        effects = approved_effects(ctx, req.at, host.preauth_hold)
        row = host._transaction(req, card, pan_hash, request_fingerprint, outcome, response, ctx, effects.posted, auth_code)
        fee = FeePayment(None, notice.pay_code, notice.agency_code, notice.amount, notice.currency, CHANNEL,
                         response[37], CONFIRMING, None, 0, None, req.business_date, req.at, req.at)
        row_id = host.journal.record(Unit((host._entry_in(req, f"fee {notice.pay_code}: card approved, confirming"),),
                                          insert=row, postings=effects.postings, pin_tries=ctx.pin_tries,
                                          fee_payments=(fee,), at=req.at))
        assert row_id is not None
        fee = dataclasses.replace(fee, transaction_id=row_id)
        self._confirming.add(row_id)
        try:
            fee, result = await self._confirm(fee, req.now, message[41])
        finally:
            self._confirming.discard(row_id)
        return self._settle(req, rule, row_id, fee, result, notice, response)

    # ---- paid by QR: an order for the notice, confirmed once a wallet pays it ----

    def qr_order(self, req: _Request, ctx: Context, pay_code: str, rule: Rule | None, front: Any) -> Reply:
        """A merchant-presented order for a notice: made only for an unpaid notice and exactly its amount due."""

        async def order() -> Reply:
            message = req.message
            code, notice, why = await self._notice(pay_code)
            if code == "00" and notice is not None and (notice.amount != int(message[4]) or notice.currency != message[49]):
                code, why = "13", f"amount {message[4]} {message[49]} is not the notice's {notice.amount} {notice.currency}"
            if code != "00" or notice is None:
                return front._declined(req, "qr_order", Outcome(code, "notice", why), rule)
            assert ctx.merchant is not None
            change = front.orders.create(merchant=ctx.merchant, amount=notice.amount, currency=notice.currency,
                                         now=req.now, key=front._key(req, ctx), terminal_id=message[41])
            assert change.insert is not None and change.insert.rrn is not None
            fee = FeePayment(None, notice.pay_code, notice.agency_code, notice.amount, notice.currency, QR_CHANNEL,
                             change.insert.rrn, AWAITING_PAYMENT, None, 0, None, req.business_date, req.at, req.at)
            return front._record(req, change, "00", rule, reason=f"fee {notice.pay_code}: order for the notice",
                                 fee_payments=(fee,))

        return Reply(later=order())

    def wallet_paid(self, transaction_id: int | None) -> None:
        """A wallet paid an order: if it pays a notice, confirm it to the finance system in the background; a
        confirmation that never comes, or a refusal, gives the wallet its money back."""
        fee = self._host.journal.fee_payment(transaction_id or 0)
        if fee is None or fee.state != AWAITING_PAYMENT:
            return
        if self.client is None:  # no finance system to confirm to: the wallet gets its money back at once
            self._give_back(fee, ROLLED_BACK, "no finance system is configured")
            return
        fee = dataclasses.replace(fee, state=CONFIRMING, updated_at=self._stamp())
        self._host.journal.record(Unit(fee_payments=(fee,), at=fee.updated_at))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # resume() rolls it back when a server starts
        self._confirming.add(transaction_id or 0)
        task = loop.create_task(self._confirm_order(fee))
        self._confirmations.add(task)
        task.add_done_callback(self._confirmations.discard)

    async def _confirm_order(self, fee: FeePayment) -> None:
        host, row_id = self._host, fee.transaction_id or 0
        row = host.journal.transaction_by_id(row_id)
        try:
            fee, result = await self._confirm(fee, host.clock(), row.terminal_id if row else "")
        finally:
            self._confirming.discard(row_id)
        at = self._stamp()
        row = host.journal.transaction_by_id(row_id)
        if result == RESULT_OK and row is not None and row.status == APPROVED:
            fee = dataclasses.replace(fee, state=CONFIRMED, updated_at=at)
            host.journal.record(Unit(fee_payments=(fee,), at=at))
            log.info("fee %s paid by QR: confirmed (%s)", fee.pay_code, fee.confirm_no)
            return
        self._give_back(fee, CANCEL_PENDING if result in ("", RESULT_OK) else ROLLED_BACK,
                        f"finance refused ({result})" if result not in ("", RESULT_OK) else "finance never confirmed")

    def _give_back(self, fee: FeePayment, state: str, why: str) -> None:
        """A QR-paid fee that will not be confirmed: the order reversed, the wallet refunded; `state` says whether a
        confirmation may still need cancelling at the finance system."""
        host, at = self._host, self._stamp()
        row = host.journal.transaction_by_id(fee.transaction_id or 0)
        order = host.journal.order(row.order_no or "") if row is not None else None
        fee = dataclasses.replace(fee, state=state, updated_at=at)
        change = None
        if order is not None and row is not None and row.status == APPROVED:
            change = host.orders.reverse(order, row, host.clock(), {"reversal_reason": HOST_ROLLBACK})
        host.journal.record(Unit(fee_payments=(fee,), at=at, **(change.unit_parts() if change else {})))
        log.info("fee %s paid by QR: %s; the wallet's payment given back", fee.pay_code, why)
        if fee.state == CANCEL_PENDING:
            self.schedule_cancel(fee.transaction_id or 0)

    # ---- the finance system ----

    async def _notice(self, pay_code: str) -> tuple[str, Notice | None, str | None]:
        """(response code, the notice, why) of a payment code."""
        if self.client is None:
            return FINANCE_SILENT, None, "no finance system is configured (possim host run --finance)"
        try:
            answer = await self.client.exchange(MSG_NOTICE_QUERY, {"payCode": pay_code})
        except FinanceUnavailable as exc:
            return FINANCE_SILENT, None, str(exc)
        result = answer.body.get("result", "")
        described = "amount" in answer.body  # a notice found but not payable is still described
        if result != RESULT_OK:
            return (RESULT_CODES.get(result, FINANCE_SILENT), Notice.from_answer(answer.body) if described else None,
                    f"finance system: {result} {answer.body.get('message', '')}")
        notice = Notice.from_answer(answer.body)
        if notice.status in NOTICE_CODES:
            return NOTICE_CODES[notice.status], notice, f"notice {pay_code} is {notice.status.lower()}"
        return "00", notice, None

    async def _confirm(self, fee: FeePayment, now: datetime, terminal_id: str) -> tuple[FeePayment, str]:
        """Confirm until the finance system says yes or no, or the attempts run out; returns the fee as it
        stands and the outcome: 0000, a refusal's result code, or "" for never answered."""
        assert self.client is not None
        body = {"payCode": fee.pay_code, "amount": amount_text(fee.amount, fee.currency),
                "currency": find_currency(fee.currency).alpha, "confirmTime": now.strftime("%Y%m%d%H%M%S"),
                "channel": fee.channel, "channelTradeNo": fee.trade_no, "terminalId": terminal_id}
        for attempt in range(1, self.settings.confirm_attempts + 1):
            try:
                answer = await self.client.exchange(MSG_PAYMENT_CONFIRM, body)
            except FinanceUnavailable as exc:
                fee = self._note_attempt(fee, attempt, f"attempt {attempt}: {exc}")
                continue
            result = answer.body.get("result", "")
            fee = self._note_attempt(fee, attempt, f"attempt {attempt}: {result}")
            ours = answer.body.get("paidTradeNo") in (None, "", fee.trade_no)
            if result == RESULT_OK or (result == RESULT_ALREADY_PAID and ours):
                return dataclasses.replace(fee, confirm_no=answer.body.get("confirmNo") or fee.confirm_no), RESULT_OK
            if not result.startswith("9"):
                return fee, result
        return fee, ""

    def _note_attempt(self, fee: FeePayment, attempt: int, what: str) -> FeePayment:
        fee = dataclasses.replace(fee, attempts=attempt, last_result=what[:200], updated_at=self._stamp())
        self._host.journal.record(Unit(fee_payments=(fee,), at=fee.updated_at))
        return fee

    def _settle(self, req: _Request, rule: Rule | None, row_id: int, fee: FeePayment, result: str, notice: Notice,
                response: Any) -> Reply:
        """Answer the terminal: confirmed, or the card payment reversed (and the confirmation cancelled at
        the finance system when it may have got there)."""
        host = self._host
        row = host.journal.transaction_by_id(row_id)
        assert row is not None
        at = self._stamp()
        if result == RESULT_OK and row.status == APPROVED:
            fee = dataclasses.replace(fee, state=CONFIRMED, updated_at=at)
            notice = dataclasses.replace(notice, status="PAID")
            code, note, postings = "00", f"fee {fee.pay_code} confirmed ({fee.confirm_no})", ()
        elif row.status != APPROVED:  # the terminal reversed it meanwhile: undo the confirmation too
            fee = dataclasses.replace(fee, state=CANCEL_PENDING if result in (RESULT_OK, "") else ROLLED_BACK, updated_at=at)
            code, note, postings = NOT_CONFIRMED, f"fee {fee.pay_code}: reversed by the terminal while confirming", ()
        else:
            code = RESULT_CODES.get(result, NOT_CONFIRMED)
            fee = dataclasses.replace(fee, state=CANCEL_PENDING if result == "" else ROLLED_BACK, updated_at=at)
            note = (f"fee {fee.pay_code}: finance " + (f"refused ({result})" if result else "never answered")
                    + ": card payment reversed")
            postings = (Posting(row.account_id, row.posted_amount),) if row.account_id and row.posted_amount else ()
            row = dataclasses.replace(row, status=REVERSED, reversal_reason=HOST_ROLLBACK, reversed_at=at, updated_at=at)
        response[39] = code
        if code != "00":
            response.fields.pop(38, None)
        self._set_fields(response, notice, fee)
        data = host._frame(response, req.envelope)
        row = dataclasses.replace(row, response_code=code if row.status == APPROVED else row.response_code,
                                  response_mti=response.mti,
                                  response_fields={str(n): v for n, v in response.fields.items()})
        host.journal.record(Unit((host._entry_out(req, response, note),), updates=(row,), postings=postings,
                                 fee_payments=(fee,), at=at))
        log.info("%s", note)
        if fee.state == CANCEL_PENDING:
            self.schedule_cancel(row_id)
        return shaped(data, rule)

    # ---- cancelling a confirmation ----

    def reversed_by_terminal(self, original: Transaction, at: str) -> None:
        """The terminal reversed a fee payment: a confirmation sent or on its way must be cancelled."""
        fee = self._host.journal.fee_payment(original.id or 0)
        if fee is None or fee.state not in (CONFIRMING, CONFIRMED):
            return
        if fee.state == CONFIRMED or fee.transaction_id not in self._confirming:
            # confirming but not in flight here: a host stopped mid-confirmation; the finance system may have it
            fee = dataclasses.replace(fee, state=CANCEL_PENDING, updated_at=at)
            self._host.journal.record(Unit(fee_payments=(fee,), at=at))
        self.schedule_cancel(fee.transaction_id or 0)

    def schedule_cancel(self, transaction_id: int) -> None:
        """Cancel at the finance system, in the background, until acknowledged. A confirmation still in flight
        is left to finish first: its coroutine sees the reversal and schedules the cancel itself."""
        if transaction_id in self._confirming or transaction_id in self._cancels or self.client is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: resume() picks it up when a server starts
        task = loop.create_task(self._cancel_until_done(transaction_id))
        self._cancels[transaction_id] = task
        task.add_done_callback(lambda _: self._cancels.pop(transaction_id, None))

    def resume(self) -> None:
        """At start: cancellations a stopped host still owed, and payments it stopped while confirming — their
        terminal got no answer, so they are rolled back as never confirmed: the card payment reversed (unless
        the terminal's reversal did it already) and the confirmation cancelled at the finance system."""
        at = self._stamp()
        for fee in self._host.journal.fee_payments(CONFIRMING):
            if fee.transaction_id in self._confirming:
                continue
            row = self._host.journal.transaction_by_id(fee.transaction_id or 0)
            parts: dict[str, Any] = {}
            order = self._host.journal.order(row.order_no or "") if row is not None and row.order_no else None
            if row is not None and row.status == APPROVED and order is not None:  # paid by QR: the wallet gets it back
                parts = self._host.orders.reverse(order, row, self._host.clock(),
                                                  {"reversal_reason": HOST_ROLLBACK}).unit_parts()
            elif row is not None and row.status == APPROVED:
                parts = {"updates": (dataclasses.replace(row, status=REVERSED, reversal_reason=HOST_ROLLBACK,
                                                         reversed_at=at, updated_at=at, response_code=NOT_CONFIRMED),),
                         "postings": (Posting(row.account_id, row.posted_amount),)
                         if row.account_id and row.posted_amount else ()}
            fee = dataclasses.replace(fee, state=CANCEL_PENDING, last_result="host stopped while confirming", updated_at=at)
            self._host.journal.record(Unit(fee_payments=(fee,), at=at, **parts))
            log.warning("fee %s: the host stopped while confirming it; rolled back", fee.pay_code)
        for fee in self._host.journal.fee_payments(CANCEL_PENDING):
            self.schedule_cancel(fee.transaction_id or 0)

    async def stop(self) -> None:
        tasks = [*self._cancels.values(), *self._confirmations]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _cancel_until_done(self, transaction_id: int) -> None:
        assert self.client is not None
        attempt = 0
        while True:
            fee = self._host.journal.fee_payment(transaction_id)
            if fee is None or fee.state != CANCEL_PENDING:
                return
            attempt += 1
            try:
                answer: NontaxMessage | None = await self.client.exchange(
                    MSG_CONFIRM_CANCEL, {"payCode": fee.pay_code, "channelTradeNo": fee.trade_no, "reason": "payment reversed"})
            except FinanceUnavailable as exc:
                answer, result = None, str(exc)
            if answer is not None:
                result = answer.body.get("result", "")
                state = {RESULT_OK: CANCELLED, RESULT_NOTHING_TO_CANCEL: CANCELLED,
                         RESULT_DAY_RECONCILED: CANCEL_REFUSED}.get(result)
                if state is not None:
                    fee = dataclasses.replace(fee, state=state, last_result=f"cancel: {result}", updated_at=self._stamp())
                    self._host.journal.record(Unit(fee_payments=(fee,), at=fee.updated_at))
                    log.info("fee %s: confirmation %s at the finance system", fee.pay_code,
                             "cancelled" if state == CANCELLED else "could not be cancelled (the day is reconciled)")
                    return
            self._host.journal.record(Unit(fee_payments=(dataclasses.replace(
                fee, last_result=f"cancel attempt {attempt}: {result}"[:200], updated_at=self._stamp()),), at=self._stamp()))
            backoff = self.settings.cancel_backoff
            await asyncio.sleep(backoff[min(attempt, len(backoff)) - 1])

    # ---- answers ----

    def _readable(self, req: _Request, rule: Rule | None, needs_amount: bool) -> str | Outcome:
        """The payment code, after the terminal's own checks; or why the request cannot go on."""
        host, message = self._host, req.message
        ctx = Context(message, req.now, req.business_date, host._services, CardData(None, None, False), rule,
                      session=host.journal.terminal(message[41]), kind=host.dialect.transaction_of(message))
        outcome = run((terminal_signed_on, scenario_rules), ctx)
        if not outcome.approved:
            return outcome
        if needs_amount and (not message.get(4, "").isdigit() or int(message[4]) == 0 or 49 not in message):
            return Outcome("13" if 49 in message else "30", "fields", "amount missing, zero or without currency")
        raw = host.dialect.get_role(message, "qr_data") if "qr_data" in host.dialect.roles else None
        try:
            data = decode_qr_data(raw) if raw is not None else {}
        except QrDataError as exc:
            return Outcome("30", "fields", f"field {host.dialect.roles['qr_data']}: {exc}")
        code = data.get("pay_code", "")
        if not code.isdigit():
            return Outcome("30", "fields", "no payment code (pay_code) in the request's private data")
        return code

    def _answer(self, req: _Request, rule: Rule | None, code: str, notice: Notice | None, why: str | None) -> Reply:
        host = self._host
        response = host._response(req.message, _ECHO, code, req.now)
        if notice is not None:
            self._set_fields(response, notice, None)
        data = host._frame(response, req.envelope)
        host.journal.record(Unit((host._entry_in(req, why), host._entry_out(req, response, why)), at=req.at))
        return shaped(data, rule)

    def _declined(self, req: _Request, rule: Rule | None, card: CardData, pan_hash: str | None,
                  request_fingerprint: str, outcome: Outcome, ctx: Context | None = None,
                  notice: Notice | None = None) -> Reply:
        """A refusal, journaled as a declined row; the notice, when known, goes back so the cashier can say why."""
        host, message = self._host, req.message
        response = host._response(message, _ECHO, outcome.code, req.now)
        response[37] = host._rrn(req.now)
        if notice is not None:
            self._set_fields(response, notice, None)
        ctx = ctx or Context(message, req.now, req.business_date, host._services, card, rule,
                             kind=host.dialect.transaction_of(message))
        row = host._transaction(req, card, pan_hash, request_fingerprint, outcome, response, ctx, 0, None)
        row = dataclasses.replace(row, status=DECLINED, response_mti=response.mti,
                                  response_fields={str(n): v for n, v in response.fields.items()})
        data = host._frame(response, req.envelope)
        host.journal.record(Unit((host._entry_in(req, outcome.reason), host._entry_out(req, response, outcome.reason)),
                                 insert=row, pin_tries=ctx.pin_tries, at=req.at))
        return shaped(data, rule)

    def _set_fields(self, response: Any, notice: Notice, fee: FeePayment | None) -> None:
        values = notice.fields()
        if fee is not None and fee.confirm_no:
            values["confirm_no"] = fee.confirm_no
        if "qr_data" in self._host.dialect.roles:
            self._host.dialect.set_role(response, "qr_data", encode_qr_data(values))

    def _stamp(self) -> str:
        return self._host.clock().isoformat(timespec="milliseconds")
