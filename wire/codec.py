"""Encode and decode ISO 8583 messages for a dialect, on pyiso8583.

A thin layer: pyiso8583 does the packing; this adds the content checks it
leaves out (digits in numeric fields and length prefixes, field numbers the
dialect defines) and turns its errors into one error type that names field,
byte offset and what was expected.

Error texts never quote field values: a bad PAN or track must not reach a
log line through an exception message.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import iso8583
from iso8583.decoder import DecodeError
from iso8583.encoder import EncodeError

from .dialect import Dialect
from .message import Message

_TEXT_CONTENT = {
    "n": ("0123456789", "digits"),
    "z": ("0123456789D=", "track digits with D or = separators"),
    "xn": ("0123456789", "C or D followed by digits"),
}
_PACKED_CONTENT = {
    # Packed BCD has no nibble for '=': tracks use D as the separator.
    "n": ("0123456789", "digits"),
    "z": ("0123456789D", "track digits with D separators"),
}
_FAST_CONTENT = {
    # The same rules as regular expressions: the quick yes on the hot path;
    # `_content_fault` finds the offending character only when this says no.
    ("text", "n"): r"[0-9]*\Z",
    ("text", "z"): r"[0-9D=]*\Z",
    ("text", "xn"): r"[CD][0-9]*\Z",
    ("packed", "n"): r"[0-9]*\Z",
    ("packed", "z"): r"[0-9D]*\Z",
}
_MTI = re.compile(r"[0-9]{4}\Z")
_HEX_BITMAP = re.compile(r"[0-9A-Fa-f]*\Z")
_FIELD_NUMBERS = range(2, 129)
_TERTIARY = 65
"""pyiso8583 reads bit 65 as "a tertiary bitmap follows" and drops field 65 when encoding."""

_UNDEFINED: dict[str, Any] = {"data_enc": "possim-undefined-field", "len_enc": "ascii", "len_type": 0, "max_len": 1}
"""Stands in for field numbers a dialect does not define, so a set bit for
one fails as a DecodeError at that field instead of a KeyError."""


class CodecError(ValueError):
    """A message that cannot be encoded or decoded.

    `offset` is the byte where decoding went wrong (None when encoding).
    `partial` holds what was decoded before the fault and can be trusted, so
    a host can still answer a format error to the MTI, STAN and terminal it
    could read; the faulty field itself is never in it.
    """

    def __init__(
        self,
        field: str,
        offset: int | None,
        expected: str,
        partial: Message | None = None,
        spans: dict[str, tuple[int, int]] | None = None,
    ):
        where = f"field {field}" if field not in _SPECIAL else _SPECIAL[field]
        at = f" at byte offset {offset}" if offset is not None else ""
        super().__init__(f"{where}{at}: {expected}")
        self.field = field
        self.offset = offset
        self.expected = expected
        self.partial = partial
        self.spans = spans or {}
        """Byte ranges of the parts read and trusted; the faulty field and anything unread are absent."""


_SPECIAL = {"t": "MTI", "p": "primary bitmap", "1": "secondary bitmap", "h": "message header"}


class Codec:
    def __init__(self, dialect: Dialect):
        self.dialect = dialect
        self._spec = dialect.spec
        self._decode_spec = {str(n): _UNDEFINED for n in range(2, 193)} | dialect.spec
        self._checks: dict[int, tuple[str, str]] = {}
        self._valid: dict[int, Callable[[str], object]] = {}
        for key, entry in dialect.spec.items():
            packing = "packed" if entry["data_enc"] == "b" else "text"
            table = _PACKED_CONTENT if packing == "packed" else _TEXT_CONTENT
            if key.isdigit() and key != "1" and entry.get("type") in table:
                self._checks[int(key)] = table[entry["type"]]
                self._valid[int(key)] = re.compile(_FAST_CONTENT[packing, entry["type"]]).match
        self._text_prefixes = {
            key: entry["len_enc"]
            for key, entry in dialect.spec.items()
            if entry["len_type"] and entry["len_enc"] not in ("b", "bcd")
        }
        numbers = [n for n in _FIELD_NUMBERS if n != _TERTIARY and str(n) in dialect.spec]
        self._encode_rules = {n: (str(n), self._valid.get(n)) for n in numbers}
        """Field number → (pyiso8583 key, quick content check), for the fields this dialect carries."""
        self._decode_rules = {str(n): (n, self._valid.get(n), self._text_prefixes.get(str(n))) for n in numbers}
        """pyiso8583 key → (field number, quick content check, text length-prefix encoding)."""
        self._text_bitmaps = tuple(k for k in ("p", "1") if dialect.spec[k]["data_enc"] != "b")

    def encode(self, message: Message) -> bytes:
        return self._encode(message)[0]

    def encode_spans(self, message: Message) -> tuple[bytes, dict[str, tuple[int, int]]]:
        """The encoded message and the byte ranges of its parts (as `spans` gives), without decoding it again:
        what signing needs."""
        data, encoded = self._encode(message)
        return data, field_spans(encoded)

    def _encode(self, message: Message) -> tuple[bytes, dict[str, dict[str, bytes]]]:
        if not isinstance(message.mti, str) or not _MTI.match(message.mti):
            raise CodecError("t", None, "expected 4 digits")
        doc: dict[str, Any] = {"t": message.mti}
        rules = self._encode_rules
        for number, value in message.fields.items():
            rule = rules.get(number) if type(number) is int else None
            if rule is None or type(value) is not str or (rule[1] is not None and rule[1](value) is None):
                self._check_encodable(number, value)  # raises, naming what is wrong
            doc[rule[0]] = value
        try:
            data, encoded = iso8583.encode(doc, self._spec)
        except EncodeError as exc:
            raise CodecError(exc.field, None, exc.msg) from None
        return bytes(data), encoded

    def _check_encodable(self, number: object, value: object) -> None:
        if not isinstance(number, int) or number not in _FIELD_NUMBERS or number == _TERTIARY:
            raise CodecError(str(number), None, "expected a data field number 2..128 other than 65")
        if str(number) not in self._spec:
            raise CodecError(str(number), None, f"expected a field dialect {self.dialect.name} defines")
        if not isinstance(value, str):
            raise CodecError(str(number), None, f"expected text, got {type(value).__name__}")
        fault = self._content_fault(number, value)
        if fault is not None:
            raise CodecError(str(number), None, fault[1])

    def _content_fault(self, number: int, value: str) -> tuple[int, str] | None:
        """Index of the first character a field may not hold, and what it expects."""
        check = self._checks.get(number)
        if check is None:
            return None
        allowed, what = check
        if self._spec[str(number)].get("type") == "xn":
            if value[:1] not in ("C", "D"):
                return 0, f"expected {what}, character 1 is not C or D"
            start = 1
        else:
            start = 0
        for i in range(start, len(value)):
            if value[i] not in allowed:
                return i, f"expected {what}, found another character at character {i + 1} of {len(value)}"
        return None

    def decode(self, data: bytes) -> Message:
        return self._decode(data)[0]

    def decode_spans(self, data: bytes) -> tuple[Message, dict[str, tuple[int, int]]]:
        """The decoded message and the byte ranges of its parts (as `spans` gives), from one decode:
        what checking its MAC needs."""
        message, encoded = self._decode(data)
        return message, field_spans(encoded)

    def _decode(self, data: bytes) -> tuple[Message, dict[str, dict[str, bytes]]]:
        data = bytes(data)
        try:
            doc, encoded = iso8583.decode(data, self._decode_spec)
        except DecodeError as exc:
            raise self._decode_error(exc) from None
        mti = doc["t"]
        suspect = not _MTI.match(mti) or _tertiary_flagged(doc)
        for key in self._text_bitmaps:
            suspect = suspect or (key in doc and not _HEX_BITMAP.match(doc[key]))
        fields = {}
        rules = self._decode_rules
        for key, value in doc.items():
            rule = rules.get(key)
            if rule is None:
                continue
            number, check, prefix = rule
            fields[number] = value
            if check is not None and check(value) is None:
                suspect = True
            elif prefix is not None and not _length_prefix_ok(prefix, encoded[key]["len"]):
                suspect = True
        if suspect:
            raise self._content_error(doc, encoded)
        return Message(mti, fields), encoded

    def _content_error(self, doc: dict[str, str], encoded: dict[str, dict[str, bytes]]) -> CodecError:
        """The error for a message pyiso8583 could read but whose content breaks a rule."""
        spans = field_spans(encoded)
        message = _partial(doc)
        if not _MTI.match(message.mti):
            return CodecError("t", spans["t"][0], "expected 4 digits", None, {})
        if _tertiary_flagged(doc):
            return self._tertiary_error(doc, spans)
        for key in ("p", "1"):
            if key in doc and not _HEX_BITMAP.match(doc[key]):
                trusted = {k: spans[k] for k in ("h", "t") if k in spans}
                return CodecError(key, spans[key][0], "expected 16 hex digits", Message(message.mti), trusted)
        faults = []
        for number, value in message.fields.items():
            key = str(number)
            fault = self._content_fault(number, value)
            if fault is not None:
                faults.append((self._fault_offset(key, fault[0], value, encoded, spans), number, fault[1]))
            elif key in self._text_prefixes and not _length_prefix_ok(self._text_prefixes[key], encoded[key]["len"]):
                faults.append((spans[key][0], number, "expected digits in the length prefix"))
        for _, bad, _ in faults:
            del message.fields[bad]
            spans.pop(str(bad))
        offset, number, expected = min(faults)
        return CodecError(str(number), offset, expected, message, spans)

    def _decode_error(self, exc: DecodeError) -> CodecError:
        """pyiso8583's error, with the faulty field kept out of `partial` and `spans`."""
        spans = field_spans(exc.doc_enc)
        partial = _partial(exc.doc_dec)
        field, offset, expected = exc.field, exc.pos, exc.msg
        if field not in ("h", "t") and not _MTI.match(partial.mti):
            return CodecError("t", spans["t"][0], "expected 4 digits", None, {})
        if _tertiary_flagged(exc.doc_dec):
            return self._tertiary_error(exc.doc_dec, spans)
        if expected.startswith("Extra data after last field"):
            # Every field decoded; the fault is what follows the last one.
            return CodecError(field, offset, f"end of message, found {len(exc.s) - offset} more bytes", partial, spans)
        spans.pop(field, None)
        if field == "t":
            return CodecError(field, offset, expected, None, spans)
        if field.isdigit() and field != "1":
            partial.fields.pop(int(field), None)
            if self._decode_spec[field] is _UNDEFINED:
                expected = f"a field dialect {self.dialect.name} defines (its bitmap bit is set)"
            elif expected == "Failed to decode field, invalid data":
                raw = exc.doc_enc[field]["data"]
                encoding = self._spec[field]["data_enc"]
                try:
                    raw.decode(encoding)
                except UnicodeDecodeError as bad:
                    offset += bad.start
                    expected = f"expected {encoding} text, byte {bad.start + 1} of {len(raw)} cannot be read as {encoding}"
        return CodecError(field, offset, expected, partial, spans)

    def _tertiary_error(self, doc: dict[str, str], spans: dict[str, tuple[int, int]]) -> CodecError:
        """Bit 65 set: pyiso8583 took the next 8 bytes for a tertiary bitmap, so nothing after the
        secondary bitmap lines up with what the sender meant; only the MTI is trustworthy."""
        start = spans["1"][0]
        width = 8 if self._spec["1"]["data_enc"] == "b" else 16
        trusted = {k: spans[k] for k in ("h", "t", "p") if k in spans}
        trusted["1"] = (start, start + width)
        expected = "bit 65 clear in the secondary bitmap (tertiary bitmaps are not supported)"
        return CodecError("65", start, expected, Message(doc.get("t", "")), trusted)

    def _fault_offset(
        self,
        key: str,
        index: int,
        value: str,
        encoded: dict[str, dict[str, bytes]],
        spans: dict[str, tuple[int, int]],
    ) -> int:
        """The byte holding character `index` of a decoded field value."""
        entry = self._spec[key]
        data_start = spans[key][0] + len(encoded[key]["len"])
        if entry["data_enc"] != "b":
            return data_start + index
        data = encoded[key]["data"]
        pad = entry.get("left_pad", "")[:1].upper()
        left_padded = bool(pad) and len(value) < 2 * len(data) and data.hex()[:1].upper() == pad
        return data_start + (index + (1 if left_padded else 0)) // 2

    def spans(self, data: bytes) -> dict[str, tuple[int, int]]:
        """Byte ranges of each part of a well-formed message, for redacted hex dumps."""
        _, encoded = iso8583.decode(bytes(data), self._decode_spec)
        return field_spans(encoded)


