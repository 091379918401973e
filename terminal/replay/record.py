"""A captured terminal ↔ host session written back as a scenario (docs/replay.md "Recording a session").

`possim record` hands over the exchanges its FrameProxy saw; this decodes
them in the dialect and writes what the terminal did as steps a simulated
terminal can do again: each request becomes the action of its kind with the
card (by its PAN in cards.yaml), amount and entry mode it was made with, and
its answer becomes expectations that hold on any day — the response code
and MTI as recorded, echoed fields as `echo`, fields that vary with time and
sequence only as `present`. A later request that quotes an earlier answer
(a void's or refund's RRN, a completion's authorization code, a QR order
number) gets a `${…}` reference to a capture on the step that produced it.

What the terminal does by itself is not a step of its own: the reversal of
an unanswered request (that step gets `fault: {drop: true}` and the
reversal's answer as `reversal:` expectations), advice repeats, the uploads
and trailer of a batch close.

Nothing is written in clear that identifies a card: PANs appear only
masked in comments, tracks, PIN blocks, chip data and keys never; a request
kept as a `raw` step is re-encoded without them.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from possim.fixtures import load_fixture
from possim.wire.codec import Codec, CodecError
from possim.wire.dialect import Dialect, builtin_names
from possim.wire.framing import FramingError, split_envelope
from possim.wire.masking import mask_pan
from possim.wire.message import Message
from possim.wire.money import currency, format_major
from possim.wire.payment_code import PaymentCodeError, read
from possim.wire.proxy import Exchange
from possim.wire.qr_data import QrDataError, encode_qr_data
from possim.wire.trace import HIDDEN_FIELDS, ICC_FIELD, PAN_FIELDS

from ..cards import Card, fixture_cards
from ..messages import ENTRY_MODES, TRAILER_PROCESSING_CODE, qr_data_of

VARYING_FIELDS = frozenset({7, 11, 12, 13, 15, 37, 38, 64, 128})
"""Answer fields that differ on every run (time, sequence, RRN, authorization code, MAC): checked present only."""
ECHO_FIELDS = (4, 11, 41, 42)
"""Answer fields that repeat the request's: checked as `echo` when they did."""
SECRET_FIELDS = PAN_FIELDS | HIDDEN_FIELDS | {ICC_FIELD, 14, 62, 96}
"""Never written with their value: card data (PAN, expiry, tracks, PIN block, chip data) and keys (62, 96)."""
UNKNOWN = "UNKNOWN"
"""Written where a card or wallet of the session is not in the fixtures: the scenario fails to load until fixed."""

_ENTRY_OF = {digits: entry for entry, digits in ENTRY_MODES.items()} | {"90": "swipe"}
"""Field 22 digits 1-2 → the `entry` argument; 90 is a full magnetic stripe read."""
_REVERSAL_MTIS = ("0400", "0401")
_TERMINAL_REASONS = ("98", "96")
"""Field 39 of a reversal the terminal made by itself: no answer in time, answer unreadable."""
_CARD_KINDS = {"sale": "purchase", "preauth": "preauth", "balance": "balance", "fee_payment": "fee_payment"}
_QR_ORDER_KINDS = ("qr_order", "qr_sale")
_PLAIN = re.compile(r"[A-Za-z_](?:[A-Za-z0-9_ .()-]*[A-Za-z0-9_.)])?\Z")
"""Text YAML reads back as the same string unquoted, in block and flow context alike."""
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def session_scenario(
    exchanges: list[Exchange], dialect: Dialect, *, name: str, fixtures_dir: Path | None = None
) -> tuple[str, list[str]]:
    """The scenario YAML of a recorded session, and warnings about what it could not write faithfully
    (a card or wallet not in the fixtures, a request kept raw, an exchange that could not be decoded)."""
    recorder = _Recorder(dialect, fixtures_dir)
    for number, exchange in enumerate(sorted(exchanges, key=lambda e: e.sent_at), start=1):
        recorder.take(number, exchange)
    return recorder.document(name, exchanges), recorder.warnings


