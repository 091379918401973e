"""The terminal's side of docs/messages.md: requests built and answers checked, no I/O.

Every dialect difference is read from the dialect's data — where a role
lives (`set_role`), whether field 7 is sent (`transmission_datetime`) — so a
user's dialect file gets the same flows without code changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from possim.wire.batch_totals import BatchTotals, encode_cup48, set_iso_totals
from possim.wire.dialect import Dialect
from possim.wire.framing import Framing, split_envelope
from possim.wire.message import Message, response_mti
from possim.wire.qr_data import QrDataError, decode_qr_data, encode_qr_data

from .cards import Card
from .pin_pad import SECURITY_CONTROL, EncryptedPin

NETWORK_SIGN_ON = "001"
NETWORK_NONE = "000"
"""60.1 of a sign-on; financial kinds take theirs from the dialect's transaction table."""
OPERATOR = "001"
ENTRY_MODES = {"manual": "01", "swipe": "02", "chip": "05", "contactless": "07"}
"""Field 22 digits 1-2 by how the card was read."""
CHIP_ENTRIES = frozenset({"chip", "contactless"})
CARD_SEQUENCE = "001"
"""Field 23 of a chip read: the card's PAN sequence number (5F34 01)."""
NEEDS_AUTH_CODE = frozenset({"completion", "preauth_void"})
CARDLESS = frozenset({"sale_void", "completion_void", "fee_query"})
FEE_KINDS = frozenset({"fee_query", "fee_payment"})
"""Government fee kinds: the payment notice's code travels in the qr_data field (docs/fees.md)."""
"""Kinds the host matches by RRN alone: the card may be presented again, but need not be."""
SCANNED_CARD_FIELDS = frozenset({2, 14, 22, 23, 35, 55})
"""What a scanned EMV consumer-presented code gives a card sale (wire/emv_cpm.authorization_fields)."""

QR_KINDS = frozenset({"qr_order", "qr_query", "qr_close", "qr_sale", "qr_refund"})
"""Kinds that carry QR data (the dialect's `qr_data` role) and never a card."""
QR_WITH_AMOUNT = frozenset({"qr_order", "qr_sale", "qr_refund"})
QR_NEEDS = {"qr_query": "order_no", "qr_close": "order_no", "qr_refund": "order_no", "qr_sale": "payment_code"}
"""The QR data each kind's request must carry; a qr_order carries none (amount and currency say it all)."""
QR_MAKES_ORDER = frozenset({"qr_order", "qr_sale"})
"""Kinds whose approval creates an order at the host: the ones a reversal undoes."""
PAYING = "09"
"""A qr_sale's "request in progress": the wallet waits for the payer's password."""
CREATED, ORDER_PAYING, PAID, CLOSED, REFUNDED, REVERSED = "created", "paying", "paid", "closed", "refunded", "reversed"
ORDER_STATUSES = (CREATED, ORDER_PAYING, PAID, CLOSED, REFUNDED, REVERSED)
OPEN_ORDER = frozenset({CREATED, ORDER_PAYING})
"""An order the wallet may still pay."""
PAID_ORDER = frozenset({PAID, REFUNDED})
"""An order the wallet paid (a refunded one too): its payment counts as a debit of the batch it was made in."""

REASON_NO_ANSWER = "98"
REASON_UNREADABLE = "96"
REASON_CANCELLED = "17"
"""Field 39 of a reversal: why the original is being reversed (17: the merchant cancelled it)."""

REVERSAL_KEEPS = (3, 4, 7, 11, 22, 25, 41, 42, 49, 60)
"""The parts of a request its reversal needs. No card data: a 0400 carries no PAN or track."""
_ECHOED_BY_REVERSAL = (3, 4, 22, 25, 41, 42, 49)
_NO_INSTITUTION = "0" * 11


def transmission_datetime(now: datetime) -> str:
    """Field 7, MMDDhhmmss."""
    return now.strftime("%m%d%H%M%S")


def sends_transmission_datetime(dialect: Dialect) -> bool:
    return bool(dialect.convention("transmission_datetime", False))


