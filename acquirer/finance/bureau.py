"""The finance bureau's non-tax system as the bank's host meets it: one
request document in, one answer document out (or, by a fault, none).

`FinanceBureau.handle` never raises: whatever arrives gets an answer a host
can act on. A request that cannot be read is answered 9002 (or 9001 for a
MAC that is missing or wrong, and then nothing is done) in the response type
matching its msgType when that can be read, else in a 2000 error response.
An unexpected failure is answered 9999.

`Faults` lets a tester make the bureau misbehave the ways a host must
survive: answer late, not at all, lose the answer to a payment it recorded,
fail, or claim a notice already paid. Faults apply to well-formed,
authenticated requests, per message type, in the order added.

Logs carry pay codes, amounts and trade numbers, never payer names: those
are personal data.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import yaml

from possim.wire import nontax
from possim.wire.clock import Clock, system_clock
from possim.wire.money import currency
from possim.wire.nontax import NontaxError, NontaxMessage

from .notices import (
    AlreadyPaid,
    AlreadyReconciled,
    AmountMismatch,
    Confirmation,
    DayReconciled,
    FinanceConfig,
    NoSuchNotice,
    Notice,
    NoticeCancelled,
    NoticeExpired,
    NoticeStore,
    NothingToCancel,
    PaymentCodeError,
    Refused,
    TradeNoUsed,
    check_pay_code,
)

log = logging.getLogger("possim.finance")

FAULT_KINDS = ("delay", "drop", "lose_answer", "error", "already_paid")

_REFUSALS: dict[type[Refused], str] = {
    NoSuchNotice: nontax.RESULT_NO_SUCH_NOTICE,
    NoticeExpired: nontax.RESULT_NOTICE_EXPIRED,
    NoticeCancelled: nontax.RESULT_NOTICE_CANCELLED,
    AmountMismatch: nontax.RESULT_AMOUNT_MISMATCH,
    TradeNoUsed: nontax.RESULT_TRADE_NO_USED,
    NothingToCancel: nontax.RESULT_NOTHING_TO_CANCEL,
    DayReconciled: nontax.RESULT_DAY_RECONCILED,
}
_ECHO = {
    nontax.MSG_NOTICE_QUERY_RESPONSE: ("payCode",),
    nontax.MSG_PAYMENT_CONFIRM_RESPONSE: ("payCode", "channelTradeNo"),
    nontax.MSG_STATUS_QUERY_RESPONSE: ("payCode",),
    nontax.MSG_DAILY_LIST_RESPONSE: ("date",),
    nontax.MSG_CONFIRM_CANCEL_RESPONSE: ("payCode", "channelTradeNo"),
    nontax.MSG_DAY_RECONCILED_RESPONSE: ("date",),
}
"""The request elements each response repeats, so a refusal still says what it refuses."""


class FaultError(ValueError):
    """A fault that cannot be set up; the message names the file and line where there is one."""


@dataclass(frozen=True)
class Fault:
    kind: str
    """delay, drop, lose_answer, error or already_paid (FAULT_KINDS)."""
    seconds: float = 0.0
    """For delay: how long the answer waits after the request was processed."""
    paid_trade_no: str | None = None
    """For already_paid: the trade number to claim paid it; a made-up one (another bank's) when None."""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise FaultError(f"fault {self.kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if self.kind == "delay" and not self.seconds > 0:
            raise FaultError(f"a delay needs seconds > 0, got {self.seconds!r}")
        if self.paid_trade_no is not None and not re.fullmatch(r"[!-~]{1,64}", self.paid_trade_no):
            raise FaultError(f"paid_trade_no {self.paid_trade_no!r} is not 1 to 64 printable ASCII characters")


class Faults:
    """Per request type, a queue of faults consumed one per request, then normal behaviour. Thread-safe:
    a test adds faults while the bureau answers on its server thread."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[Fault]] = {}
        self._lock = threading.Lock()

    def add(self, msg_type: str, fault: Fault | str, times: int = 1, seconds: float = 0.0) -> None:
        """Queue `fault` (a Fault, or a kind with `seconds` for a delay) for the next `times` requests of `msg_type`."""
        entry = fault if isinstance(fault, Fault) else Fault(fault, seconds)
        if msg_type not in nontax.REQUEST_TYPES:
            raise FaultError(f"msg_type {msg_type!r} is not a request type ({', '.join(nontax.REQUEST_TYPES)})")
        if entry.kind == "already_paid" and msg_type != nontax.MSG_PAYMENT_CONFIRM:
            raise FaultError(f"already_paid answers a payment confirmation ({nontax.MSG_PAYMENT_CONFIRM}), not {msg_type}")
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise FaultError(f"times must be a whole number ≥ 1, got {times!r}")
        with self._lock:
            self._queues.setdefault(msg_type, deque()).extend([entry] * times)

    def take(self, msg_type: str) -> Fault | None:
        with self._lock:
            queue = self._queues.get(msg_type)
            return queue.popleft() if queue else None

    def pending(self, msg_type: str | None = None) -> int:
        with self._lock:
            if msg_type is not None:
                return len(self._queues.get(msg_type, ()))
            return sum(len(queue) for queue in self._queues.values())

    @classmethod
    def from_file(cls, path: str | Path) -> Faults:
        """A YAML list of {msg_type, fault, seconds?, times?, paid_trade_no?}."""
        source = Path(path)
        try:
            entries = yaml.compose(source.read_text(encoding="utf-8"))
        except OSError as exc:
            raise FaultError(f"{source}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise FaultError(f"{source}{f' line {mark.line + 1}' if mark else ''}: not valid YAML") from None
        faults = cls()
        if entries is None:
            return faults
        if not isinstance(entries, yaml.SequenceNode):
            raise FaultError(f"{source}: expected a list of faults")
        for node in entries.value:
            where = f"{source} line {node.start_mark.line + 1}"
            entry = yaml.safe_load(yaml.serialize(node))
            if not isinstance(entry, dict) or "msg_type" not in entry or "fault" not in entry:
                raise FaultError(f"{where}: each fault needs msg_type and fault")
            unknown = sorted(set(entry) - {"msg_type", "fault", "seconds", "times", "paid_trade_no"})
            if unknown:
                raise FaultError(f"{where}, field {unknown[0]}: not a fault field")
            seconds = entry.get("seconds", 0.0)
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
                raise FaultError(f"{where}, field seconds: {seconds!r} is not a number")
            trade = entry.get("paid_trade_no")
            try:
                faults.add(str(entry["msg_type"]), Fault(str(entry["fault"]), float(seconds),
                                                         None if trade is None else str(trade)),
                           entry.get("times", 1))
            except FaultError as exc:
                raise FaultError(f"{where}: {exc}") from None
        return faults


@dataclass
class Answer:
    xml: bytes | None
    """The answer document (not framed); None: no answer goes out."""
    delay: float = 0.0
    """Seconds to hold the answer back; the request has already been processed."""


class FinanceBureau:
    """Answers the bank host's requests from a NoticeStore."""

    def __init__(self, store: NoticeStore, key: bytes, clock: Callable[[], datetime], rng: random.Random,
                 faults: Faults | None = None, name: str = "FINANCE"):
        self.store = store
        self.key = key
        self.clock = clock
        self.rng = rng
        self.faults = faults if faults is not None else Faults()
        self.name = name

    def handle(self, xml: bytes) -> Answer:
        try:
            return self._handle(xml)
        except Exception:
            log.exception("%s: failed to answer a request", self.name)
            try:
                return Answer(self._encode(nontax.MSG_ERROR_RESPONSE, {"result": nontax.RESULT_SYSTEM_ERROR,
                                                                       "message": "system error"}, "UNKNOWN", ""))
            except Exception:
                return Answer(None)

    def _handle(self, xml: bytes) -> Answer:
        try:
            request = nontax.decode(xml, self.key)
        except NontaxError as exc:
            log.warning("%s: refused %s request from %s with %s: %s", self.name, exc.msg_type or "unreadable",
                        exc.sender or "?", exc.code, exc)
            return Answer(self._refusal(exc))
        fault = self.faults.take(request.msg_type)
        if fault is not None:
            log.info("%s: fault %s on %s %s", self.name, fault.kind, request.msg_type, request.msg_id)
        if fault is not None and fault.kind == "drop":
            return Answer(None)
        if fault is not None and fault.kind == "error":
            body = self._failed(request.msg_type, request.body, nontax.RESULT_SYSTEM_ERROR, "system error")
        elif fault is not None and fault.kind == "already_paid":
            body = self._echo(request.msg_type, request.body) | {
                "result": nontax.RESULT_ALREADY_PAID, "message": "already paid",
                "paidTradeNo": fault.paid_trade_no or "".join(self.rng.choice("0123456789") for _ in range(20)),
            }
        else:
            try:
                body = self._process(request)
            except Exception:
                log.exception("%s: failed to process %s %s", self.name, request.msg_type, request.msg_id)
                body = self._failed(request.msg_type, request.body, nontax.RESULT_SYSTEM_ERROR, "system error")
        log.info("%s: %s from %s payCode=%s amount=%s trade=%s -> %s", self.name, request.msg_type, request.sender,
                 request.body.get("payCode", "-"), request.body.get("amount", "-"),
                 request.body.get("channelTradeNo", "-"), body["result"])
        answer = self._answer(request, body)
        if fault is not None and fault.kind == "lose_answer":
            return Answer(None)
        return Answer(answer, fault.seconds if fault is not None and fault.kind == "delay" else 0.0)

    # ---- answers ----

    def _answer(self, request: NontaxMessage, body: dict[str, Any]) -> bytes:
        xml = self._encode(nontax.response_type(request.msg_type), body, request.sender, request.msg_id)
        if len(xml) > nontax.MAX_FRAME:
            log.error("%s: the answer to %s %s is %d bytes, more than a frame holds", self.name, request.msg_type,
                      request.msg_id, len(xml))
            failed = self._failed(request.msg_type, request.body, nontax.RESULT_SYSTEM_ERROR,
                                  f"the answer would exceed {nontax.MAX_FRAME} bytes")
            xml = self._encode(nontax.response_type(request.msg_type), failed, request.sender, request.msg_id)
        return xml

    def _refusal(self, exc: NontaxError) -> bytes:
        """The 9001/9002 answer to a request that could not be used, echoing what could be read of it."""
        msg_type = nontax.response_type(exc.msg_type or "")
        receiver = exc.sender or "UNKNOWN"
        body = self._failed(exc.msg_type or "", exc.echo, exc.code, str(exc))
        try:
            return self._encode(msg_type, body, receiver, exc.msg_id or "")
        except NontaxError:
            # An echoed value the response type does not allow: answer without the echo.
            return self._encode(msg_type, {"result": exc.code, "message": str(exc)}, receiver, exc.msg_id or "")

    def _failed(self, request_type: str, request_body: dict[str, Any], result: str, message: str) -> dict[str, Any]:
        return self._echo(request_type, request_body) | {"result": result, "message": message[:256]}

    @staticmethod
    def _echo(request_type: str, request_body: dict[str, Any]) -> dict[str, Any]:
        names = _ECHO.get(nontax.response_type(request_type), ())
        return {name: request_body[name] for name in names if isinstance(request_body.get(name), str)}

    def _encode(self, msg_type: str, body: dict[str, Any], receiver: str, ref_msg_id: str) -> bytes:
        message = nontax.make_message(msg_type, body, self.name, receiver, self.clock(), self.rng, ref_msg_id)
        return nontax.encode(message, self.key)

    # ---- the requests ----

    def _process(self, request: NontaxMessage) -> dict[str, Any]:
        handler = {
            nontax.MSG_NOTICE_QUERY: self._notice_query,
            nontax.MSG_PAYMENT_CONFIRM: self._confirm,
            nontax.MSG_STATUS_QUERY: self._status_query,
            nontax.MSG_DAILY_LIST: self._daily_list,
            nontax.MSG_CONFIRM_CANCEL: self._cancel,
            nontax.MSG_DAY_RECONCILED: self._day_reconciled,
        }[request.msg_type]
        return handler(request.body)

    def _code_problem(self, code: str) -> str | None:
        try:
            check_pay_code(code, self.store.lengths)
        except PaymentCodeError as exc:
            return str(exc)
        return None

    def _notice_query(self, body: dict[str, Any]) -> dict[str, Any]:
        code = body["payCode"]
        problem = self._code_problem(code)
        notice = None if problem else self.store.get(code)
        if notice is None:
            return {"result": nontax.RESULT_NO_SUCH_NOTICE, "message": problem or "no such notice", "payCode": code}
        result, message = {
            "unpaid": (nontax.RESULT_OK, "payable"),
            "paid": (nontax.RESULT_ALREADY_PAID, "already paid"),
            "expired": (nontax.RESULT_NOTICE_EXPIRED, f"expired: due by {notice.due_date}"),
            "cancelled": (nontax.RESULT_NOTICE_CANCELLED, "cancelled by the agency"),
        }[notice.status]
        return {"result": result, "message": message, "payCode": code} | _notice_details(notice)

    def _confirm(self, body: dict[str, Any]) -> dict[str, Any]:
        code, trade = body["payCode"], body["channelTradeNo"]
        echo = {"payCode": code, "channelTradeNo": trade}
        problem = self._code_problem(code)
        if problem:
            return echo | {"result": nontax.RESULT_NO_SUCH_NOTICE, "message": problem}
        try:
            confirmation = self.store.confirm(
                code, nontax.parse_amount(body["amount"], body["currency"], "body/amount"), body["channel"], trade,
                nontax.parse_time(body["confirmTime"], "body/confirmTime"), self.clock().date(),
                terminal_id=body["terminalId"], currency_numeric=currency(body["currency"]).numeric,
            )
        except AlreadyPaid as exc:
            paid = exc.confirmation
            answer = echo | {"result": nontax.RESULT_ALREADY_PAID, "message": "already paid", "paidTradeNo": paid.trade_no}
            # The bank's own earlier confirmation: give back its number, as the lost answer would have.
            return answer | ({"confirmNo": paid.confirm_no} if paid.trade_no == trade else {})
        except Refused as exc:
            return echo | {"result": _REFUSALS[type(exc)], "message": str(exc)}
        return echo | {"result": nontax.RESULT_OK, "message": "payment confirmed", "confirmNo": confirmation.confirm_no}

    def _status_query(self, body: dict[str, Any]) -> dict[str, Any]:
        code = body["payCode"]
        problem = self._code_problem(code)
        notice = None if problem else self.store.get(code)
        if notice is None:
            return {"result": nontax.RESULT_NO_SUCH_NOTICE, "message": problem or "no such notice", "payCode": code}
        answer = {"result": nontax.RESULT_OK, "payCode": code, "status": notice.status.upper()}
        if notice.paid_trade_no is not None and notice.confirm_no is not None and notice.paid_at is not None:
            answer |= {"channelTradeNo": notice.paid_trade_no, "confirmNo": notice.confirm_no,
                       "confirmTime": nontax.format_time(datetime.fromisoformat(notice.paid_at))}
        return answer

    def _daily_list(self, body: dict[str, Any]) -> dict[str, Any]:
        day = nontax.parse_date(body["date"], "body/date")
        confirmations = self.store.daily_confirmations(day)
        money = self.store.currency
        return {
            "result": nontax.RESULT_OK, "date": body["date"], "count": str(len(confirmations)),
            "total": nontax.amount_text(sum(c.amount for c in confirmations), money),
            "currency": currency(money).alpha,
            "confirmations": [_listed(c) for c in confirmations],
        }

    def _day_reconciled(self, body: dict[str, Any]) -> dict[str, Any]:
        """The bank reconciled the day: close it here too — but only when the bank's figures are ours."""
        day = nontax.parse_date(body["date"], "body/date")
        confirmations = self.store.daily_confirmations(day)
        total = sum(c.amount for c in confirmations)
        theirs = nontax.parse_amount(body["total"], currency(self.store.currency).alpha, "body/total")
        if int(body["count"]) != len(confirmations) or theirs != total:
            return {"result": nontax.RESULT_AMOUNT_MISMATCH, "date": body["date"],
                    "message": f"our {len(confirmations)} confirmations of {body['date']} total"
                               f" {nontax.amount_text(total, self.store.currency)}, not {body['count']} for {body['total']}"}
        try:
            self.store.mark_reconciled(day)
        except AlreadyReconciled:
            return {"result": nontax.RESULT_DAY_RECONCILED, "date": body["date"], "message": "reconciled already"}
        return {"result": nontax.RESULT_OK, "date": body["date"], "message": "day reconciled"}

    def _cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        code, trade = body["payCode"], body["channelTradeNo"]
        echo = {"payCode": code, "channelTradeNo": trade}
        problem = self._code_problem(code)
        if problem:
            return echo | {"result": nontax.RESULT_NO_SUCH_NOTICE, "message": problem}
        try:
            self.store.cancel(code, trade, body.get("reason", ""))
        except Refused as exc:
            return echo | {"result": _REFUSALS[type(exc)], "message": str(exc)}
        return echo | {"result": nontax.RESULT_OK, "message": "confirmation cancelled; the notice is payable again"}


def _notice_details(notice: Notice) -> dict[str, Any]:
    return {
        "agencyCode": notice.agency_code, "agencyName": notice.agency_name, "payerName": notice.payer_name,
        "amount": nontax.amount_text(notice.amount, notice.currency), "currency": currency(notice.currency).alpha,
        "dueDate": notice.due_date.replace("-", ""), "status": notice.status.upper(),
        "items": [{"code": i.code, "name": i.name, "amount": nontax.amount_text(i.amount, notice.currency)}
                  for i in notice.items],
    }


def _listed(confirmation: Confirmation) -> dict[str, str]:
    return {
        "payCode": confirmation.pay_code, "agencyCode": confirmation.agency_code,
        "amount": nontax.amount_text(confirmation.amount, confirmation.currency), "channel": confirmation.channel,
        "channelTradeNo": confirmation.trade_no, "confirmNo": confirmation.confirm_no,
        "confirmTime": nontax.format_time(datetime.fromisoformat(confirmation.confirm_time)),
    }


def open_bureau(db_path: str | Path, fixtures_dir: str | Path | None = None, faults_file: str | Path | None = None,
                clock: Clock = system_clock, rng: random.Random | None = None, load_samples: bool = True) -> FinanceBureau:
    """A bureau over the SQLite file `db_path`, configured from finance.yaml (the built-in one unless
    `fixtures_dir` has its own); `load_samples` adds that file's sample notices (once: a reload skips them)."""
    config = FinanceConfig.from_fixtures(fixtures_dir)
    store = NoticeStore(db_path, config.lengths, config.agencies, clock, config.currency)
    try:
        if load_samples:
            store.load(config.source)
        faults = Faults.from_file(faults_file) if faults_file is not None else None
    except Exception:
        store.close()
        raise
    return FinanceBureau(store, config.mac_key, clock, rng or random.SystemRandom(), faults)
