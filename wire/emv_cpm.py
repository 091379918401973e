"""EMV QR consumer-presented mode (CPM): the code a wallet shows and a terminal scans.

EMVCo "EMV QR Code Specification for Payment Systems: Consumer-Presented Mode"
(v1.0 July 2017, v1.1): the QR carries base64 of BER-TLV data objects:

    85  payload format indicator, "CPV01" (first object)
    61  application template, one or more: 4F AID, 50 label, 57 track 2
        equivalent data, 5A PAN, 5F20 cardholder name, 5F2D language
        preference, 9F25 last 4 digits of PAN, 5F34 PAN sequence number,
        63 application specific transparent template (chip data)
    62  common data template: the same tags, applying to every application,
        with 64 common data transparent template (chip data)

The spec's worked examples, reproduced in public CPM libraries' tests
(mvallim/emv-qrcode ConsumerPresentedModeDecoderTest, dongri/emv-qrcode
README, kenmaz JPQRReader CPMDecoderTests), are the test vectors here.

A CPM QR is read like a contactless card: the chip tags of 63/64 go to
field 55 as they are, the track 2 equivalent to field 35.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from possim.wire import tlv
from possim.wire.trace import mask_pan

FORMAT_INDICATOR = "CPV01"
"""Tag 85 of CPM version 01, the only version EMVCo has published."""
ENTRY_MODE = "072"
"""Field 22: contactless (07) like a tapped card, no PIN entry in the message (2)."""
CARD_SEQUENCE = "001"
"""Field 23 when the payload has chip data but no 5F34, as terminal/messages.py sends for a chip read."""
DISCRETIONARY = "00000"
"""Track 2 discretionary data of an encoded payload; the same as terminal/cards.py so tracks look alike."""

_TEMPLATE_TAGS = ("4F", "50", "57", "5A", "5F20", "5F24", "5F2D", "5F34", "9F25")
_PAN = re.compile(r"[0-9]{12,19}\Z")
_EXPIRY = re.compile(r"[0-9]{2}(0[1-9]|1[0-2])\Z")
_TRACK2 = re.compile(r"(?P<pan>[0-9]{12,19})D(?P<expiry>[0-9]{4})(?P<service>[0-9]{3})[0-9]*\Z")


class CpmError(ValueError):
    """A CPM payload that cannot be read or built.

    `tag` is the data object at fault, `offset` its byte offset in the
    base64-decoded TLV, or "base64" when the outer layer itself is bad.
    Never carries a PAN or track 2.
    """

    def __init__(self, message: str, *, tag: str | None = None, offset: int | str | None = None):
        self.tag = tag
        self.offset = offset
        where = f" tag {tag}" if tag else ""
        if offset == "base64":
            where += " (base64 layer)"
        elif offset is not None:
            where += f" at byte offset {offset}"
        super().__init__(f"CPM{where}: {message}")


@dataclass(frozen=True)
class CpmPayload:
    format_indicator: str
    aid: str
    """Upper-case hex of tag 4F."""
    label: str | None
    pan: str | None = field(repr=False)
    """5A, or the PAN of the track 2 equivalent; kept out of repr so a logged payload never shows it."""
    track2: str | None = field(repr=False)
    """As field 35 carries it: PAN, 'D', YYMM, service code, discretionary data; no 'F' pad."""
    expiry: str | None
    """YYMM from track 2, else from 5F24."""
    cardholder_name: str | None
    language: str | None
    pan_last4: str | None
    chip_data: bytes
    """The TLV inside 63 and 64 (plus 5F34 when only the template has it), ready for field 55."""

    def masked_pan(self) -> str | None:
        return mask_pan(self.pan) if self.pan is not None else None


def decode_cpm(payload: str) -> CpmPayload:
    """The CPM payload of a scanned QR code's text."""
    data = _unbase64(payload)
    items = _walk(data, 0, None)
    if not items or items[0][0] != "85":
        found = f"found tag {items[0][0]}" if items else "found no data objects"
        raise CpmError(f"payload must begin with the payload format indicator; {found}", tag="85", offset=0)
    _, indicator_value, indicator_at, _ = items[0]
    indicator = indicator_value.decode("ascii", "replace")
    if indicator != FORMAT_INDICATOR:
        raise CpmError(
            f"payload format indicator {indicator[:8]!r} is not {FORMAT_INDICATOR!r}", tag="85", offset=indicator_at
        )
    applications = [item for item in items if item[0] == "61"]
    if not applications:
        raise CpmError("no application template", tag="61", offset=len(data))
    app_at = applications[0][2]
    app = _template(applications[0], "63")
    common_items = [item for item in items if item[0] == "62"]
    common = _template(common_items[0], "64") if common_items else _Template({}, b"")
    merged = {**common.fields, **app.fields}

    if "4F" not in app.fields:
        raise CpmError("application template has no AID (4F)", tag="61", offset=app_at)
    track2 = expiry = pan = None
    if "57" in merged:
        track2, pan, expiry = _track2(*merged["57"])
    if "5A" in merged:
        pan = _digits(*merged["5A"], "5A", "PAN")
        if not _PAN.match(pan):
            raise CpmError("PAN (5A) must be 12 to 19 digits", tag="5A", offset=merged["5A"][1])
    if expiry is None and "5F24" in merged:
        value, at = merged["5F24"]
        expiry = _digits(value, at, "5F24", "expiry date")[:4]
        if not _EXPIRY.match(expiry):
            raise CpmError("expiry date (5F24) must be YYMMDD with a month 01-12", tag="5F24", offset=at)
    last4 = _digits(*merged["9F25"], "9F25", "last 4 digits of PAN") if "9F25" in merged else None
    chip = app.chip + common.chip
    if "5F34" in merged and not any(tag == "5F34" for tag, _ in tlv.parse(chip)):
        chip += tlv.encode([("5F34", merged["5F34"][0])])
    return CpmPayload(
        format_indicator=indicator,
        aid=app.fields["4F"][0].hex().upper(),
        label=_text(merged, "50"),
        pan=pan,
        track2=track2,
        expiry=expiry,
        cardholder_name=_text(merged, "5F20"),
        language=_text(merged, "5F2D"),
        pan_last4=last4,
        chip_data=chip,
    )


