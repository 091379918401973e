"""Government non-tax fee collection: the messages between a bank's acquirer
host and a finance bureau's non-tax revenue system, with no I/O.

The shape follows the conventions public non-tax collection interfaces share:
length-prefixed XML over TCP, a `head` that says who sends what, a `body` per
message type, and a MAC over both. Host and bureau both call these functions,
so the two ends cannot drift apart on a layout.

- Frame: 6 ASCII digits giving the byte length of the UTF-8 XML that follows.
- Document: `<message><head>…</head><body>…</body><mac>…</mac></message>`.
- MAC: HMAC-SHA256 under the shared key, over the exact bytes from `<head>`
  through `</body>` as they travel. Signing the bytes, not a parsed tree,
  leaves no question of how to canonicalise whitespace, attribute order or
  character references: whatever was sent is what was signed.

Bodies are plain dicts: text values are `str`, and a list element (`items`,
`confirmations`) is a list of dicts of `str`. Amounts travel as major units
with exactly the currency's decimals ("123.45") next to an alphabetic
currency ("CNY"); `amount_text` and `parse_amount` convert.

Errors are NontaxError carrying the result code to answer with (9001 for a
MAC that is missing or wrong, 9002 for anything malformed) and naming the
element path (`body/items/item[2]/amount`) or byte offset. Decoding is
tolerant of elements it does not know (they are ignored, though covered by
the MAC); encoding is strict, so possim never sends what it would refuse.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from .money import currency, format_major, parse_major

VERSION = "1.0"
LENGTH_DIGITS = 6
MAX_FRAME = 999_999
"""The largest XML document a 6-digit length can announce."""

MSG_NOTICE_QUERY = "1001"
MSG_PAYMENT_CONFIRM = "1002"
MSG_STATUS_QUERY = "1003"
MSG_DAILY_LIST = "1004"
MSG_CONFIRM_CANCEL = "1005"
MSG_DAY_RECONCILED = "1006"
"""The bank tells the finance system it has reconciled a day: no confirmation of it can be cancelled after,
and later confirmations go to the next day."""
MSG_ERROR_RESPONSE = "2000"
"""The answer to a request whose type cannot be read: result and message only."""
MSG_NOTICE_QUERY_RESPONSE = "2001"
MSG_PAYMENT_CONFIRM_RESPONSE = "2002"
MSG_STATUS_QUERY_RESPONSE = "2003"
MSG_DAILY_LIST_RESPONSE = "2004"
MSG_CONFIRM_CANCEL_RESPONSE = "2005"
MSG_DAY_RECONCILED_RESPONSE = "2006"
REQUEST_TYPES = (MSG_NOTICE_QUERY, MSG_PAYMENT_CONFIRM, MSG_STATUS_QUERY, MSG_DAILY_LIST, MSG_CONFIRM_CANCEL,
                 MSG_DAY_RECONCILED)

RESULT_OK = "0000"
RESULT_ALREADY_PAID = "1001"
RESULT_AMOUNT_MISMATCH = "1002"
RESULT_NO_SUCH_NOTICE = "1003"
RESULT_NOTICE_EXPIRED = "1004"
RESULT_NOTICE_CANCELLED = "1005"
RESULT_DAY_RECONCILED = "1006"
RESULT_NOTHING_TO_CANCEL = "1007"
RESULT_TRADE_NO_USED = "1008"
RESULT_MAC_ERROR = "9001"
RESULT_MALFORMED = "9002"
RESULT_SYSTEM_ERROR = "9999"
RESULTS = {
    RESULT_OK: "success",
    RESULT_ALREADY_PAID: "already paid (paidTradeNo names the trade that paid it)",
    RESULT_AMOUNT_MISMATCH: "amount or currency differs from the notice",
    RESULT_NO_SUCH_NOTICE: "no such notice (or the payment code fails its check digit)",
    RESULT_NOTICE_EXPIRED: "notice expired (past its due date)",
    RESULT_NOTICE_CANCELLED: "notice cancelled by the agency",
    RESULT_DAY_RECONCILED: "the day is already reconciled (cannot cancel; cannot reconcile twice)",
    RESULT_NOTHING_TO_CANCEL: "nothing to cancel: no such confirmation of this notice",
    RESULT_TRADE_NO_USED: "channel trade number already used by another confirmation",
    RESULT_MAC_ERROR: "MAC missing or wrong",
    RESULT_MALFORMED: "malformed message",
    RESULT_SYSTEM_ERROR: "system error",
}

STATUS_UNPAID, STATUS_PAID, STATUS_CANCELLED, STATUS_EXPIRED = "UNPAID", "PAID", "CANCELLED", "EXPIRED"
STATUSES = (STATUS_UNPAID, STATUS_PAID, STATUS_CANCELLED, STATUS_EXPIRED)

_DATE_FORMAT = "%Y%m%d"
_TIME_FORMAT = "%Y%m%d%H%M%S"


class NontaxError(ValueError):
    """A message that cannot be used; `code` is the result to answer with.

    What decode could read before it failed rides along (`msg_type`,
    `msg_id`, `sender`, `echo`: the body's plain text elements) so that the
    refusal can go back as the right response type, to the right peer.
    """

    def __init__(self, code: str, message: str, *, path: str | None = None, offset: int | None = None):
        text = f"{path}: {message}" if path else message
        if offset is not None:
            text += f" (at byte offset {offset})"
        super().__init__(text)
        self.code = code
        self.path = path
        self.offset = offset
        self.msg_type: str | None = None
        self.msg_id: str | None = None
        self.sender: str | None = None
        self.echo: dict[str, str] = {}


@dataclass(frozen=True)
class NontaxMessage:
    msg_type: str
    msg_id: str
    sender: str
    receiver: str
    send_time: str
    """YYYYMMDDHHMMSS, the sender's local time."""
    body: dict[str, Any]
    ref_msg_id: str = ""
    """In an answer, the msgId of the request it answers (head element `refMsgId`); empty in a request."""


# ---- message layouts ----

# When an element must be present (in a response whose result starts with 9,
# only `result` and `message` must: the request could not be understood).
ALWAYS, OPTIONAL = "always", "optional"
WHEN_FOUND = "found"          # 2001: the notice exists (result 0000, 1001, 1004 or 1005)
WHEN_OK = "ok"                # result 0000
WHEN_ALREADY_PAID = "already paid"  # result 1001
WHEN_PAID = "paid"            # status PAID
_FOUND_RESULTS = frozenset({RESULT_OK, RESULT_ALREADY_PAID, RESULT_NOTICE_EXPIRED, RESULT_NOTICE_CANCELLED})


@dataclass(frozen=True)
class Element:
    name: str
    kind: str
    """token, text, note, digits, amount, currency, date, time, result, status or count."""
    when: str = ALWAYS
    entry: str = ""
    """For a list element: the tag of each entry ("item"); empty for a text element."""
    fields: tuple[Element, ...] = ()


_ITEM = (Element("code", "token"), Element("name", "text"), Element("amount", "amount"))
_CONFIRMATION = (
    Element("payCode", "digits"), Element("agencyCode", "token"), Element("amount", "amount"),
    Element("channel", "token"), Element("channelTradeNo", "token"), Element("confirmNo", "token"),
    Element("confirmTime", "time"),
)
_RESULT, _MESSAGE = Element("result", "result"), Element("message", "note")
_NOTE = Element("message", "note", OPTIONAL)

LAYOUTS: dict[str, tuple[Element, ...]] = {
    MSG_NOTICE_QUERY: (Element("payCode", "digits"),),
    MSG_PAYMENT_CONFIRM: (
        Element("payCode", "digits"), Element("amount", "amount"), Element("currency", "currency"),
        Element("confirmTime", "time"), Element("channel", "token"), Element("channelTradeNo", "token"),
        Element("terminalId", "token"),
    ),
    MSG_STATUS_QUERY: (Element("payCode", "digits"),),
    MSG_DAILY_LIST: (Element("date", "date"),),
    MSG_CONFIRM_CANCEL: (Element("payCode", "digits"), Element("channelTradeNo", "token"), Element("reason", "note")),
    MSG_DAY_RECONCILED: (Element("date", "date"), Element("count", "count"), Element("total", "amount"),
                         Element("currency", "currency")),
    MSG_ERROR_RESPONSE: (_RESULT, _MESSAGE),
    MSG_NOTICE_QUERY_RESPONSE: (
        _RESULT, _MESSAGE, Element("payCode", "digits"),
        Element("agencyCode", "token", WHEN_FOUND), Element("agencyName", "text", WHEN_FOUND),
        Element("payerName", "text", WHEN_FOUND), Element("amount", "amount", WHEN_FOUND),
        Element("currency", "currency", WHEN_FOUND), Element("dueDate", "date", WHEN_FOUND),
        Element("status", "status", WHEN_FOUND), Element("items", "list", WHEN_FOUND, "item", _ITEM),
    ),
    MSG_PAYMENT_CONFIRM_RESPONSE: (
        _RESULT, _MESSAGE, Element("payCode", "digits"), Element("channelTradeNo", "token"),
        Element("confirmNo", "token", WHEN_OK), Element("paidTradeNo", "token", WHEN_ALREADY_PAID),
    ),
    MSG_STATUS_QUERY_RESPONSE: (
        _RESULT, _NOTE, Element("payCode", "digits"), Element("status", "status", WHEN_OK),
        Element("channelTradeNo", "token", WHEN_PAID), Element("confirmNo", "token", WHEN_PAID),
        Element("confirmTime", "time", WHEN_PAID),
    ),
    MSG_DAILY_LIST_RESPONSE: (
        _RESULT, _NOTE, Element("date", "date"), Element("count", "count", WHEN_OK),
        Element("total", "amount", WHEN_OK), Element("currency", "currency", WHEN_OK),
        Element("confirmations", "list", WHEN_OK, "confirmation", _CONFIRMATION),
    ),
    MSG_DAY_RECONCILED_RESPONSE: (_RESULT, _NOTE, Element("date", "date")),
    MSG_CONFIRM_CANCEL_RESPONSE: (
        _RESULT, _MESSAGE, Element("payCode", "digits"), Element("channelTradeNo", "token", OPTIONAL),
    ),
}

_TOKEN = re.compile(r"[!-~]{1,64}\Z")
_DIGITS = re.compile(r"[0-9]{1,32}\Z")
_COUNT = re.compile(r"[0-9]{1,9}\Z")
_RESULT_CODE = re.compile(r"[0-9]{4}\Z")
_ALPHA = re.compile(r"[A-Z]{3}\Z")
_MAC = re.compile(r"[0-9A-F]{64}\Z")


def response_type(request_type: str) -> str:
    """The answer's msgType for a request type; 2000 for a type this protocol does not have."""
    return "2" + request_type[1:] if request_type in REQUEST_TYPES else MSG_ERROR_RESPONSE


# ---- times, amounts, ids ----

def format_time(moment: datetime) -> str:
    return moment.strftime(_TIME_FORMAT)


def format_date(day: date) -> str:
    return day.strftime(_DATE_FORMAT)


def parse_time(text: str, where: str) -> datetime:
    """YYYYMMDDHHMMSS; strptime alone would also take single digits and spaces."""
    if not re.fullmatch(r"[0-9]{14}", text):
        raise NontaxError(RESULT_MALFORMED, f"{text!r} is not a time YYYYMMDDHHMMSS", path=where)
    try:
        return datetime.strptime(text, _TIME_FORMAT)
    except ValueError:
        raise NontaxError(RESULT_MALFORMED, f"{text!r} is not a real time", path=where) from None


def parse_date(text: str, where: str) -> date:
    if not re.fullmatch(r"[0-9]{8}", text):
        raise NontaxError(RESULT_MALFORMED, f"{text!r} is not a date YYYYMMDD", path=where)
    try:
        return datetime.strptime(text, _DATE_FORMAT).date()
    except ValueError:
        raise NontaxError(RESULT_MALFORMED, f"{text!r} is not a real date", path=where) from None


def amount_text(minor: int, currency_numeric: str) -> str:
    """1250 minor units of "156" as "12.50", the wire's major units."""
    if minor < 0:
        raise ValueError(f"amount {minor} must be zero or more")
    return format_major(minor, currency(currency_numeric))


def parse_amount(text: str, currency_alpha: str, where: str) -> int:
    """"12.50" CNY as 1250 minor units; exactly the currency's decimals, so "12.5" is refused, not guessed."""
    try:
        cur = currency(currency_alpha)
    except ValueError as exc:
        raise NontaxError(RESULT_MALFORMED, str(exc), path=where) from None
    shape = rf"[0-9]{{1,18}}\.[0-9]{{{cur.exponent}}}" if cur.exponent else r"[0-9]{1,18}"
    if not re.fullmatch(shape, text):
        decimals = f"exactly {cur.exponent} decimals" if cur.exponent else "no decimals"
        raise NontaxError(RESULT_MALFORMED, f"{text!r} is not an amount with {decimals} for {cur.alpha}", path=where)
    return parse_major(text, cur)


def new_msg_id(rng: random.Random, now: datetime) -> str:
    """20 characters: the send time to the second, then 6 random digits."""
    return format_time(now) + f"{rng.randrange(10**6):06d}"


def make_message(msg_type: str, body: dict[str, Any], sender: str, receiver: str, now: datetime,
                 rng: random.Random, ref_msg_id: str = "") -> NontaxMessage:
    """A message with a fresh msgId and the send time filled in."""
    return NontaxMessage(msg_type, new_msg_id(rng, now), sender, receiver, format_time(now), body, ref_msg_id)


def reply(request: NontaxMessage, body: dict[str, Any], sender: str, now: datetime, rng: random.Random) -> NontaxMessage:
    """The answer to `request`: its response type, addressed back, naming the request's msgId."""
    return make_message(response_type(request.msg_type), body, sender, request.sender, now, rng, request.msg_id)


# ---- framing ----

def frame(xml: bytes) -> bytes:
    """The 6-digit length, then the document."""
    if not xml:
        raise NontaxError(RESULT_MALFORMED, "an empty message cannot be framed")
    if len(xml) > MAX_FRAME:
        raise NontaxError(RESULT_MALFORMED, f"a message of {len(xml)} bytes does not fit a {LENGTH_DIGITS}-digit length")
    return f"{len(xml):0{LENGTH_DIGITS}d}".encode("ascii") + xml


class FrameReader:
    """Reassembles documents from a stream that delivers half a frame, or several at once."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._consumed = 0

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes read from the stream; return every document now complete.

        Raises NontaxError on a length that is not 6 digits or is zero: the
        stream cannot be resynchronised after that, so the caller drops it.
        """
        self._buffer += data
        documents = []
        while len(self._buffer) >= LENGTH_DIGITS:
            header = bytes(self._buffer[:LENGTH_DIGITS])
            if not re.fullmatch(rb"[0-9]{6}", header):
                raise NontaxError(RESULT_MALFORMED, f"length {header!r} is not {LENGTH_DIGITS} ASCII digits",
                                  offset=self._consumed)
            length = int(header)
            if length == 0:
                raise NontaxError(RESULT_MALFORMED, "length announces an empty message", offset=self._consumed)
            if len(self._buffer) < LENGTH_DIGITS + length:
                break
            documents.append(bytes(self._buffer[LENGTH_DIGITS:LENGTH_DIGITS + length]))
            del self._buffer[:LENGTH_DIGITS + length]
            self._consumed += LENGTH_DIGITS + length
        return documents


# ---- encode ----

def encode(message: NontaxMessage, key: bytes) -> bytes:
    """The signed XML document (not framed). Refuses a body its type does not allow, as decode would."""
    layout = _layout(message.msg_type, "head/msgType")
    _check_body_shape(layout, message.body)
    _check_body(layout, message.body)
    head = ET.Element("head")
    for name, value, kind in _head_values(message):
        if value or name != "refMsgId":
            _check_value(kind, value, f"head/{name}")
            ET.SubElement(head, name).text = value
    body = ET.Element("body")
    for element in layout:
        value = message.body.get(element.name)
        if value is None:
            continue
        node = ET.SubElement(body, element.name)
        if element.entry:
            for entry in value:
                child = ET.SubElement(node, element.entry)
                for field in element.fields:
                    ET.SubElement(child, field.name).text = entry[field.name]
        else:
            node.text = value
    signed = (ET.tostring(head, encoding="unicode", short_empty_elements=False)
              + ET.tostring(body, encoding="unicode", short_empty_elements=False)).encode("utf-8")
    return (b'<?xml version="1.0" encoding="UTF-8"?><message>' + signed
            + b"<mac>" + _mac(key, signed).encode("ascii") + b"</mac></message>")


_HEAD = (("version", "token"), ("msgType", "result"), ("msgId", "token"), ("sender", "token"),
         ("receiver", "token"), ("sendTime", "time"), ("refMsgId", "token"))
"""Head elements in order, with the kind of value each holds; refMsgId only in an answer."""


def _head_values(message: NontaxMessage) -> list[tuple[str, str, str]]:
    values = (VERSION, message.msg_type, message.msg_id, message.sender, message.receiver, message.send_time,
              message.ref_msg_id)
    return [(name, value, kind) for (name, kind), value in zip(_HEAD, values)]


def _check_body_shape(layout: tuple[Element, ...], body: dict[str, Any]) -> None:
    """Types and names only: what a decoded body has by construction."""
    known = {element.name: element for element in layout}
    for name, value in body.items():
        element = known.get(name)
        if element is None:
            raise NontaxError(RESULT_MALFORMED, "is not part of this message type", path=f"body/{name}")
        if not element.entry:
            if not isinstance(value, str):
                raise NontaxError(RESULT_MALFORMED, f"must be text, not {type(value).__name__}", path=f"body/{name}")
            continue
        if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
            raise NontaxError(RESULT_MALFORMED, "must be a list of dicts", path=f"body/{name}")
        fields = {field.name for field in element.fields}
        for index, entry in enumerate(value, 1):
            for field_name, field_value in entry.items():
                path = f"body/{name}/{element.entry}[{index}]/{field_name}"
                if field_name not in fields:
                    raise NontaxError(RESULT_MALFORMED, f"is not part of an {element.entry}", path=path)
                if not isinstance(field_value, str):
                    raise NontaxError(RESULT_MALFORMED, f"must be text, not {type(field_value).__name__}", path=path)


def _mac(key: bytes, signed: bytes) -> str:
    return hmac.new(key, signed, hashlib.sha256).hexdigest().upper()


# ---- decode ----

_PROLOGUE = re.compile(rb"\A(<\?xml[^>]*\?>)?\s*<message>\s*\Z")
_EPILOGUE = re.compile(rb"</body>\s*<mac>[^<]*</mac>\s*</message>\s*\Z")
_ENCODING = re.compile(rb"""encoding\s*=\s*["']([^"']*)["']""")


def decode(xml: bytes, key: bytes) -> NontaxMessage:
    """Check the MAC, then the head, then the body against its type's layout."""
    _refuse_dtd(xml)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        line, column = exc.position
        raise NontaxError(RESULT_MALFORMED, f"not well-formed XML at line {line}, column {column + 1}") from None
    if root.tag != "message":
        raise NontaxError(RESULT_MALFORMED, f"the root element is <{root.tag}>, not <message>", path="message")
    head, body, mac = (_only_child(root, name) for name in ("head", "body", "mac"))
    try:
        if head is None or body is None:
            raise NontaxError(RESULT_MALFORMED, "is missing", path="head" if head is None else "body")
        _verify_mac(xml, mac, key)
        return _read(head, body)
    except NontaxError as exc:
        _remember_context(exc, head, body)
        raise


def _refuse_dtd(xml: bytes) -> None:
    # defusedxml is not installed, and expat expands internal entities (the
    # "billion laughs") and reads DTDs; this protocol has no use for either,
    # so any document type or entity declaration is refused before parsing.
    for marker in (b"<!DOCTYPE", b"<!ENTITY"):
        at = xml.upper().find(marker)
        if at >= 0:
            raise NontaxError(RESULT_MALFORMED, f"{marker.decode()} is not allowed", offset=at)


def _only_child(parent: ET.Element, name: str) -> ET.Element | None:
    found = parent.findall(name)
    if len(found) > 1:
        raise NontaxError(RESULT_MALFORMED, f"appears {len(found)} times", path=name)
    return found[0] if found else None


def _verify_mac(xml: bytes, mac: ET.Element | None, key: bytes) -> None:
    if mac is None:
        raise NontaxError(RESULT_MAC_ERROR, "is missing", path="mac")
    if not _MAC.match(mac.text or ""):
        raise NontaxError(RESULT_MAC_ERROR, "is not 64 upper-case hex digits", path="mac")
    start = xml.find(b"<head>")
    ending = _EPILOGUE.search(xml)
    if start < 0 or not _PROLOGUE.match(xml[:start]) or ending is None or ending.start() < start:
        raise NontaxError(RESULT_MALFORMED, "the document must be <message><head>…</head><body>…</body>"
                                            "<mac>…</mac></message>, without attributes on these four")
    declared = _ENCODING.search(xml[:start])
    if declared and declared.group(1).upper() not in (b"UTF-8", b"UTF8"):
        raise NontaxError(RESULT_MALFORMED, f"encoding {declared.group(1).decode('ascii', 'replace')} is not UTF-8")
    signed = xml[start:ending.start() + len(b"</body>")]
    if not hmac.compare_digest(_mac(key, signed), mac.text or ""):
        raise NontaxError(RESULT_MAC_ERROR, "does not verify", path="mac")


def _read(head: ET.Element, body_node: ET.Element) -> NontaxMessage:
    values = {}
    for name, kind in _HEAD:
        node = _only_child(head, name)
        path = f"head/{name}"
        if node is None:
            if name == "refMsgId":
                continue
            raise NontaxError(RESULT_MALFORMED, "is missing", path=path)
        values[name] = _text_of(node, path)
        _check_value(kind, values[name], path)
    if values["version"] != VERSION:
        raise NontaxError(RESULT_MALFORMED, f"{values['version']!r} is not {VERSION}", path="head/version")
    layout = _layout(values["msgType"], "head/msgType")
    body = _read_body(layout, body_node)
    _check_body(layout, body)
    return NontaxMessage(values["msgType"], values["msgId"], values["sender"], values["receiver"],
                         values["sendTime"], body, values.get("refMsgId", ""))


def _layout(msg_type: str, where: str) -> tuple[Element, ...]:
    layout = LAYOUTS.get(msg_type)
    if layout is None:
        raise NontaxError(RESULT_MALFORMED, f"{msg_type!r} is not a message type of this protocol", path=where)
    return layout


def _read_body(layout: tuple[Element, ...], node: ET.Element) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for element in layout:
        path = f"body/{element.name}"
        found = node.findall(element.name)
        if len(found) > 1:
            raise NontaxError(RESULT_MALFORMED, f"appears {len(found)} times", path=path)
        if not found:
            continue
        if not element.entry:
            body[element.name] = _text_of(found[0], path)
            continue
        entries = []
        for index, child in enumerate(found[0].findall(element.entry), 1):
            entry = {}
            for field in element.fields:
                field_path = f"{path}/{element.entry}[{index}]/{field.name}"
                matches = child.findall(field.name)
                if len(matches) > 1:
                    raise NontaxError(RESULT_MALFORMED, f"appears {len(matches)} times", path=field_path)
                if matches:
                    entry[field.name] = _text_of(matches[0], field_path)
            entries.append(entry)
        body[element.name] = entries
    return body


def _text_of(node: ET.Element, path: str) -> str:
    if len(node):
        raise NontaxError(RESULT_MALFORMED, "must hold text, not elements", path=path)
    return node.text or ""


def _remember_context(exc: NontaxError, head: ET.Element | None, body: ET.Element | None) -> None:
    """Whatever could be read, for the refusal's addressing and echo; never raises."""
    def text(parent: ET.Element | None, name: str) -> str | None:
        node = parent.find(name) if parent is not None else None
        value = node.text if node is not None and not len(node) else None
        return value if value is not None and _TOKEN.match(value) else None

    exc.msg_type = text(head, "msgType")
    exc.msg_id = text(head, "msgId")
    exc.sender = text(head, "sender")
    if body is not None:
        exc.echo = {child.tag: child.text for child in body
                    if isinstance(child.tag, str) and child.text and not len(child) and _TOKEN.match(child.text)}


# ---- the checks both ends share ----

def _check_body(layout: tuple[Element, ...], body: dict[str, Any]) -> None:
    refused = body.get("result", "").startswith("9")
    alpha = body.get("currency")
    # The currency first: every amount is read in it, and a fault in it should be named as its own.
    for element in sorted(layout, key=lambda e: e.name != "currency"):
        path = f"body/{element.name}"
        value = body.get(element.name)
        if value is None:
            if _needed(element.when, body) and not (refused and element.name not in ("result", "message")):
                raise NontaxError(RESULT_MALFORMED, "is missing", path=path)
            continue
        if not element.entry:
            _check_value(element.kind, value, path, alpha)
            continue
        for index, entry in enumerate(value, 1):
            for field in element.fields:
                field_path = f"{path}/{element.entry}[{index}]/{field.name}"
                if field.name not in entry:
                    raise NontaxError(RESULT_MALFORMED, "is missing", path=field_path)
                _check_value(field.kind, entry[field.name], field_path, alpha)
    if "count" in body and "confirmations" in body and int(body["count"]) != len(body["confirmations"]):
        raise NontaxError(RESULT_MALFORMED, f"says {body['count']} but {len(body['confirmations'])} confirmations follow",
                          path="body/count")


def _needed(when: str, body: dict[str, Any]) -> bool:
    result = body.get("result")
    return {
        ALWAYS: True,
        OPTIONAL: False,
        WHEN_FOUND: result in _FOUND_RESULTS,
        WHEN_OK: result == RESULT_OK,
        WHEN_ALREADY_PAID: result == RESULT_ALREADY_PAID,
        WHEN_PAID: body.get("status") == STATUS_PAID,
    }[when]


def _check_value(kind: str, value: str, path: str, alpha: str | None = None) -> None:
    if kind == "amount":
        if alpha is None:
            raise NontaxError(RESULT_MALFORMED, "has no body/currency to be read in", path=path)
        parse_amount(value, alpha, path)
    elif kind == "date":
        parse_date(value, path)
    elif kind == "time":
        parse_time(value, path)
    elif kind == "status":
        if value not in STATUSES:
            raise NontaxError(RESULT_MALFORMED, f"{value!r} is not one of {', '.join(STATUSES)}", path=path)
    elif kind == "currency":
        if not _ALPHA.match(value):
            raise NontaxError(RESULT_MALFORMED, f"{value!r} is not an alphabetic ISO 4217 code such as CNY", path=path)
        try:
            currency(value)
        except ValueError as exc:
            raise NontaxError(RESULT_MALFORMED, str(exc), path=path) from None
    elif kind in ("text", "note"):
        _check_text(value, path, required=kind == "text")
    else:
        pattern, what = {
            "token": (_TOKEN, "1 to 64 printable ASCII characters without spaces"),
            "digits": (_DIGITS, "1 to 32 digits"),
            "count": (_COUNT, "a count of up to 9 digits"),
            "result": (_RESULT_CODE, "4 digits"),
        }[kind]
        if not pattern.match(value):
            raise NontaxError(RESULT_MALFORMED, f"{value[:70]!r} is not {what}", path=path)


def _check_text(value: str, path: str, required: bool) -> None:
    """Free text is never quoted back in an error: it may be a payer's name."""
    if required and not value:
        raise NontaxError(RESULT_MALFORMED, "is empty", path=path)
    if len(value) > 256:
        raise NontaxError(RESULT_MALFORMED, f"has {len(value)} characters, more than 256", path=path)
    for position, char in enumerate(value, 1):
        point = ord(char)
        # Control characters are refused, not only the ones XML forbids: a parser turns \r into \n,
        # so a text holding one would not survive the trip.
        if point < 0x20 or 0xD800 <= point <= 0xDFFF or point in (0xFFFE, 0xFFFF):
            raise NontaxError(RESULT_MALFORMED, f"character {position} (U+{point:04X}) cannot travel in XML text",
                              path=path)