def exchange_line(exchange: Exchange, dialect: Dialect) -> str:
    """One line for whoever watches a recording: time, client, MTI, STAN, the answer's MTI and code, the card
    masked. Never card data; an undecodable frame is named by its size only."""
    codec = Codec(dialect)

    def decoded(frame: bytes) -> Message | None:
        try:
            return _decode(codec, frame)
        except (CodecError, FramingError):
            return None

    request = decoded(exchange.request)
    if request is None:
        asked = f"undecodable request of {len(exchange.request)} bytes"
    else:
        pan = _pan(request)
        asked = " ".join(filter(None, [request.mti, f"stan {request.get(11) or '-'}", pan and mask_pan(pan)]))
    if exchange.response is None:
        answered = f"no answer ({exchange.fault})" if exchange.fault else "no answer"
    else:
        answer = decoded(exchange.response)
        answered = f"{answer.mti} {answer.get(39) or '--'}" if answer is not None else "undecodable answer"
    return f"{exchange.sent_at:%H:%M:%S} {exchange.peer} {asked} -> {answered}"


@dataclass
class _Step:
    tid: str
    action: str
    args: dict[str, Any]
    title: str
    request: Message
    answer: Message | None
    kind: str | None = None
    note: str | None = None
    """A comment written after the action (a card not in cards.yaml, shown masked)."""
    expect: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    reversal: dict[str, Any] = field(default_factory=dict)
    capture: dict[str, str] = field(default_factory=dict)
    fault: dict[str, Any] | None = None
    outcome: str | None = None
    sent_at: datetime | None = None


