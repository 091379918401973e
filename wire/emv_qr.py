"""EMV merchant-presented QR (MPM) payloads: decode, validate, encode.

The payload is a string of data objects, each a 2-digit ID, a 2-digit length
and a value (EMVCo "QR Code Specification for Payment Systems: Merchant-
Presented Mode", v1.1). Lengths count characters, not UTF-8 bytes, and the
CRC (ID 63) is CRC-16/CCITT-FALSE over the UTF-8 bytes of everything up to
and including "6304".

Two modes, because national schemes (Pix, PromptPay, VietQR, SGQR...) build on
EMV but relax it: strict applies every EMV rule; lenient (the default) still
checks structure, CRC, duplicates, 00 first / 63 last, 53, 58, one merchant
account, amounts and tips, but not the presence of 52/59/60, length caps on
names and labels, the character set, GUI syntax, RFU IDs or CRC letter case.

Errors name the tag ("54", "62.05"), the character offset of the data object's
ID in the payload, and what is wrong; decoding collects every error it can.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from . import money


@dataclass(frozen=True)
class QrError:
    tag: str | None
    offset: int
    message: str


@dataclass(frozen=True)
class DecodedQr:
    valid: bool
    errors: tuple[QrError, ...]
    fields: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "errors": [{"tag": e.tag, "offset": e.offset, "message": e.message} for e in self.errors],
            "fields": self.fields,
        }


class QrEncodeError(ValueError):
    """A field that cannot go into a payload; `tag` names it."""

    def __init__(self, tag: str | None, message: str):
        super().__init__(f"{tag}: {message}" if tag else message)
        self.tag = tag


_TWO_DIGITS = re.compile(r"[0-9]{2}\Z")
_AMOUNT = re.compile(r"[0-9]+(\.[0-9]+)?\Z")
_PERCENT = re.compile(r"[0-9]{1,2}(\.[0-9]{1,2})?\Z")
_CRC_TEXT = re.compile(r"[0-9A-Fa-f]{4}\Z")
_CRC_TAIL = re.compile(r"6304([0-9A-Fa-f]{4})\Z")
_AID_GUI = re.compile(r"[0-9A-Fa-f]{10,32}\Z")
_DOMAIN_GUI = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\Z")
_PRINTABLE = re.compile(r"[\x20-\x7e]*\Z")
# Strict caps on values whose EMV length is "up to N" (tables 3.x of the spec).
_MAX_LENGTH = {"59": 25, "60": 15, "61": 10, "64.01": 25, "64.02": 15}
_MAX_LENGTH |= {f"62.{n:02d}": 25 for n in range(1, 9)}


def _is_template(path: str) -> bool:
    """Templates hold nested data objects: 26-51, 62, 64, 80-99 and 62's 50-99."""
    parts = path.split(".")
    top = int(parts[0])
    if len(parts) == 1:
        return 26 <= top <= 51 or top in (62, 64) or top >= 80
    return len(parts) == 2 and top == 62 and int(parts[1]) >= 50


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


@dataclass(frozen=True)
class _Obj:
    tag: str
    offset: int
    start: int
    end: int


def _header_fits(text: str, at: int, end: int) -> bool:
    """Whether a data object (or the container's end) can begin at `at`."""
    if at == end:
        return True
    return (
        at + 4 <= end
        and bool(_TWO_DIGITS.match(text[at : at + 2]))
        and bool(_TWO_DIGITS.match(text[at + 2 : at + 4]))
        and at + 4 + int(text[at + 2 : at + 4]) <= end
    )


def _byte_counted_end(text: str, start: int, end: int, length: int) -> int | None:
    """Where a value ends if its length counted UTF-8 bytes (only if that differs)."""
    size = 0
    at = start
    while at < end and size < length:
        size += len(text[at].encode("utf-8"))
        at += 1
    if size == length and at - start < length:
        return at
    return None