def _length_prefix_ok(encoding: str, prefix: bytes) -> bool:
    """Text length prefixes must be plain digits; int() alone would also take ' 9', '+9' or '1_0'."""
    if encoding == "ascii":
        return prefix.isdigit()  # bytes.isdigit is ASCII-only
    return all(ch in "0123456789" for ch in prefix.decode(encoding))


def _tertiary_flagged(doc: dict[str, str]) -> bool:
    """Bit 65, the first bit of the secondary bitmap, announces a tertiary bitmap to pyiso8583."""
    return doc.get("1", "")[:1] in _HIGH_NIBBLES


_HIGH_NIBBLES = set("89ABCDEFabcdef")


def field_spans(encoded: dict[str, dict[str, bytes]]) -> dict[str, tuple[int, int]]:
    """Offsets of every part pyiso8583 read, in the order it read them."""
    spans = {}
    at = 0
    for key, part in encoded.items():
        size = len(part["len"]) + len(part["data"])
        spans[key] = (at, at + size)
        at += size
    return spans


_NUMBER = {str(n): n for n in _FIELD_NUMBERS}


def _partial(doc: dict[str, str]) -> Message:
    fields = {_NUMBER[k]: v for k, v in doc.items() if k in _NUMBER}
    return Message(doc.get("t", ""), fields)