def reversal_reuses_stan(dialect: Dialect) -> bool:
    """Whether a reversal carries its original's STAN instead of a new one.

    The host finds an original by field 90 when it has one, else by
    (terminal, STAN, date). Field 90 needs the original's field 7, so a
    dialect without field 7 can only point at the original by reusing its STAN.
    """
    return not sends_transmission_datetime(dialect)


def _sends_operator(dialect: Dialect) -> bool:
    """Whether sign-ons name the operator in field 63 (`conventions.sign_on_operator`, as cup does)."""
    return bool(dialect.convention("sign_on_operator", False))


def _stamp(dialect: Dialect, message: Message, now: datetime) -> None:
    if sends_transmission_datetime(dialect):
        message[7] = transmission_datetime(now)


def sign_on_code(dialect: Dialect, track_key: bool) -> str:
    """The network code that asks for working keys: the dialect's (cup 003, 004 with a track key), else ISO's 001."""
    if track_key:
        code = dialect.convention("sign_on_track_key_code")
        if code is None:
            raise ValueError(f"dialect {dialect.name} has no sign-on code that asks for a track key")
        return str(code)
    return str(dialect.convention("sign_on_code", NETWORK_SIGN_ON))


def build_sign_on(
    dialect: Dialect, *, tid: str, mid: str, stan: str, now: datetime, batch_number: int, track_key: bool = False
) -> Message:
    message = _management(dialect, "0800", tid=tid, mid=mid, stan=stan, now=now, batch_number=batch_number,
                          network_code=sign_on_code(dialect, track_key), in_own_field=True)
    if _sends_operator(dialect):
        message[63] = OPERATOR
    return message


def entry_mode(dialect: Dialect, entry: str, pin_pad: bool, pin_sent: bool) -> str:
    """Field 22: how the card was read (01 keyed, 02 magstripe, 05 chip, 07 contactless), then 1 or 2 for the PIN.

    ISO 8583:1987 makes the third digit the terminal's PIN entry capability;
    UnionPay POS (`conventions.entry_mode_pin: included`) makes it whether
    this message carries a PIN.
    """
    if entry not in ENTRY_MODES:
        raise ValueError(f"entry {entry!r} must be one of {', '.join(ENTRY_MODES)}")
    pin = pin_sent if dialect.convention("entry_mode_pin") == "included" else pin_pad
    return ENTRY_MODES[entry] + ("1" if pin else "2")


def check_amount(amount: int) -> None:
    """Refuse what cannot be put in field 4; zero is allowed, so a tester can see the host's 13."""
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount < 10**12:
        raise ValueError(f"amount {amount!r} must be whole minor units from 0 to 999999999999")


def check_purchase(amount: int, processing_code: str) -> None:
    check_amount(amount)
    if not isinstance(processing_code, str) or len(processing_code) != 6 or not processing_code.isdigit():
        raise ValueError(f"processing code {processing_code!r} must be 6 digits")


@dataclass(frozen=True)
class OriginalRef:
    """How a void, refund, pre-auth void or completion names its original (docs/transactions.md)."""

    rrn: str
    """Field 37: the original's RRN as the host answered it."""
    auth_code: str | None = None
    """Field 38, for completion and preauth_void."""
    batch_number: int | None = None
    stan: str | None = None
    day: str | None = None
    """The original's date MMDD. Batch, STAN and date make cup's field 61; unknown parts are sent as zeros."""

    def field61(self) -> str:
        return f"{self.batch_number or 0:06d}{self.stan or '000000'}{self.day or '0000'}"


def names_original_in_61(dialect: Dialect) -> bool:
    """Whether field 61 carries original batch · STAN · date: in dialects that number batches (cup 60.2)."""
    return "batch_number" in dialect.roles


