"""Frames on a byte stream: a length header, then an optional TPDU and
dialect header, then the ISO 8583 message.

`FrameReader` reassembles frames from whatever a stream delivers — half a
frame, or several at once — and never trusts a length it cannot honour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LengthKind = Literal["binary2", "bcd2", "ascii4", "hex4"]
LENGTH_KINDS: tuple[str, ...] = ("binary2", "bcd2", "ascii4", "hex4")
_HEADER_SIZE = {"binary2": 2, "bcd2": 2, "ascii4": 4, "hex4": 4}
_LIMIT = {"binary2": 0xFFFF, "bcd2": 9999, "ascii4": 9999, "hex4": 0xFFFF}

DEFAULT_MAX_FRAME = 8192
"""Largest payload accepted; a real ISO 8583 message is a few hundred bytes."""


class FramingError(ValueError):
    """A frame that cannot be read; `offset` is where in the stream it went wrong."""

    def __init__(self, message: str, offset: int = 0):
        super().__init__(f"{message} (at byte offset {offset})")
        self.offset = offset


@dataclass(frozen=True)
class Framing:
    length: LengthKind = "binary2"
    length_includes_header: bool = False
    tpdu: bytes | None = None
    """Default TPDU a terminal sends (5 bytes, 0x60 + destination + source); None when the link has none."""
    header: bytes = b""
    """Default dialect header a terminal sends after the TPDU (the `cup` 6-byte header)."""
    max_frame: int = DEFAULT_MAX_FRAME

    def __post_init__(self) -> None:
        if self.length not in _HEADER_SIZE:
            raise ValueError(f"length header {self.length!r} is not one of {', '.join(LENGTH_KINDS)}")
        if self.tpdu is not None and (len(self.tpdu) != 5 or self.tpdu[0] != 0x60):
            raise ValueError(f"TPDU {self.tpdu.hex().upper()} must be 5 bytes starting with 60")

    @property
    def length_size(self) -> int:
        return _HEADER_SIZE[self.length]

    @property
    def envelope_size(self) -> int:
        return (5 if self.tpdu is not None else 0) + len(self.header)


@dataclass(frozen=True)
class Envelope:
    """The routing bytes around a message: TPDU and dialect header."""

    tpdu: bytes | None = None
    header: bytes = b""

    def reply(self) -> Envelope:
        """The envelope of an answer: TPDU destination and source swapped."""
        if self.tpdu is None:
            return self
        return Envelope(self.tpdu[:1] + self.tpdu[3:5] + self.tpdu[1:3], self.header)


def default_envelope(framing: Framing) -> Envelope:
    return Envelope(framing.tpdu, framing.header)


def encode_length(framing: Framing, payload_size: int) -> bytes:
    value = payload_size + (framing.length_size if framing.length_includes_header else 0)
    if value > _LIMIT[framing.length]:
        raise FramingError(f"frame of {payload_size} bytes does not fit a {framing.length} length header")
    if framing.length == "binary2":
        return value.to_bytes(2, "big")
    if framing.length == "bcd2":
        return bytes.fromhex(f"{value:04d}")
    if framing.length == "ascii4":
        return f"{value:04d}".encode("ascii")
    return f"{value:04X}".encode("ascii")


def decode_length(framing: Framing, raw: bytes, offset: int = 0) -> int:
    """The payload size announced by a length header (header bytes excluded)."""
    if framing.length == "binary2":
        value = int.from_bytes(raw, "big")
    else:
        text = raw.hex() if framing.length == "bcd2" else raw.decode("ascii", "replace")
        digits = _HEX_DIGITS if framing.length == "hex4" else _DECIMAL_DIGITS
        if not text or not set(text) <= digits:
            # int() alone would also take ' 12', '+12', '1_2' or '0x1F'.
            raise FramingError(f"length header {raw.hex().upper()} is not {framing.length}", offset)
        value = int(text, 16 if framing.length == "hex4" else 10)
    if framing.length_includes_header:
        value -= framing.length_size
        if value < 0:
            raise FramingError(f"length header {raw.hex().upper()} is shorter than the header itself", offset)
    return value


_DECIMAL_DIGITS = set("0123456789")
_HEX_DIGITS = set("0123456789abcdefABCDEF")


def frame(framing: Framing, body: bytes, envelope: Envelope | None = None) -> bytes:
    """Length header + envelope + message body, ready for the wire."""
    env = envelope if envelope is not None else default_envelope(framing)
    payload = (env.tpdu or b"") + env.header + body
    return encode_length(framing, len(payload)) + payload


def split_envelope(framing: Framing, payload: bytes) -> tuple[Envelope, bytes]:
    """Separate TPDU and header from the message body of one payload."""
    if len(payload) < framing.envelope_size:
        raise FramingError(
            f"frame of {len(payload)} bytes is shorter than its TPDU and header ({framing.envelope_size} bytes)"
        )
    at = 0
    tpdu = None
    if framing.tpdu is not None:
        tpdu = payload[:5]
        at = 5
    header = payload[at : at + len(framing.header)]
    return Envelope(tpdu, header), payload[framing.envelope_size :]


class FrameReader:
    """Reassembles payloads (everything after the length header) from a stream."""

    def __init__(self, framing: Framing):
        self.framing = framing
        self._buffer = bytearray()
        self._consumed = 0

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes read from the stream; return every payload now complete.

        Raises FramingError on a length the reader will not honour; the
        stream cannot be resynchronised after that, so the caller drops it.
        """
        self._buffer += data
        payloads = []
        size = self.framing.length_size
        while len(self._buffer) >= size:
            length = decode_length(self.framing, bytes(self._buffer[:size]), self._consumed)
            if length > self.framing.max_frame:
                raise FramingError(
                    f"length header announces {length} bytes, more than the {self.framing.max_frame} allowed",
                    self._consumed,
                )
            if length == 0:
                raise FramingError("length header announces an empty frame", self._consumed)
            if len(self._buffer) < size + length:
                break
            payloads.append(bytes(self._buffer[size : size + length]))
            del self._buffer[: size + length]
            self._consumed += size + length
        return payloads
