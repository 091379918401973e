"""Messages made harmless to keep in a file, yet still whole messages: card data blanked, shape kept.

A raw recording (`possim record --raw`) is replayed byte for byte, so unlike
a trace it cannot show `[redacted 37]`: every field must stay in place,
decodable and of the same length, so the frame's length header still holds.
What counts as card data is wire/trace.py's decision (its field and tag
sets); this module only decides how to blank each so the bytes stay valid:

- PANs (2, 34) keep their first 6 and last 4 digits, zeros between;
- tracks (35, 36, 45) keep their PAN that way, every other character but
  the separators (`=`/`D`, or `^` on track 1) becomes `0`;
- the PIN block (52) and the sensitive chip tags of field 55 become zeros;
- a scanned payment code in the QR data fields keeps its first 6 / last 4;
- working keys in an answer (the dialect's `working_keys` role) become zeros.

A blanked PAN still says which test card it was (first 6, last 4, length),
which is what lets a replay put the card's own data back
(terminal/replay/raw.py).
"""

from __future__ import annotations

from .codec import Codec, CodecError
from .dialect import Dialect
from .masking import mask_pan
from .message import Message
from .qr_data import masked as masked_qr_data
from .tlv import TlvError, encode, parse
from .trace import HIDDEN_FIELDS, ICC_FIELD, ICC_HIDDEN_TAGS, ICC_PAN_TAGS, PAN_FIELDS, QR_DATA_FIELDS

PIN_BLOCK_FIELD = 52
TRACK_FIELDS = HIDDEN_FIELDS - {PIN_BLOCK_FIELD}
_CHIP_TAGS = ICC_PAN_TAGS | ICC_HIDDEN_TAGS


class RedactionError(ValueError):
    """A message that cannot be blanked in place. Names the field and byte offset, never a value:
    bytes that do not decode may hold card data anywhere, so they are refused, not written."""

    def __init__(self, message: str, field: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.field = field
        self.offset = offset


def redact_body(codec: Codec, body: bytes) -> bytes:
    """The message body with its card data blanked; as long as `body` for any body the codec itself would encode."""
    try:
        message = codec.decode(body)
    except CodecError as exc:
        raise RedactionError(f"cannot redact an undecodable message: {exc}", exc.field, exc.offset) from None
    try:
        return codec.encode(redact_message(codec.dialect, message))
    except CodecError as exc:  # a blanked value is always valid for its field type; kept for a user dialect's oddities
        raise RedactionError(f"cannot re-encode the redacted message: {exc}", exc.field) from None


def redact_message(dialect: Dialect, message: Message) -> Message:
    """A copy of `message` with card data, PIN block and working keys blanked (see the module's list)."""
    fields = dict(message.fields)
    for number, value in message.fields.items():
        if number in PAN_FIELDS:
            fields[number] = blank_pan(value)
        elif number in TRACK_FIELDS:
            fields[number] = _blank_track(value)
        elif number == PIN_BLOCK_FIELD:
            fields[number] = "0" * len(value)
        elif number == ICC_FIELD:
            fields[number] = _blank_chip_field(value)
        elif number in QR_DATA_FIELDS:
            fields[number] = _blank_qr_data(value)
    redacted = Message(message.mti, fields)
    keys = dialect.get_role(redacted, "working_keys")
    if keys and redacted.is_response:
        # Keys only ever come down in an answer (a request's field there is a DUKPT KSN, which is no secret);
        # which answers carry them differs between hosts, so every answer's is blanked.
        dialect.set_role(redacted, "working_keys", "0" * len(keys))
    return redacted


def blank_pan(pan: str) -> str:
    """First 6 and last 4 digits kept, zeros between (as `mask_pan` shows it, with 0 for *): still a valid PAN field."""
    return mask_pan(pan).replace("*", "0")


def track_pan(track: str) -> str:
    """The PAN a track starts with: the characters up to its first separator (after track 1's format code)."""
    start, end = _pan_span(track)
    return track[start:end]


def _separators(track: str) -> str:
    return "^" if "^" in track else "=D"


def _pan_span(track: str) -> tuple[int, int]:
    separators = _separators(track)
    start = 1 if separators == "^" and track[:1].isalpha() else 0  # track 1's format code, B
    end = next((i for i in range(start, len(track)) if track[i] in separators), len(track))
    return start, end


def _blank_track(track: str) -> str:
    """Format code and separators kept where they were, the PAN as `blank_pan`, everything else 0.

    On track 1 that zeroes the cardholder's name too, which only `^` delimits:
    a `D` in a name is no separator there.
    """
    separators = _separators(track)
    start, end = _pan_span(track)
    rest = "".join(ch if ch in separators else "0" for ch in track[end:])
    return track[:start] + blank_pan(track[start:end]) + rest


def _blank_chip_field(value: str) -> str:
    """Field 55 (hex) with the sensitive tags zero-filled; all zeros when its TLV cannot be rewritten byte for byte."""
    try:
        blanked = _blank_tlv(bytes.fromhex(value))
    except (TlvError, ValueError):
        blanked = None
    return blanked.hex().upper() if blanked is not None else "0" * len(value)


def _blank_tlv(data: bytes) -> bytes | None:
    """The TLV with sensitive values zeroed, constructed tags opened; None when re-encoding would not give back
    the same layout (padding between objects, long-form lengths) and so could change the field's length."""
    items = parse(data)
    if encode(items) != data:
        return None
    out = []
    for tag, content in items:
        if tag in _CHIP_TAGS:
            content = bytes(len(content))
        elif int(tag[:2], 16) & 0x20:
            inner = _blank_tlv(content)
            if inner is None:
                return None
            content = inner
        out.append((tag, content))
    return encode(out)


def _blank_qr_data(text: str) -> str:
    """Where the trace would show a `*` (a payment code's middle, or all of text that does not decode), a 0."""
    shown = masked_qr_data(text)
    return "".join(ch if ch == seen else "0" for ch, seen in zip(text, shown))