class _Recorder:
    def __init__(self, dialect: Dialect, fixtures_dir: Path | None):
        self.dialect = dialect
        self.codec = Codec(dialect)
        self.cards = fixture_cards(fixtures_dir)
        self.wallets = load_fixture("wallets.yaml", fixtures_dir).get("accounts") or {}
        self.known_tids = {str(t.get("tid")) for t in load_fixture("terminals.yaml", fixtures_dir).get("terminals") or []}
        self.warnings: list[str] = []
        self.steps: list[_Step] = []
        self.terminals: dict[str, str] = {}
        """Terminal ID → alias, in order of first appearance."""
        self.by_stan: dict[tuple[str, str], _Step] = {}
        self.by_rrn: dict[str, _Step] = {}
        self.by_auth: dict[str, _Step] = {}
        self.by_order: dict[str, _Step] = {}
        self.reversals: dict[tuple[str, str], _Step] = {}
        """(terminal, original STAN) → the step a reversal of it was written into (or is), so repeats join it."""
        self.timeouts: dict[str, float] = {}
        """Terminal ID → how long it waited for an answer that never came (until its reversal left), so the
        replay waits as long and no longer."""
        self.closing: dict[str, _Step] = {}
        """Terminals in the middle of a batch close: their uploads and trailer belong to that step."""
        self.counters: Counter[str] = Counter()

    def take(self, number: int, exchange: Exchange) -> None:
        where = f"exchange {number} ({exchange.sent_at:%H:%M:%S} from {exchange.peer})"
        try:
            request = _decode(self.codec, exchange.request)
        except (CodecError, FramingError) as exc:
            self.warnings.append(f"{where}: request not decodable in {self.dialect.name} ({exc}): left out")
            return
        answer = None
        if exchange.response is not None:
            try:
                answer = _decode(self.codec, exchange.response)
            except (CodecError, FramingError) as exc:
                self.warnings.append(f"{where}: answer not decodable in {self.dialect.name} ({exc}): not checked")
        tid = request.get(41) or ""
        if tid not in self.terminals:
            self.terminals[tid] = "pos" if not self.terminals else f"pos{len(self.terminals) + 1}"
            if tid not in self.known_tids:
                self.warnings.append(f"terminal {tid or '(no field 41)'} is not in terminals.yaml: add it before replaying")
        if tid in self.closing and (request.mti == "0320" or self._trailer(request)):
            return  # the close's own upload and trailer
        self.closing.pop(tid, None)
        if request.mti in _REVERSAL_MTIS:
            self._reversal(tid, request, answer, exchange.sent_at)
            return
        if request.mti == "0221" and (tid, request.get(11) or "") in self.by_stan:
            return  # an advice repeated: the terminal does that by itself
        step = self._step(where, tid, request, answer)
        if step is None:
            return
        if step.kind == "offline":
            # An offline sale sends nothing when it is made; its advice goes on the next online request or here.
            self.steps.append(step)
            step = _Step(tid, "send_advices", {}, "send the offline advice", request, answer, "offline")
        step.sent_at = exchange.sent_at
        if exchange.response is None:
            step.fault = {"drop": True}
            step.outcome = "no_answer"
            step.title += " (no answer)"
        elif answer is not None:
            self._expect(step, request, answer)
        self.steps.append(step)
        if request.get(11):
            self.by_stan[(tid, request[11])] = step
        if answer is not None:
            self._learn(step, answer)

    def _trailer(self, request: Message) -> bool:
        return request.mti == "0500" and request.get(3) == TRAILER_PROCESSING_CODE

    # what each request is

    def _step(self, where: str, tid: str, request: Message, answer: Message | None) -> _Step | None:
        if request.mti == "0800":
            return _Step(tid, "signon", {}, "sign on", request, answer)
        if request.mti == "0500" and not self._trailer(request):
            step = _Step(tid, "batch_close", {}, "batch close", request, answer)
            self.closing[tid] = step
            return step
        kind = self.dialect.transaction_of(request)
        if kind is None:
            return self._raw(where, tid, request, answer, f"{request.mti} is no transaction of {self.dialect.name}")
        name = kind.name
        amount = int(request[4]) if (request.get(4) or "").isdigit() else None
        money = self._money(request, amount)
        if name in _CARD_KINDS or name in ("refund", "preauth_void", "completion", "offline"):
            return self._card_step(where, tid, request, answer, name, amount, money)
        if name in ("sale_void", "completion_void"):
            return self._void(where, tid, request, answer, money)
        return self._qr_step(where, tid, request, answer, name, amount, money)

    def _card_step(self, where: str, tid: str, request: Message, answer: Message | None, kind: str,
                   amount: int | None, money: str) -> _Step:
        action = _CARD_KINDS.get(kind, kind)
        args: dict[str, Any] = {}
        if kind == "fee_payment":
            args["pay_code"] = self._qr(request).get("pay_code", "")
        card, note = self._card(where, request)
        args["card"] = card
        if amount is not None and kind != "balance":
            args["amount"] = amount
        if kind in ("refund", "preauth_void", "completion"):
            args["rrn"] = self._quoted(where, request, 37)
        if kind in ("preauth_void", "completion"):
            args["auth_code"] = self._quoted(where, request, 38)
        if kind not in ("refund", "fee_payment"):
            entry = self._entry(where, request)
            if entry is not None and entry != ("chip" if kind == "offline" else "swipe"):
                args["entry"] = entry
        if 52 in request and kind not in ("refund", "offline"):
            args["pin"] = "card"
        title = " ".join(filter(None, [action, money, card if card != UNKNOWN else "unknown card"]))
        return _Step(tid, action, args, title, request, answer, kind, note)

    def _void(self, where: str, tid: str, request: Message, answer: Message | None, money: str) -> _Step:
        args: dict[str, Any] = {}
        original = self.by_rrn.get(request.get(37) or "")
        if original is not None and original.tid == tid:
            args["stan"] = "${" + self._capture(original, "request.11", "stan") + "}"
        else:
            self.warnings.append(f"{where}: the void's original (RRN {request.get(37)}) was not recorded: the replay "
                                 "voids the last sale of its open batch")
        note = None
        if any(n in request for n in (2, 35)):
            args["card"], note = self._card(where, request)
        return _Step(tid, "void", args, f"void {money}".strip(), request, answer, "sale_void", note)

    def _qr_step(self, where: str, tid: str, request: Message, answer: Message | None, kind: str,
                 amount: int | None, money: str) -> _Step:
        qr = self._qr(request)
        if kind == "qr_order" and qr.get("pay_code"):
            return _Step(tid, "fee_qr", {"pay_code": qr["pay_code"], "amount": amount}, f"fee QR {money}", request,
                         answer, kind)
        if kind == "qr_order":
            return _Step(tid, "qr_order", {"amount": amount}, f"QR order {money}", request, answer, kind)
        if kind == "fee_query":
            return _Step(tid, "fee_query", {"pay_code": qr.get("pay_code", "")}, "fee query", request, answer, kind)
        if kind in ("qr_query", "qr_close", "qr_refund"):
            args: dict[str, Any] = {"order_no": self._quoted_order(where, qr.get("order_no", ""))}
            if kind == "qr_refund":
                args["amount"] = amount
            title = {"qr_query": "QR query", "qr_close": "QR close", "qr_refund": f"QR refund {money}"}[kind]
            return _Step(tid, kind, args, title, request, answer, kind)
        if kind == "qr_sale":
            wallet, note = self._wallet(where, qr.get("payment_code", ""))
            key = "code" if wallet == UNKNOWN else "wallet"
            return _Step(tid, "qr_scan", {"amount": amount, key: wallet}, f"QR scan {money} {wallet}", request,
                         answer, kind, note)
        return self._raw(where, tid, request, answer, f"{kind} has no scenario action")

    def _raw(self, where: str, tid: str, request: Message, answer: Message | None, why: str) -> _Step | None:
        """The request as a `raw` body, re-encoded without card data, keys or MAC (they could not be sent
        again anyway: the MAC is over this session's keys)."""
        mac = self.dialect.roles.get("mac", "").partition(".")[0]
        left_out = (SECRET_FIELDS | {int(mac)}) if mac else SECRET_FIELDS
        kept = Message(request.mti, {n: v for n, v in request.fields.items() if n not in left_out})
        qr_field = self.dialect.roles.get("qr_data")
        if qr_field and int(qr_field) in kept and "payment_code" in self._qr(request):
            kept[int(qr_field)] = encode_qr_data({k: v for k, v in self._qr(request).items() if k != "payment_code"})
        try:
            body = self.codec.encode(kept)
        except CodecError as exc:
            self.warnings.append(f"{where}: {why}, and it cannot be re-encoded without its card data ({exc}): left out")
            return None
        dropped = sorted(n for n in request.fields if n not in kept.fields)
        without = f" (written without field{'s' if len(dropped) > 1 else ''} {', '.join(map(str, dropped))})" if dropped else ""
        self.warnings.append(f"{where}: {why}: kept as a raw {request.mti}{without}")
        return _Step(tid, "raw", {"hex": body.hex().upper()}, f"raw {request.mti}", request, answer)

    # reversals

    def _reversal(self, tid: str, request: Message, answer: Message | None, at: datetime) -> None:
        key = (tid, _original_stan(request) or "")
        earlier = self.reversals.get(key)
        if earlier is not None:
            # A repeat (0401) of a reversal already written: the terminal repeats by itself.
            if earlier.action not in ("reverse", "qr_cancel"):
                self._reversal_answer(earlier, answer)
            return
        original = self.by_stan.get(key)
        if original is not None and (request.get(39) in _TERMINAL_REASONS or original.outcome == "no_answer"):
            # The terminal reversed it by itself: the reversal's answer belongs to that step.
            self.reversals[key] = original
            self._reversal_answer(original, answer)
            if original.outcome == "no_answer" and original.sent_at is not None:
                waited = math.ceil((at - original.sent_at).total_seconds() * 10) / 10
                self.timeouts[tid] = min(self.timeouts.get(tid, waited), waited)
            return
        order = self._order_of(original) if original is not None else None
        if order is not None:
            step = _Step(tid, "qr_cancel", {"order_no": order}, "QR cancel", request, answer)
        else:
            step = _Step(tid, "reverse", {}, "reversal", request, answer)
        self.reversals[key] = step
        if answer is not None:
            self._expect(step, request, answer)
        else:
            step.fault, step.outcome = {"drop": True}, "no_answer"
        self.steps.append(step)

    @staticmethod
    def _reversal_answer(step: _Step, answer: Message | None) -> None:
        """The 0410 that acknowledged the reversal a step's request caused (docs: `reversal: {"39": "00"}`)."""
        if answer is not None and answer.get(39) == "00":
            step.reversal = {"mti": answer.mti, "39": "00"}

    def _order_of(self, step: _Step) -> str | None:
        """`${orderN}` for the order a QR order or scan step made, None when it made none."""
        if step.kind not in _QR_ORDER_KINDS or step not in self.by_order.values():
            return None
        return "${" + self._capture(step, "result.order_no", "order") + "}"

    # answers

    def _expect(self, step: _Step, request: Message, answer: Message) -> None:
        if step.action == "batch_close":
            step.result = {"response_code": answer.get(39)}
            return
        if step.action == "send_advices":
            step.result = {"remaining": 0}
            return
        expect: dict[str, Any] = {"mti": answer.mti}
        if 39 in answer:
            expect["39"] = answer[39]
        mac = self.dialect.roles.get("mac", "").partition(".")[0]
        varying = (VARYING_FIELDS | {int(mac)}) if mac else VARYING_FIELDS
        for number in sorted(answer.fields):
            value = answer[number]
            echoed = request.get(number) == value
            if number == 39:
                continue
            if (number in ECHO_FIELDS or (number == 37 and 37 in request)) and echoed:
                expect[str(number)] = "echo"
            elif number in varying or number in SECRET_FIELDS:
                expect[str(number)] = "present"
            elif number in ECHO_FIELDS:
                expect[str(number)] = value
        step.expect = expect
        code = answer.get(39)
        if code and code != "00":
            step.title += f" ({code})"

    def _learn(self, step: _Step, answer: Message) -> None:
        """Remember what later requests may quote: the answer's RRN, authorization code, QR order number."""
        if answer.get(39) != "00" and not (step.kind in _QR_ORDER_KINDS and answer.get(39) == "09"):
            return
        if answer.get(37) and step.action not in ("void", "reverse"):
            self.by_rrn.setdefault(answer[37], step)
        if answer.get(38):
            self.by_auth.setdefault(answer[38], step)
        if step.kind in _QR_ORDER_KINDS:
            order_no = self._qr(answer).get("order_no")
            if order_no:
                self.by_order.setdefault(order_no, step)

    # references to earlier answers

    def _capture(self, step: _Step, source: str, prefix: str) -> str:
        for name, existing in step.capture.items():
            if existing == source:
                return name
        self.counters[prefix] += 1
        name = f"{prefix}{self.counters[prefix]}"
        step.capture[name] = source
        return name

    def _quoted(self, where: str, request: Message, field: int) -> str:
        """The RRN (37) or authorization code (38) a request quotes, as a reference to the step that got it."""
        value = request.get(field) or ""
        answered, prefix, what = ((self.by_rrn, "rrn", f"RRN {value} quoted by the request") if field == 37
                                  else (self.by_auth, "auth", f"authorization code {value}"))
        original = answered.get(value)
        if original is None:
            self.warnings.append(f"{where}: {what} was not answered in this recording: "
                                 "written as recorded, the replay's host will not know it")
            return value
        return "${" + self._capture(original, str(field), prefix) + "}"

    def _quoted_order(self, where: str, order_no: str) -> str:
        original = self.by_order.get(order_no)
        if original is None:
            self.warnings.append(f"{where}: QR order {order_no} was not made in this recording: written as recorded")
            return order_no
        return "${" + self._capture(original, "result.order_no", "order") + "}"

    # request contents

    def _qr(self, message: Message) -> dict[str, str]:
        try:
            return qr_data_of(self.dialect, message)
        except QrDataError:
            return {}

    def _card(self, where: str, request: Message) -> tuple[str, str | None]:
        """The cards.yaml name of the request's card, or UNKNOWN with a comment showing its masked PAN."""
        pan = _pan(request)
        if pan is None:
            self.warnings.append(f"{where}: the request carries no PAN (field 2) or track 2 (35)")
            return UNKNOWN, "no card data in the request"
        card = next((c for c in self.cards.values() if _same_card(c, pan)), None)
        if card is not None:
            return card.name, None
        self.warnings.append(f"{where}: card {mask_pan(pan)} is not in cards.yaml: written as {UNKNOWN}")
        return UNKNOWN, f"card {mask_pan(pan)} is not in cards.yaml"

    def _wallet(self, where: str, code: str) -> tuple[str, str | None]:
        """The wallets.yaml account whose payment code was scanned (a code is good for a minute: the replay's
        wallet shows a fresh one), or UNKNOWN."""
        try:
            parts = read(code)
        except PaymentCodeError:
            parts = None
        if parts is not None and isinstance(self.wallets, dict):
            for name, account in self.wallets.items():
                if isinstance(account, dict) and (account.get("provider"), str(account.get("number"))) == (
                    parts.channel, parts.account_number
                ):
                    return str(name), None
        self.warnings.append(f"{where}: payment code {mask_pan(code)} is of no wallet in wallets.yaml: "
                             f"written as code {UNKNOWN}")
        return UNKNOWN, f"payment code {mask_pan(code)} is of no wallet in wallets.yaml"

    def _entry(self, where: str, request: Message) -> str | None:
        digits = (request.get(22) or "")[:2]
        entry = _ENTRY_OF.get(digits)
        if entry is None and digits:
            self.warnings.append(f"{where}: entry mode {request.get(22)} is none of manual, swipe, chip, "
                                 "contactless: replayed as a swipe")
        return entry

    def _money(self, request: Message, amount: int | None) -> str:
        if amount is None:
            return ""
        try:
            return format_major(amount, currency(request.get(49) or "156"))
        except ValueError:
            return str(amount)

    # the document

    def document(self, name: str, exchanges: list[Exchange]) -> str:
        times = sorted(e.sent_at for e in exchanges)
        span = f"{times[0]:%Y-%m-%d %H:%M:%S} to {times[-1]:%H:%M:%S}" if times else "nothing"
        dialect = self.dialect.name if self.dialect.name in builtin_names() else self.dialect.source
        lines = [
            f"# Recorded by `possim record`: {len(exchanges)} exchange{'s' if len(exchanges) != 1 else ''} "
            f"from {span}, dialect {self.dialect.name}.",
            "# Answers are checked as they came; fields that vary with time and sequence (7, 11, 12, 13, 15, 37, 38,",
            "# MAC) only as present. Card data is never written: cards are named from cards.yaml.",
        ]
        if self.timeouts:
            lines.append("# A terminal's timeout is how long it waited for the answer that never came.")
        lines += [f"# warning: {w}" for w in self.warnings]
        lines += [
            f"name: {_scalar(name)}",
            f"description: {_scalar(f'Recorded session: {len(self.steps)} steps from {span}.')}",
            "tags: [recorded]",
            f"dialect: {_scalar(dialect)}",
            "terminals:",
            *(f"  {alias}: {self._terminal(tid)}" for tid, alias in self.terminals.items()),
            "steps:" if self.steps else "steps: []",
        ]
        many = len(self.terminals) > 1
        for step in self.steps:
            lines.append("")
            lines += _step_lines(step, self.terminals[step.tid] if many else None)
        return "\n".join(lines) + "\n"


    def _terminal(self, tid: str) -> str:
        if tid in self.timeouts:
            return _flow({"tid": tid, "timeout": self.timeouts[tid]})
        return _scalar(tid)