def build_request(
    dialect: Dialect,
    kind: str,
    *,
    tid: str,
    mid: str,
    stan: str,
    now: datetime,
    amount: int | None,
    currency: str,
    card: Card | None,
    entry: str = "swipe",
    pin_pad: bool,
    batch_number: int,
    pin: EncryptedPin | None = None,
    chip: bytes | None = None,
    original: OriginalRef | None = None,
    local_auth_code: str | None = None,
    processing_code: str | None = None,
    qr: Mapping[str, str] | None = None,
    card_fields: Mapping[int, str] | None = None,
) -> Message:
    """A request of transaction `kind`: MTI, processing code, condition and type code from the dialect's table.

    The card goes as track 2 (swipe), PAN and expiry (manual), or track 2
    equivalent with card sequence number and chip data `chip` (chip,
    contactless); never both track and PAN. `card` None is for voids,
    which the host matches by RRN. `amount` None leaves field 4 out (balance).
    `local_auth_code` is the code an offline approval gave (field 38).

    `card_fields` is a card read from a scanned EMV consumer-presented code,
    sent as the code gave it (wire/emv_cpm.authorization_fields: 35 or 2 and
    14, 22, 23, 55) in place of `card`. The QR kinds carry no card: `qr`
    (wire/qr_data.py names) goes in the dialect's `qr_data` role.
    """
    spec = dialect.transaction(kind)
    code = processing_code or spec.processing_code
    if amount is not None:
        check_purchase(amount, code)
    if spec.references_original and (original is None or not original.rrn):
        raise ValueError(f"{kind} needs its original's RRN (field 37)")
    if kind in NEEDS_AUTH_CODE and (original is None or not original.auth_code):
        raise ValueError(f"{kind} needs its original's authorization code (field 38)")
    _check_qr(dialect, kind, amount, qr, card is not None or card_fields is not None)
    if card is not None and card_fields is not None:
        raise ValueError(f"{kind}: a card is presented or scanned, not both")
    if card_fields is not None:
        _check_scanned(kind, card_fields)
    if card is None and card_fields is None and kind not in CARDLESS | QR_KINDS:
        raise ValueError(f"{kind} needs a card")
    if card is not None and (entry in CHIP_ENTRIES) != (chip is not None):
        raise ValueError(f"entry {entry!r} {'needs' if entry in CHIP_ENTRIES else 'takes no'} chip data (field 55)")
    message = Message(spec.mti)
    if card is not None and entry == "manual":
        message[2] = card.pan
        message[14] = card.expiry
    message[3] = code
    if amount is not None:
        message[4] = f"{amount:012d}"
    _stamp(dialect, message, now)
    message[11] = stan
    message[12] = now.strftime("%H%M%S")
    message[13] = now.strftime("%m%d")
    if card is not None:
        message[22] = entry_mode(dialect, entry, pin_pad, pin is not None)
        if chip is not None:
            message[23] = CARD_SEQUENCE
    message[25] = spec.condition
    if card is not None and entry != "manual":
        message[35] = card.track2
    if original is not None:
        message[37] = original.rrn
        if kind in NEEDS_AUTH_CODE:
            message[38] = original.auth_code or ""
    if local_auth_code is not None:
        message[38] = local_auth_code
    if pin is not None:
        message[52] = pin.block
        message[53] = SECURITY_CONTROL
        if pin.ksn is not None:
            dialect.set_role(message, "ksn", pin.ksn)
    if chip is not None:
        message[55] = chip.hex().upper()
    for number, value in (card_fields or {}).items():
        message[number] = value
    message[41] = tid
    message[42] = mid
    message[49] = currency
    if qr:
        dialect.set_role(message, "qr_data", encode_qr_data(qr))
    if spec.type_code is not None:
        dialect.set_role(message, "transaction_type", spec.type_code)
    dialect.set_role(message, "batch_number", f"{batch_number:06d}")
    if "." in dialect.roles.get("network_code", ""):
        # A positional subfield (cup 60.3) is filled with "000" so the ones before it read right;
        # a network code with a field of its own (iso87's 70) has no place in a financial message.
        dialect.set_role(message, "network_code", NETWORK_NONE)
    if original is not None and names_original_in_61(dialect):
        message[61] = original.field61()
    return message