def _scan(text: str, start: int, end: int, parent: str) -> tuple[list[_Obj], list[QrError], bool]:
    """Split text[start:end] into data objects; stop where the structure is lost.

    A length that only fits when read as UTF-8 bytes (or whose character
    reading would swallow the CRC) is reported and then followed as bytes,
    since that encoder bug is common and the rest of the payload is usually fine.
    """
    where = f"template {parent}" if parent else "the payload"
    objs: list[_Obj] = []
    errors: list[QrError] = []
    seen: set[str] = set()
    at = start
    while at < end:
        if end - at < 4:
            errors.append(QrError(parent or None, at, f"{end - at} character(s) left at the end of {where}, "
                                                      "too few for an ID and a length"))
            return objs, errors, False
        tag, length = text[at : at + 2], text[at + 2 : at + 4]
        path = f"{parent}.{tag}" if parent else tag
        if not _TWO_DIGITS.match(tag):
            errors.append(QrError(parent or None, at, f"ID {tag!r} in {where} is not two digits"))
            return objs, errors, False
        if not _TWO_DIGITS.match(length):
            errors.append(QrError(path, at, f"length {length!r} is not two digits"))
            return objs, errors, False
        value_start = at + 4
        value_end = value_start + int(length)
        byte_end = _byte_counted_end(text, value_start, end, int(length))
        if byte_end is not None and _header_fits(text, byte_end, end) and (
            not (value_end <= end and _header_fits(text, value_end, end))
            or (not parent and value_end == end and _CRC_TAIL.search(text, byte_end, end))
        ):
            errors.append(QrError(path, at, f"length {length} counts UTF-8 bytes; the value is "
                                            f"{byte_end - value_start} characters and lengths count characters"))
            value_end = byte_end
        elif value_end > end:
            errors.append(QrError(path, at, f"length {length} runs past the end of {where} "
                                            f"({end - value_start} characters left)"))
            return objs, errors, False
        if tag in seen:
            errors.append(QrError(path, at, "appears twice"))
        else:
            seen.add(tag)
            objs.append(_Obj(tag, at, value_start, value_end))
        at = value_end
    return objs, errors, True


def _read(text: str, start: int, end: int, parent: str, errors: list[QrError],
          found: dict[str, tuple[int, str]]) -> tuple[list[_Obj], bool, dict[str, Any]]:
    """Scan a level, descend into templates, record every leaf as path -> (offset, value)."""
    objs, scan_errors, complete = _scan(text, start, end, parent)
    errors += scan_errors
    fields: dict[str, Any] = {}
    for obj in objs:
        path = f"{parent}.{obj.tag}" if parent else obj.tag
        value = text[obj.start : obj.end]
        found[path] = (obj.offset, value)
        fields[obj.tag] = value
        if _is_template(path):
            _, sub_complete, sub = _read(text, obj.start, obj.end, path, errors, found)
            if sub_complete:  # a broken template stays a raw string; its errors say why
                fields[obj.tag] = sub
    return objs, complete, fields


def decode_mpm(payload: str, strict: bool = False) -> DecodedQr:
    """Decode and validate a merchant-presented payload; see the module docstring for modes."""
    errors: list[QrError] = []
    found: dict[str, tuple[int, str]] = {}
    objs, complete, fields = _read(payload, 0, len(payload), "", errors, found)
    _check_crc(payload, objs, complete, strict, errors)
    if complete:
        _check_layout(objs, found, strict, errors)
    for path, (offset, value) in found.items():
        _check_value(path, offset, value, found, strict, errors)
    errors.sort(key=lambda e: e.offset)
    return DecodedQr(not errors, tuple(errors), fields)


def _check_crc(payload: str, objs: list[_Obj], complete: bool, strict: bool, errors: list[QrError]) -> None:
    crc_obj = next((o for o in objs if o.tag == "63"), None)
    if crc_obj is None:
        tail = _CRC_TAIL.search(payload)
        if complete or not tail:
            if complete:
                errors.append(QrError("63", len(payload), "CRC (6304 and 4 hex digits) is missing"))
            return
        crc_obj = _Obj("63", tail.start(), tail.start() + 4, len(payload))
    value = payload[crc_obj.start : crc_obj.end]
    if len(value) != 4 or not _CRC_TEXT.match(value):
        errors.append(QrError("63", crc_obj.offset, f"CRC must be 4 hex digits, got {len(value)} character(s)"))
        return
    if strict and value != value.upper():
        errors.append(QrError("63", crc_obj.offset, "CRC hex digits must be upper case"))
    expected = crc16_ccitt_false(payload[: crc_obj.start].encode("utf-8"))
    if int(value, 16) != expected:
        errors.append(QrError("63", crc_obj.offset, f"CRC {value} does not match the payload's {expected:04X}"))