def _step_lines(step: _Step, alias: str | None) -> list[str]:
    lines = [f"  - name: {_scalar(step.title)}"]
    if alias is not None:
        lines.append(f"    terminal: {alias}")
    if step.action == "raw":
        action = f"    raw: {_scalar(step.args['hex'])}"
    else:
        action = f"    {step.action}: {_flow(step.args)}"
    lines.append(action + (f"  # {step.note}" if step.note else ""))
    if step.fault is not None:
        lines.append(f"    fault: {_flow(step.fault)}")
    if step.outcome is not None:
        lines.append(f"    outcome: {step.outcome}")
    for key in ("expect", "result", "reversal"):
        values = getattr(step, key)
        if values:
            lines.append(f"    {key}:")
            lines += [f"      {_scalar(k)}: {_scalar(v)}" for k, v in values.items()]
    if step.capture:
        lines.append(f"    capture: {_flow(step.capture)}")
    return lines


def _flow(values: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{_scalar(k)}: {_scalar(v)}" for k, v in values.items()) + "}"


def _scalar(value: Any) -> str:
    """A YAML scalar: bare when it reads back as the same string, else double-quoted (JSON's quoting is YAML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return "null"
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)


def _decode(codec: Codec, frame: bytes) -> Message:
    """The message of a whole frame: length header, then TPDU and header, then the body."""
    framing = codec.dialect.framing
    return codec.decode(split_envelope(framing, frame[framing.length_size:])[1])


def _pan(request: Message) -> str | None:
    if request.get(2):
        return request[2]
    track = request.get(35)
    if track:
        return re.split(r"[D=]", track, maxsplit=1)[0]
    return None


def _same_card(card: Card, pan: str) -> bool:
    """The card of cards.yaml this is: same masked PAN (first 6, last 4, length) and, since the session gives the
    whole number, the same number; a masked match alone could name a live card after a test card."""
    return card.masked_pan == mask_pan(pan) and card.pan == pan


def _original_stan(reversal: Message) -> str | None:
    """The STAN of the request a 0400/0401 reverses: from field 90 (MTI, STAN, …) where the dialect sends it,
    else its own (dialects without field 7 reuse the original's)."""
    data = reversal.get(90)
    if data and len(data) >= 10:
        return data[4:10]
    return reversal.get(11)