def _check_qr(dialect: Dialect, kind: str, amount: int | None, qr: Mapping[str, str] | None, has_card: bool) -> None:
    """A QR kind carries its QR data and no card; a fee kind its payment code (and a fee payment its card); any
    other kind carries no QR data."""
    if kind in FEE_KINDS:
        if "qr_data" not in dialect.roles:
            raise ValueError(f"dialect {dialect.name} has no qr_data role: it cannot carry {kind}")
        if not (qr or {}).get("pay_code", "").isdigit():
            raise ValueError(f"{kind} needs the notice's payment code (digits)")
        return
    if kind not in QR_KINDS:
        if qr:
            raise ValueError(f"{kind} carries no QR data")
        return
    if has_card:
        raise ValueError(f"{kind} carries no card: QR requests have no card fields")
    if "qr_data" not in dialect.roles:
        raise ValueError(f"dialect {dialect.name} has no qr_data role: it cannot carry {kind}")
    if kind in QR_WITH_AMOUNT and amount is None:
        raise ValueError(f"{kind} needs an amount (field 4)")
    needed = QR_NEEDS.get(kind)
    if needed is not None and not (qr or {}).get(needed):
        raise ValueError(f"{kind} needs {needed} in its QR data")


def _check_scanned(kind: str, card_fields: Mapping[int, str]) -> None:
    stray = set(card_fields) - SCANNED_CARD_FIELDS
    if stray:
        raise ValueError(f"{kind}: field {min(stray)} is not card data a scanned code gives")
    if 22 not in card_fields or not (35 in card_fields or 2 in card_fields):
        raise ValueError(f"{kind}: a scanned card needs field 22 and track 2 (35) or a PAN (2)")


def build_purchase(
    dialect: Dialect,
    *,
    tid: str,
    mid: str,
    stan: str,
    now: datetime,
    amount: int,
    currency: str,
    card: Card,
    manual: bool,
    pin_pad: bool,
    batch_number: int,
    processing_code: str = "000000",
    pin: EncryptedPin | None = None,
) -> Message:
    """A magstripe or keyed sale (demo's raw frames use it); `build_request` makes every kind."""
    return build_request(
        dialect, "sale", tid=tid, mid=mid, stan=stan, now=now, amount=amount, currency=currency, card=card,
        entry="manual" if manual else "swipe", pin_pad=pin_pad, batch_number=batch_number, pin=pin,
        processing_code=processing_code,
    )


def balance_of(answer: Message) -> int | None:
    """The available balance (minor units, negative when `D`) of a balance answer's field 54, None without one.

    docs/transactions.md: account type 00, amount type 02, currency 3, C/D, amount 12.
    """
    text = answer.get(54)
    if text is None or len(text) < 20:
        return None
    sign, digits = text[7], text[8:20]
    if sign not in "CD" or not digits.isdigit():
        return None
    return int(digits) if sign == "C" else -int(digits)


# batch close (docs/transactions.md "Batch close")

NETWORK_SETTLE = "201"
NETWORK_UPLOAD_END = "202"
TYPE_MANAGEMENT = "00"
TRAILER_PROCESSING_CODE = "960000"


def settles_in_field_48(dialect: Dialect) -> bool:
    """cup-style close (totals in 48, upload always, end-of-upload 202) where the dialect numbers batches;
    else iso87-style (fields 74-97, upload only when out of balance, trailer 0500)."""
    return "batch_number" in dialect.roles


def _management(dialect: Dialect, mti: str, *, tid: str, mid: str, stan: str, now: datetime, batch_number: int,
                network_code: str, in_own_field: bool = False) -> Message:
    """A network-management style message. Its network code goes in a positional subfield (cup 60.3)
    always, in a field of its own (iso87's 70) only when `in_own_field`: 0800 uses 70, 0500/0320 do not."""
    message = Message(mti)
    _stamp(dialect, message, now)
    message[11] = stan
    message[41] = tid
    message[42] = mid
    dialect.set_role(message, "transaction_type", TYPE_MANAGEMENT)
    dialect.set_role(message, "batch_number", f"{batch_number:06d}")
    if in_own_field or "." in dialect.roles.get("network_code", ""):
        dialect.set_role(message, "network_code", network_code)
    return message