def _check_layout(objs: list[_Obj], found: dict[str, tuple[int, str]], strict: bool,
                  errors: list[QrError]) -> None:
    """Order and presence rules of the top level."""
    if objs and objs[0].tag != "00":
        errors.append(QrError("00", objs[0].offset, "payload format indicator must come first"))
    crc_obj = next((o for o in objs if o.tag == "63"), None)
    if crc_obj is not None and crc_obj is not objs[-1]:
        errors.append(QrError("63", crc_obj.offset, "CRC must be the last data object"))
    end = objs[-1].end if objs else 0
    mandatory = ("00", "52", "53", "58", "59", "60") if strict else ("00", "53", "58")
    for tag in mandatory:
        if tag not in found:
            errors.append(QrError(tag, end, "mandatory data object is missing"))
    if not any(2 <= int(o.tag) <= 51 for o in objs):
        errors.append(QrError("02-51", end, "at least one merchant account information (02-51) is required"))
    if strict:
        for obj in objs:
            if 65 <= int(obj.tag) <= 79:
                errors.append(QrError(obj.tag, obj.offset, "ID is reserved for future use (65-79)"))


def _check_value(path: str, offset: int, value: str, found: dict[str, tuple[int, str]], strict: bool,
                 errors: list[QrError]) -> None:
    """The rule of one data object; templates are checked for their GUI / mandatory children."""

    def bad(message: str) -> None:
        errors.append(QrError(path, offset, message))

    if strict and not value:
        bad("length 00: a value must hold at least one character")
    if strict and path in _MAX_LENGTH and len(value) > _MAX_LENGTH[path]:
        bad(f"{len(value)} characters; at most {_MAX_LENGTH[path]} allowed")
    if strict and not _is_template(path) and not path.startswith("64.") and not _PRINTABLE.match(value):
        bad("only printable ASCII is allowed outside template 64")
    top = int(path[:2])
    sub = int(path[3:5]) if len(path) >= 5 else None
    if path == "00" and value != "01":
        bad(f"payload format indicator must be '01', got {value!r}")
    elif path == "01" and (value not in ("11", "12") if strict else not _TWO_DIGITS.match(value)):
        bad(f"point of initiation must be '11' (static) or '12' (dynamic), got {value!r}")
    elif path == "52" and not re.fullmatch(r"[0-9]{4}", value):
        bad(f"merchant category code must be 4 digits, got {value!r}")
    elif path == "53" and not re.fullmatch(r"[0-9]{3}", value):
        bad(f"currency must be 3 digits (ISO 4217 numeric), got {value!r}")
    elif path == "54":
        _check_amount(value, found, bad)
    elif path == "56":
        _check_amount(value, found, bad)
        if found.get("55", (0, ""))[1] != "02":
            bad("fixed convenience fee needs tip indicator 55 = '02'")
    elif path == "55":
        _check_tip(value, found, bad)
    elif path == "57":
        if not _PERCENT.match(value) or not Decimal("0.01") <= Decimal(value) <= Decimal("99.99"):
            bad(f"convenience fee percentage must be 0.01 to 99.99, got {value!r}")
        elif found.get("55", (0, ""))[1] != "03":
            bad("percentage fee needs tip indicator 55 = '03'")
    elif path == "58" and not re.fullmatch(r"[A-Z]{2}" if strict else r"[A-Za-z]{2}", value):
        bad(f"country code must be 2 letters (ISO 3166-1 alpha-2), got {value!r}")
    elif path == "62.09" and strict and not re.fullmatch(r"(?!.*(.).*\1)[AME]{1,3}", value):
        bad(f"consumer data request must be letters from 'AME' without repeats, got {value!r}")
    elif strict and top == 62 and sub is not None and len(path) == 5 and 10 <= sub <= 49:
        bad("ID is reserved for future use (62.10-62.49)")
    elif _is_template(path):
        _check_template(path, found, strict, bad)
    elif path == "64.00" and strict and not re.fullmatch(r"[A-Za-z]{2}", value):
        bad(f"language preference must be 2 letters (ISO 639-1), got {value!r}")


def _check_amount(value: str, found: dict[str, tuple[int, str]], bad: Callable[[str], None]) -> None:
    """Digits with at most one '.', 13 characters, no more decimals than the currency has."""
    if len(value) > 13 or not _AMOUNT.match(value):
        bad(f"amount must be digits with an optional '.' decimal mark, at most 13 characters, got {value!r}")
        return
    code = found.get("53", (0, ""))[1]
    try:
        cur = money.currency(code)
    except ValueError:
        return  # an unknown currency's exponent cannot be checked
    try:
        money.parse_major(value, cur)
    except ValueError:
        bad(f"amount {value!r} has more than {cur.exponent} decimal places for {cur.alpha} ({cur.numeric})")