def encode_cpm(
    *,
    aid: str,
    pan: str,
    expiry: str,
    label: str | None = None,
    cardholder_name: str | None = None,
    chip_data: bytes = b"",
    service_code: str = "201",
) -> str:
    """The base64 CPM payload of one application: 85, then 61 with 4F, 50, 57, 5F20 and 63.

    Service code 201 (international, chip card, normal authorization) is the
    spec example's: a QR wallet stands in for a chip card.
    """
    try:
        aid_bytes = bytes.fromhex(aid)
    except ValueError:
        raise CpmError("aid must be hex", tag="4F") from None
    if not 5 <= len(aid_bytes) <= 16:
        raise CpmError(f"aid of {len(aid_bytes)} bytes; an AID has 5 to 16", tag="4F")
    if not _PAN.match(pan):
        raise CpmError("pan must be 12 to 19 digits", tag="57")
    if not _EXPIRY.match(expiry):
        raise CpmError(f"expiry {expiry!r} must be YYMM with a month 01-12", tag="57")
    if not re.fullmatch(r"[0-9]{3}", service_code):
        raise CpmError(f"service_code {service_code!r} must be 3 digits", tag="57")
    digits = f"{pan}D{expiry}{service_code}{DISCRETIONARY}"
    template = [("4F", aid_bytes)]
    if label is not None:
        template.append(("50", _ascii(label, "label", "50", 1, 16)))
    template.append(("57", bytes.fromhex(digits + "F" * (len(digits) % 2))))
    if cardholder_name is not None:
        template.append(("5F20", _ascii(cardholder_name, "cardholder_name", "5F20", 2, 26)))
    if chip_data:
        try:
            tlv.parse(chip_data)
        except tlv.TlvError as error:
            raise CpmError(f"chip_data is not BER-TLV: {error}", tag="63") from None
        template.append(("63", chip_data))
    data = tlv.encode([("85", FORMAT_INDICATOR.encode("ascii")), ("61", tlv.encode(template))])
    return base64.b64encode(data).decode("ascii")