def build_settlement(
    dialect: Dialect, *, tid: str, mid: str, stan: str, now: datetime, batch_number: int, currency: str,
    totals: BatchTotals, trailer: bool = False,
) -> Message:
    """The 0500 with the terminal's totals; `trailer` makes iso87's end-of-upload 0500 (processing code 960000)."""
    message = _management(dialect, "0500", tid=tid, mid=mid, stan=stan, now=now, batch_number=batch_number,
                          network_code=NETWORK_SETTLE)
    if trailer:
        message[3] = TRAILER_PROCESSING_CODE
    message[49] = currency
    if settles_in_field_48(dialect):
        message[48] = encode_cup48(totals)
    else:
        set_iso_totals(message, totals, now.strftime("%m%d"))
    return message


def build_cup_upload(
    dialect: Dialect, *, tid: str, mid: str, stan: str, now: datetime, batch_number: int, field48: str, end: bool = False
) -> Message:
    """A cup upload 0320 (60.3 201) carrying packed records, or the end-of-upload one (60.3 202) with the count."""
    message = _management(dialect, "0320", tid=tid, mid=mid, stan=stan, now=now, batch_number=batch_number,
                          network_code=NETWORK_UPLOAD_END if end else NETWORK_SETTLE)
    message[48] = field48
    return message


def build_iso_upload(dialect: Dialect, original: Message, rrn: str | None, *, now: datetime) -> Message:
    """An iso87 upload 0320 for one transaction: fields 3, 4, 11 of the original, 37 its RRN."""
    message = Message("0320")
    for number in (3, 4):
        if number in original:
            message[number] = original[number]
    _stamp(dialect, message, now)
    message[11] = original[11]
    if rrn:
        message[37] = rrn
    message[41] = original[41]
    message[42] = original[42]
    return message


def reversal_original(request: Message) -> Message:
    """What of a request to keep for reversing it: safe to store, enough to build the 0400."""
    return Message(request.mti, {n: request[n] for n in REVERSAL_KEEPS if n in request})


def build_reversal(
    dialect: Dialect, original: Message, *, stan: str, now: datetime, reason: str, repeat: bool
) -> Message:
    """A 0400 (0401 when `repeat`) undoing `original` (as kept by `reversal_original`).

    `stan` is the reversal's own STAN; dialects that reuse the original's
    (see `reversal_reuses_stan`) are given that one by the caller.
    """
    message = Message("0401" if repeat else "0400")
    for number in _ECHOED_BY_REVERSAL:
        if number in original:
            message[number] = original[number]
    _stamp(dialect, message, now)
    message[11] = stan
    message[39] = reason
    for role in ("transaction_type", "batch_number"):
        value = dialect.get_role(original, role)
        if value:
            dialect.set_role(message, role, value)
    if sends_transmission_datetime(dialect) and 7 in original:
        message[90] = f"{original.mti}{original[11]}{original[7]}{_NO_INSTITUTION}{_NO_INSTITUTION}"
    return message


def qr_data_of(dialect: Dialect, message: Message) -> dict[str, str]:
    """The QR data a message carries (wire/qr_data.py names); empty when it has none. QrDataError when unreadable."""
    text = dialect.get_role(message, "qr_data") if "qr_data" in dialect.roles else None
    return decode_qr_data(text) if text else {}