def _check_tip(value: str, found: dict[str, tuple[int, str]], bad: Callable[[str], None]) -> None:
    if value not in ("01", "02", "03"):
        bad(f"tip indicator must be '01', '02' or '03', got {value!r}")
    elif value == "02" and "56" not in found:
        bad("tip indicator '02' needs the fixed convenience fee 56")
    elif value == "03" and "57" not in found:
        bad("tip indicator '03' needs the convenience fee percentage 57")


def _check_template(path: str, found: dict[str, tuple[int, str]], strict: bool,
                    bad: Callable[[str], None]) -> None:
    if path == "62":
        return
    if path == "64":
        if strict:
            for child in ("64.00", "64.01"):
                if child not in found:
                    bad(f"{child} is mandatory in the language template")
        return
    gui = found.get(f"{path}.00")
    if gui is None:
        bad("template must start its content with a globally unique identifier (sub-ID 00)")
    elif strict and not (_AID_GUI.match(gui[1]) or _DOMAIN_GUI.match(gui[1])):
        bad(f"globally unique identifier {gui[1]!r} is neither an AID/UUID in hex nor a reverse domain name")


def encode_mpm(fields: Mapping[str, str | Mapping[str, str]], *, strict: bool = False) -> str:
    """Build a payload: 00 first, the rest by numeric ID, then 6304 and the CRC.

    The result is decoded again in the same mode, so anything decode_mpm would
    report becomes a QrEncodeError naming the tag.
    """
    if "63" in fields:
        raise QrEncodeError("63", "the CRC is computed; leave 63 out")
    body = _encode_level(fields, "")
    payload = body + "6304"
    payload += f"{crc16_ccitt_false(payload.encode('utf-8')):04X}"
    decoded = decode_mpm(payload, strict)
    if decoded.errors:
        first = decoded.errors[0]
        raise QrEncodeError(first.tag, first.message)
    return payload


def _encode_level(fields: Mapping[str, Any], parent: str) -> str:
    for tag in fields:
        if not isinstance(tag, str) or not _TWO_DIGITS.match(tag):
            raise QrEncodeError(parent or None, f"ID {tag!r} is not two digits")
    out = []
    for tag in sorted(fields, key=int):  # 00 is the lowest ID, so it comes first
        path = f"{parent}.{tag}" if parent else tag
        value = fields[tag]
        if isinstance(value, Mapping):
            if not _is_template(path):
                raise QrEncodeError(path, "is not a template ID; give a plain value")
            value = _encode_level(value, path)
        elif not isinstance(value, str):
            raise QrEncodeError(path, f"value must be a string, got {type(value).__name__}")
        if not 1 <= len(value) <= 99:
            raise QrEncodeError(path, f"value is {len(value)} characters; a data object holds 1 to 99")
        out.append(f"{tag}{len(value):02d}{value}")
    return "".join(out)


def dynamic_order_qr(*, merchant_account: Mapping[str, str], mcc: str, currency: str, amount_minor: int | None,
                     country: str, name: str, city: str, reference: str | None, terminal_label: str | None,
                     language: Mapping[str, str] | None = None) -> str:
    """An EMV payload for one order, validated strictly: dynamic (01 = "12") with an amount, static ("11") without.

    The merchant account goes into template 26; the amount is given in minor
    units and written in major units with the currency's exponent.
    """
    try:
        cur = money.currency(currency)
    except ValueError as exc:
        raise QrEncodeError("53", str(exc)) from None
    fields: dict[str, str | Mapping[str, str]] = {
        "00": "01", "01": "12" if amount_minor is not None else "11", "26": merchant_account, "52": mcc, "53": cur.numeric,
        "58": country, "59": name, "60": city,
    }
    if amount_minor is not None:
        if amount_minor < 0:
            raise QrEncodeError("54", f"amount_minor {amount_minor} must be zero or more")
        fields["54"] = money.format_major(amount_minor, cur)
    extra = {k: v for k, v in (("05", reference), ("07", terminal_label)) if v is not None}
    if extra:
        fields["62"] = extra
    if language is not None:
        fields["64"] = language
    return encode_mpm(fields, strict=True)