def authorization_fields(payload: CpmPayload) -> dict[int, str]:
    """The ISO 8583 card fields a terminal sends for a scanned CPM code.

    35 (track 2) when the payload has one, else 2 (PAN) and 14 (expiry):
    never both 2 and 35. 22 is contactless, 55 the chip data, 23 the PAN
    sequence number (5F34, else "001" as terminal/messages.py sends for a
    chip read) whenever there is chip data.
    """
    fields: dict[int, str] = {22: ENTRY_MODE}
    if payload.track2 is not None:
        fields[35] = payload.track2
    elif payload.pan is not None:
        fields[2] = payload.pan
        if payload.expiry is not None:
            fields[14] = payload.expiry
    else:
        raise CpmError("payload has neither track 2 equivalent data (57) nor a PAN (5A)", tag="57")
    if payload.chip_data:
        sequence = next((value.hex() for tag, value in tlv.parse(payload.chip_data) if tag == "5F34"), "")
        fields[23] = f"{int(sequence):03d}" if sequence.isdigit() else CARD_SEQUENCE
        fields[55] = payload.chip_data.hex().upper()
    return fields


@dataclass
class _Template:
    fields: dict[str, tuple[bytes, int]]
    """Known tag -> (value, byte offset of the tag in the whole payload)."""
    chip: bytes


def _unbase64(payload: str) -> bytes:
    text = payload.strip()
    if not text:
        raise CpmError("payload is empty", offset="base64")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as error:
        raise CpmError(f"payload is not base64 ({error})", offset="base64") from None


def _walk(data: bytes, base: int, template: str | None) -> list[tuple[str, bytes, int, int]]:
    """tlv.parse of `data`, each item with the byte offsets of its tag and its value, from the payload's start."""
    try:
        items = tlv.parse(data)
    except tlv.TlvError as error:
        message = str(error).rsplit(" at byte offset ", 1)[0]
        named = re.match(r"tag (\S+) ", message)  # TlvError names the object it could not read
        where = f" inside template {template}" if template else ""
        tag = named[1] if named else template
        raise CpmError(f"malformed TLV{where}: {message}", tag=tag, offset=base + error.offset) from None
    located = []
    at = 0
    for tag, value in items:
        while data[at] in (0x00, 0xFF):
            at += 1
        length_at = at + len(tag) // 2
        header = len(tag) // 2 + 1 + (data[length_at] & 0x7F if data[length_at] & 0x80 else 0)
        located.append((tag, value, base + at, base + at + header))
        at += header + len(value)
    return located


def _template(item: tuple[str, bytes, int, int], chip_tag: str) -> _Template:
    """The known tags and the chip data (inside `chip_tag`) of a located 61 or 62 template."""
    template, value, _, value_at = item
    fields: dict[str, tuple[bytes, int]] = {}
    chip = b""
    for tag, inner, inner_at, inner_value_at in _walk(value, value_at, template):
        if tag == chip_tag:
            _walk(inner, inner_value_at, chip_tag)
            chip += inner
        elif tag in _TEMPLATE_TAGS and tag not in fields:
            fields[tag] = (inner, inner_at)
    return _Template(fields, chip)


def _track2(value: bytes, at: int) -> tuple[str, str, str]:
    """(field 35 text, PAN, YYMM) of tag 57: packed nibbles, 'D' separator, one 'F' pad when odd."""
    nibbles = value.hex().upper()
    if nibbles.endswith("F"):
        nibbles = nibbles[:-1]
    match = _TRACK2.match(nibbles)
    if match is None:
        raise CpmError(
            "track 2 equivalent data must be a 12-19 digit PAN, 'D', YYMM, a 3-digit service code and digits",
            tag="57",
            offset=at,
        )
    if not _EXPIRY.match(match["expiry"]):
        raise CpmError("track 2 equivalent data has an expiry with a month outside 01-12", tag="57", offset=at)
    return nibbles, match["pan"], match["expiry"]


def _digits(value: bytes, at: int, tag: str, name: str) -> str:
    """A compressed numeric (cn/n) value: BCD digits, trailing 'F' padding dropped."""
    digits = value.hex().upper().rstrip("F")
    if not digits.isdigit():
        raise CpmError(f"{name} must be BCD digits", tag=tag, offset=at)
    return digits


def _text(fields: dict[str, tuple[bytes, int]], tag: str) -> str | None:
    if tag not in fields:
        return None
    value, at = fields[tag]
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise CpmError("value must be ASCII text", tag=tag, offset=at) from None


def _ascii(text: str, name: str, tag: str, shortest: int, longest: int) -> bytes:
    if not text.isascii() or not text.isprintable() or not shortest <= len(text) <= longest:
        raise CpmError(f"{name} must be {shortest} to {longest} printable ASCII characters", tag=tag)
    return text.encode("ascii")