def qr_answer_problem(dialect: Dialect, request: Message, answer: Message) -> str | None:
    """Why a QR answer cannot be taken (None when it can): an approval (or a qr_sale's 09) must name its order
    and its state, and an answer about an order must be about the one asked for.

    An order the terminal cannot name is an order it could never close or
    refund: such an answer is treated as no answer, and reversed.
    """
    kind = dialect.transaction_of(request)
    if kind is None or kind.name not in QR_KINDS or answer[39] not in ("00", PAYING):
        return None
    field = dialect.roles["qr_data"]
    try:
        data = qr_data_of(dialect, answer)
        asked = qr_data_of(dialect, request).get("order_no")
    except QrDataError as exc:
        return f"answer field {field}: {exc}"
    if not data.get("order_no"):
        return f"answer {answer[39]} names no order (field {field}, order_no)"
    if data.get("status") not in ORDER_STATUSES:
        return f"answer field {field}: order status {data.get('status')!r} is not one of {', '.join(ORDER_STATUSES)}"
    if asked is not None and data["order_no"] != asked:
        return f"answer is about order {data['order_no']}, not the {asked} asked about"
    return None


def qr_time(text: str | None) -> str | None:
    """ISO 8601 (local, as the host's clock) of a QR data time YYYYMMDDhhmmss; the text as sent when it is not one."""
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%S").isoformat()
    except ValueError:
        return text


def answer_body(framing: Framing, payload: bytes) -> bytes:
    """The message body of an answer's payload (TPDU and header removed)."""
    return split_envelope(framing, payload)[1]


def answer_problem(request: Message, answer: Message) -> str | None:
    """Why `answer` cannot be taken as the answer to `request`, or None when it can."""
    expected = response_mti(request.mti)
    if answer.mti != expected:
        return f"answer MTI {answer.mti} does not answer {request.mti} (expected {expected})"
    if answer.get(11) != request.get(11):
        return f"answer STAN {answer.get(11)!r} does not match the request's {request.get(11)!r}"
    if 41 in answer and answer[41] != request.get(41):
        return f"answer terminal ID {answer[41]!r} is not {request.get(41)!r}"
    if not answer.get(39):
        return "answer has no response code (field 39)"
    return None


RESPONSE_TEXT = {
    "00": "approved",
    "03": "invalid merchant",
    "05": "do not honour: card blocked by the issuer",
    "09": "request in progress: the wallet waits for the payer's password",
    "12": "invalid transaction",
    "13": "invalid amount",
    "14": "invalid card number",
    "15": "no such issuer",
    "17": "customer cancellation",
    "25": "unable to locate record",
    "30": "format error",
    "41": "lost card",
    "43": "stolen card",
    "51": "insufficient funds",
    "54": "expired card",
    "55": "incorrect PIN",
    "57": "transaction not permitted to cardholder",
    "58": "transaction not permitted to terminal",
    "61": "exceeds amount limit",
    "62": "restricted card",
    "63": "security violation (MAC)",
    "68": "response received too late",
    "75": "PIN tries exceeded",
    "77": "sign on again",
    "80": "batch already closed",
    "91": "issuer inoperative",
    "94": "duplicate transmission",
    "96": "system malfunction",
    "95": "reconcile error: totals out of balance",
    "97": "terminal not registered",
    "98": "no answer in time",
    "A0": "MAC check failed: sign on again",
    "Y1": "approved offline",
}


FEE_RESPONSE_TEXT = {
    "13": "amount is not the notice's amount due",
    "25": "no such payment notice",
    "91": "the finance system did not answer: nothing charged",
    "N1": "notice already paid",
    "N2": "notice expired",
    "N3": "notice cancelled",
    "N4": "the finance system did not confirm the payment: card payment reversed, nothing charged",
}
QR_RESPONSE_TEXT = {
    "13": "invalid amount (a refund: more than remains to refund)",
    "14": "invalid or expired payment code",
    "25": "no such order of this terminal (a refund: or not paid)",
    "51": "insufficient wallet balance",
    "57": "the wallet holds another currency",
    "62": "the wallet account is frozen",
}
"""What a code means when a QR request gets it (the wallet's refusals borrow the card codes)."""


def qr_response_text(code: str | None) -> str:
    return QR_RESPONSE_TEXT.get(code or "", response_text(code))


def response_text(code: str | None) -> str:
    if code is None:
        return "no response code"
    return RESPONSE_TEXT.get(code, f"response code {code}")
