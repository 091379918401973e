"""The terminal's side of docs/messages.md: requests built and answers checked, no I/O.

Every dialect difference is read from the dialect's data — where a role
lives (`set_role`), whether field 7 is sent (`transmission_datetime`) — so a
user's dialect file gets the same flows without code changes.
"""

from __future__ import annotations

from datetime import datetime

from possim.wire.dialect import Dialect
from possim.wire.framing import Framing, split_envelope
from possim.wire.message import Message, response_mti

from .cards import Card
from .pin_pad import SECURITY_CONTROL, EncryptedPin

NETWORK_SIGN_ON = "001"
NETWORK_NONE = "000"
TYPE_SIGN_ON = "00"
TYPE_SALE = "22"
"""Transaction types (60.1) of the cup transaction matrix; dialects without the role ignore them."""
OPERATOR = "001"
CONDITION_NORMAL = "00"

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
    message = Message("0800")
    _stamp(dialect, message, now)
    message[11] = stan
    message[41] = tid
    message[42] = mid
    dialect.set_role(message, "transaction_type", TYPE_SIGN_ON)
    dialect.set_role(message, "batch_number", f"{batch_number:06d}")
    dialect.set_role(message, "network_code", sign_on_code(dialect, track_key))
    if _sends_operator(dialect):
        message[63] = OPERATOR
    return message


def entry_mode(dialect: Dialect, manual: bool, pin_pad: bool, pin_sent: bool) -> str:
    """Field 22: 01 keyed or 02 magstripe, then 1 or 2 for the PIN.

    ISO 8583:1987 makes the third digit the terminal's PIN entry capability;
    UnionPay POS (`conventions.entry_mode_pin: included`) makes it whether
    this message carries a PIN.
    """
    pin = pin_sent if dialect.convention("entry_mode_pin") == "included" else pin_pad
    return ("01" if manual else "02") + ("1" if pin else "2")


def check_purchase(amount: int, processing_code: str) -> None:
    """Refuse what cannot be put in fields 3 and 4; zero is allowed, so a tester can see the host's 13."""
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount < 10**12:
        raise ValueError(f"amount {amount!r} must be whole minor units from 0 to 999999999999")
    if not isinstance(processing_code, str) or len(processing_code) != 6 or not processing_code.isdigit():
        raise ValueError(f"processing code {processing_code!r} must be 6 digits")


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
    """A 0200: track 2 for a swiped card, PAN and expiry for a keyed one, never both; a PIN block when given."""
    check_purchase(amount, processing_code)
    message = Message("0200")
    if manual:
        message[2] = card.pan
        message[14] = card.expiry
    message[3] = processing_code
    message[4] = f"{amount:012d}"
    _stamp(dialect, message, now)
    message[11] = stan
    message[12] = now.strftime("%H%M%S")
    message[13] = now.strftime("%m%d")
    message[22] = entry_mode(dialect, manual, pin_pad, pin is not None)
    message[25] = CONDITION_NORMAL
    if not manual:
        message[35] = card.track2
    if pin is not None:
        message[52] = pin.block
        message[53] = SECURITY_CONTROL
        if pin.ksn is not None:
            dialect.set_role(message, "ksn", pin.ksn)
    message[41] = tid
    message[42] = mid
    message[49] = currency
    dialect.set_role(message, "transaction_type", TYPE_SALE)
    dialect.set_role(message, "batch_number", f"{batch_number:06d}")
    if "." in dialect.roles.get("network_code", ""):
        # A positional subfield (cup 60.3) is filled with "000" so the ones before it read right;
        # a network code with a field of its own (iso87's 70) has no place in a financial message.
        dialect.set_role(message, "network_code", NETWORK_NONE)
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
    "05": "do not honour: card blocked by the issuer",
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
    "63": "security violation (MAC)",
    "68": "response received too late",
    "75": "PIN tries exceeded",
    "77": "sign on again",
    "91": "issuer inoperative",
    "94": "duplicate transmission",
    "96": "system malfunction",
    "97": "terminal not registered",
    "98": "no answer in time",
    "A0": "MAC check failed: sign on again",
}


def response_text(code: str | None) -> str:
    if code is None:
        return "no response code"
    return RESPONSE_TEXT.get(code, f"response code {code}")
