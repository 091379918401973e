"""Redacted views of messages for logs, traces and `possim iso decode`.

PCI DSS: a PAN is shown as first 6 / last 4 at most; track data, PIN
blocks, CVVs and the card-identifying chip tags never leave this module in
clear. Every trace, log line and journal row that shows message content goes
through here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

from .codec import Codec, CodecError
from .masking import mask_pan
from .message import Message
from .qr_data import masked as masked_qr_data
from .tlv import TlvError, parse

PAN_FIELDS = {2, 34}
HIDDEN_FIELDS = {35, 36, 45, 52}
"""Track 2, track 3, track 1, PIN block: shown only as their length."""
ICC_FIELD = 55
ICC_PAN_TAGS = {"5A"}
ICC_HIDDEN_TAGS = {"57", "56", "9F6B", "9F1F", "9F20", "5F20", "9F0B", "99"}
"""Track 2 equivalent, track 1/2 data, discretionary data, cardholder name (and its extension), PIN data."""
QR_DATA_FIELDS = {57, 59}
"""Where the built-in dialects carry QR data (their `qr_data` role): a scanned payment code in it is masked."""


def redact_value(number: int, value: str) -> str:
    if number in PAN_FIELDS:
        return mask_pan(value)
    if number in HIDDEN_FIELDS:
        return f"[redacted {len(value)}]"
    if number == ICC_FIELD:
        return _redact_icc(value)
    if number in QR_DATA_FIELDS:
        return masked_qr_data(value)
    return value


def redacted_fields(message: Message) -> dict[str, str]:
    return {str(n): redact_value(n, v) for n, v in sorted(message.fields.items())}


def _redact_icc(value: str) -> str:
    try:
        return _redact_tlv(bytes.fromhex(value))
    except (TlvError, ValueError):
        return f"[unparsable ICC data redacted {len(value) // 2} bytes]"


def _redact_tlv(data: bytes) -> str:
    """Tag by tag; a constructed tag (template 70, 77 …) can carry 57 or 5A too, so it is opened."""
    shown = []
    for tag, content in parse(data):
        if tag in ICC_PAN_TAGS:
            shown.append(f"{tag}={mask_pan(content.hex().upper().rstrip('F'))}")
        elif tag in ICC_HIDDEN_TAGS:
            shown.append(f"{tag}=[redacted {len(content)}]")
        elif int(tag[:2], 16) & 0x20:
            shown.append(f"{tag}=[{_redact_tlv(content)}]")
        else:
            shown.append(f"{tag}={content.hex().upper()}")
    return " ".join(shown)


def _sensitive(key: str) -> bool:
    return key.isdigit() and (int(key) in PAN_FIELDS | HIDDEN_FIELDS | QR_DATA_FIELDS or int(key) == ICC_FIELD)


def hex_dump(data: bytes, hidden: list[tuple[int, int]]) -> list[str]:
    """Classic 16-byte rows; bytes inside `hidden` ranges print as '**'."""
    masked: set[int] = set()
    for start, end in hidden:
        masked.update(range(start, end))
    lines = []
    for row in range(0, len(data), 16):
        chunk = range(row, min(row + 16, len(data)))
        hexes = " ".join("**" if i in masked else f"{data[i]:02X}" for i in chunk)
        text = "".join("*" if i in masked else (chr(data[i]) if 32 <= data[i] < 127 else ".") for i in chunk)
        lines.append(f"  {row:04X}  {hexes:<47}  {text}")
    return lines


def describe(codec: Codec, body: bytes, prefix: bytes = b"") -> tuple[Message | None, list[str]]:
    """Decode a message body for a trace: its redacted hex dump and field table.

    `prefix` (length header, TPDU, dialect header) is dumped in clear ahead
    of the body. Only bytes known to belong to a non-sensitive part print:
    in an undecodable body the faulty field and everything not read are
    hidden too, since they may hold card data.
    """
    try:
        message = codec.decode(body)
        spans = codec.spans(body)
        error = None
    except CodecError as exc:
        message, spans, error = None, exc.spans, exc
    shift = len(prefix)
    shown = sorted((s, e) for key, (s, e) in spans.items() if not _sensitive(key))
    hidden: list[tuple[int, int]] = []
    at = 0
    for start, end in shown:
        hidden.append((shift + at, shift + start))
        at = max(at, end)
    hidden.append((shift + at, shift + len(body)))
    lines = hex_dump(prefix + body, hidden)
    if message is not None:
        lines.append(f"  MTI   {message.mti}")
        dialect = codec.dialect
        for key, value in redacted_fields(message).items():
            lines.append(f"  [{key:>3}] {dialect.field_name(int(key)):<40} {value}")
            parts = dialect.split(int(key), value)
            for index, (name, part) in enumerate(parts.items(), start=1):
                lines.append(f"  {key:>5}.{index} {name:<38} {part}")
    else:
        lines.append(f"  undecodable: {error}")
    return message, lines


def trace_record(when: datetime, direction: str, peer: str, codec: Codec, body: bytes, prefix: bytes = b"") -> str:
    """One trace entry: a title line, the redacted hex dump and field table."""
    message, lines = describe(codec, body, prefix)
    mti = message.mti if message else "????"
    title = f"{when.isoformat(timespec='milliseconds')} {direction} {peer} {codec.dialect.name} {mti} ({len(prefix) + len(body)} bytes)"
    return "\n".join([title, *lines]) + "\n"


class TraceFile:
    """A redacted trace of whole frames (length header, envelope, message), appended to a file as they pass.

    Shared by every transport that traces: the host's TCP and serial fronts and the bridge.
    """

    def __init__(self, path: str | Path, codec: Codec, clock: Callable[[], datetime]):
        self.codec = codec
        self.clock = clock
        self._file: TextIO = Path(path).open("a", encoding="utf-8")
        framing = codec.dialect.framing
        self._split = framing.length_size + framing.envelope_size

    def frame(self, direction: str, peer: str, framed: bytes) -> None:
        self._file.write(trace_record(self.clock(), direction, peer, self.codec, framed[self._split:], framed[:self._split]))
        self._file.flush()

    def note(self, peer: str, text: str) -> None:
        self._file.write(f"{self.clock().isoformat(timespec='milliseconds')} -- {peer} {text}\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
