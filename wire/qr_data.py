"""The private ISO 8583 field that carries QR data between terminal and host.

ISO 8583 has no field for a wallet's payment code, an order number or a
wallet's transaction ID, so QR acquiring puts them in one private field
(57 in the iso87 dialects, 59 in cup) as repeated data objects:

    ID (2 digits) · length (3 digits, counting characters) · value

01 payment_code, 02 order_no, 03 status, 04 wallet_txn_id, 05 channel,
06 payload (an EMV MPM payload), 07 expires_at (YYYYMMDDhhmmss),
08 refunded and 09 paid (minor units), 10 reason (text).

Government fee transactions (docs/fees.md) use the same field: 11 pay_code
(the payment notice's code), 12 agency_code, 13 agency_name, 14 payer_name,
15 amount_due (minor units), 16 due_date (YYYYMMDD), 17 notice_status,
18 confirm_no (the finance system's confirmation number), 19 items
(`code:amount` pairs joined by `;`).

The field holds a payment code, so traces show it only through `masked`.
Errors name the offset and tag, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .masking import mask_pan

TAGS: dict[str, str] = {
    "01": "payment_code",
    "02": "order_no",
    "03": "status",
    "04": "wallet_txn_id",
    "05": "channel",
    "06": "payload",
    "07": "expires_at",
    "08": "refunded",
    "09": "paid",
    "10": "reason",
    "11": "pay_code",
    "12": "agency_code",
    "13": "agency_name",
    "14": "payer_name",
    "15": "amount_due",
    "16": "due_date",
    "17": "notice_status",
    "18": "confirm_no",
    "19": "items",
}
NAMES: dict[str, str] = {name: tag for tag, name in TAGS.items()}
MAX_VALUE = 999
"""The longest value a 3-digit length can count."""

_HEADER = 5
_TAG = re.compile(r"[0-9]{2}")
_LENGTH = re.compile(r"[0-9]{3}")


class QrDataError(ValueError):
    """QR data that cannot be read; `offset` is the first character of the part at fault, `tag` its ID when known."""

    def __init__(self, message: str, offset: int, tag: str | None = None):
        self.offset = offset
        self.tag = tag
        where = f" tag {tag}" if tag else ""
        super().__init__(f"QR data{where} at offset {offset}: {message}")


def encode_qr_data(values: Mapping[str, str]) -> str:
    """The field text of named values, in tag order whatever the mapping's order."""
    for name, value in values.items():
        if name not in NAMES:
            raise ValueError(f"QR data: unknown key {name!r}; known: {', '.join(NAMES)}")
        if not isinstance(value, str):
            raise ValueError(f"QR data: {name} must be text, got {type(value).__name__}")
        if len(value) > MAX_VALUE:
            raise ValueError(f"QR data: {name} is {len(value)} characters; a value holds at most {MAX_VALUE}")
    return "".join(
        f"{tag}{len(values[name]):03d}{values[name]}" for tag, name in TAGS.items() if name in values
    )


def decode_qr_data(text: str) -> dict[str, str]:
    """The named values of the field text; any order of tags is read, none twice."""
    return {TAGS[tag]: value for tag, _, value in _objects(text)}


def masked(text: str) -> str:
    """The text as a trace may show it: the payment code first 6 / last 4, lengths unchanged.

    Text that does not decode might hold a payment code anywhere, so it is
    all stars.
    """
    try:
        objects = _objects(text)
    except QrDataError:
        return "*" * len(text)
    out = text
    for tag, value_at, value in objects:
        if TAGS[tag] == "payment_code":
            out = out[:value_at] + mask_pan(value) + out[value_at + len(value) :]
    return out


def _objects(text: str) -> list[tuple[str, int, str]]:
    """(tag, offset of its value, value) of each data object, checked."""
    objects: list[tuple[str, int, str]] = []
    seen: dict[str, int] = {}
    at = 0
    while at < len(text):
        if len(text) - at < _HEADER:
            raise QrDataError(f"{len(text) - at} characters left; an ID and length need {_HEADER}", at)
        if not _TAG.fullmatch(text, at, at + 2):
            raise QrDataError("ID must be 2 digits", at)
        tag = text[at : at + 2]
        if not _LENGTH.fullmatch(text, at + 2, at + _HEADER):
            raise QrDataError("length must be 3 digits", at + 2, tag)
        if tag not in TAGS:
            raise QrDataError("unknown ID", at, tag)
        if tag in seen:
            raise QrDataError(f"{TAGS[tag]} repeated (first at offset {seen[tag]})", at, tag)
        length = int(text[at + 2 : at + _HEADER])
        value_at = at + _HEADER
        if value_at + length > len(text):
            raise QrDataError(f"length {length} runs past the end ({len(text) - value_at} characters left)", at + 2, tag)
        seen[tag] = at
        objects.append((tag, value_at, text[value_at : value_at + length]))
        at = value_at + length
    return objects
