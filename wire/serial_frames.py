"""Frames on a serial ECR/terminal link: STX · (length) · data · ETX · check
byte, the check byte an XOR LRC, plus the single control bytes ACK, NAK, EOT
and ENQ between frames.

The check byte can have any value — ETX, ACK, STX — so `FrameReader` is a
state machine that knows where the data ends (a length field, the ISO 8583
message's own length header through `inner_length`, or, for text payloads
only, the first ETX) and takes the byte after ETX as the check byte whatever
it is. It never scans ahead for an ETX inside binary data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

from .framing import Framing, FramingError, decode_length, encode_length
from .link_profile import LinkProfile, LinkProfileError


@dataclass(frozen=True)
class Frame:
    data: bytes


@dataclass(frozen=True)
class BadFrame:
    """A frame that started but cannot be used; the session answers NAK."""

    reason: str


@dataclass(frozen=True)
class Control:
    kind: str
    """ACK, NAK, EOT or ENQ."""


@dataclass(frozen=True)
class Noise:
    """Bytes outside any frame that are neither STX nor a control byte."""

    count: int


Event = Frame | BadFrame | Control | Noise


def lrc(profile: LinkProfile, length_field: bytes, data: bytes) -> int:
    """The check byte of a frame: XOR from `lrc_start` over the bytes the profile covers."""
    if profile.lrc_covers == "data":
        covered = data
    elif profile.lrc_covers == "all":
        covered = bytes([profile.stx]) + length_field + data + bytes([profile.etx])
    else:
        covered = length_field + data + bytes([profile.etx])
    value = profile.lrc_start
    for byte in covered:
        value ^= byte
    return value


def check_payload_fits(profile: LinkProfile, data: bytes) -> None:
    """Refuse data a 7-bit link would corrupt: on bytesize 7 every byte must be below 0x80.

    Binary ISO 8583 dialects (BCD numerics, binary bitmaps) therefore cannot
    cross a 7-bit link; text dialects can.
    """
    if profile.bytesize != 7:
        return
    for offset, byte in enumerate(data):
        if byte > 0x7F:
            raise LinkProfileError(
                f"link profile {profile.name} is 7-bit (bytesize 7): data byte at offset {offset} is above 0x7F; "
                "a binary dialect cannot cross this link",
                "bytesize",
            )


def _length_framing(profile: LinkProfile) -> Framing:
    return Framing(profile.length)  # type: ignore[arg-type]  # "none" never reaches here


def encode_frame(profile: LinkProfile, data: bytes) -> bytes:
    """STX · length field (when the profile has one) · data · ETX · check byte."""
    check_payload_fits(profile, data)
    length_field = b""
    if profile.length != "none":
        try:
            length_field = encode_length(_length_framing(profile), len(data))
        except FramingError:
            raise ValueError(
                f"data of {len(data)} bytes does not fit the {profile.length} length field"
                f" of link profile {profile.name}"
            ) from None
    elif not profile.iso_length_header and profile.etx in data:
        # Without a length field or an inner ISO length header the reader ends the data at the first ETX.
        raise ValueError(
            f"data holds ETX at offset {data.index(profile.etx)}; link profile {profile.name} has no length field "
            "and no ISO length header, so it carries text without ETX only"
        )
    return (bytes([profile.stx]) + length_field + data + bytes([profile.etx])
            + bytes([lrc(profile, length_field, data)]))


class _State(Enum):
    IDLE = auto()
    LENGTH = auto()
    DATA = auto()
    ETX = auto()
    CHECK = auto()


class FrameReader:
    """Turns the bytes of a serial link, in whatever chunks they arrive, into events.

    Where the data ends: the profile's length field when it has one; else
    `inner_length(data so far)` — the total data length once the ISO message's
    own length header shows it, None until then; else, for text payloads
    only, the first ETX. `inner_length` is ignored when the profile has a
    length field. Noise is counted per `feed` call (consecutive bytes in one
    chunk make one event). After a bad frame the reader waits for the next
    STX; a frame that stops arriving stays partial until `reset()`.
    """

    def __init__(self, profile: LinkProfile, inner_length: Callable[[bytes], int | None] | None = None,
                 max_data: int = 8192):
        if max_data < 0:
            raise ValueError(f"max_data {max_data} must be 0 or more")
        self.profile = profile
        self.max_data = max_data
        self._inner_length = inner_length if profile.length == "none" else None
        self._controls = {profile.ack: "ACK", profile.nak: "NAK", profile.eot: "EOT", profile.enq: "ENQ"}
        self._length_size = 0 if profile.length == "none" else _length_framing(profile).length_size
        self._state = _State.IDLE
        self._length_field = bytearray()
        self._data = bytearray()
        self._expected: int | None = None

    @property
    def in_frame(self) -> bool:
        """A frame has started and not finished: the session arms its inter-byte timer."""
        return self._state is not _State.IDLE

    def reset(self) -> None:
        """Drop a partial frame (after the inter-byte timeout)."""
        self._state = _State.IDLE
        self._length_field.clear()
        self._data.clear()
        self._expected = None

    def feed(self, chunk: bytes) -> list[Event]:
        events: list[Event] = []
        noise = 0
        for byte in chunk:
            if self._state is _State.IDLE:
                if byte == self.profile.stx or byte in self._controls:
                    if noise:
                        events.append(Noise(noise))
                        noise = 0
                    if byte == self.profile.stx:
                        self._start(events)
                    else:
                        events.append(Control(self._controls[byte]))
                else:
                    noise += 1
            else:
                self._step(byte, events)
        if noise:
            events.append(Noise(noise))
        return events

    def _start(self, events: list[Event]) -> None:
        self.reset()
        if self._length_size:
            self._state = _State.LENGTH
            return
        self._state = _State.DATA
        if self._inner_length is not None:
            self._learn_length(self._inner_length, events)

    def _step(self, byte: int, events: list[Event]) -> None:
        if self._state is _State.LENGTH:
            self._length_field.append(byte)
            if len(self._length_field) == self._length_size:
                self._read_length_field(events)
        elif self._state is _State.DATA:
            if self._expected is None and self._inner_length is None and byte == self.profile.etx:
                self._state = _State.CHECK
                return
            self._data.append(byte)
            if self._expected is None:
                if self._inner_length is not None:
                    self._learn_length(self._inner_length, events)
                if self._expected is None and len(self._data) > self.max_data:
                    self._fail(events, f"data runs past the {self.max_data} bytes allowed")
            elif len(self._data) == self._expected:
                self._state = _State.ETX
        elif self._state is _State.ETX:
            if byte == self.profile.etx:
                self._state = _State.CHECK
            else:
                self._fail(events, f"missing ETX after {len(self._data)} data bytes (got 0x{byte:02X})")
                if byte == self.profile.stx:  # a frame cut short, then a new one
                    self._start(events)
        else:
            expected = lrc(self.profile, bytes(self._length_field), bytes(self._data))
            if byte == expected:
                events.append(Frame(bytes(self._data)))
                self.reset()
            else:
                self._fail(events, f"bad check byte 0x{byte:02X}, expected 0x{expected:02X}")

    def _read_length_field(self, events: list[Event]) -> None:
        try:
            size = decode_length(_length_framing(self.profile), bytes(self._length_field))
        except FramingError:
            self._fail(events, f"wrong length field {self._length_field.hex().upper()}: not {self.profile.length}")
            return
        self._expect(size, events)

    def _learn_length(self, inner_length: Callable[[bytes], int | None], events: list[Event]) -> None:
        size = inner_length(bytes(self._data))
        if size is None:
            return
        if size < len(self._data):
            self._fail(events, f"wrong length: inner length {size} is shorter than the {len(self._data)} bytes read")
            return
        self._expect(size, events)

    def _expect(self, size: int, events: list[Event]) -> None:
        if size > self.max_data:
            self._fail(events, f"oversize frame: {size} data bytes announced, more than the {self.max_data} allowed")
            return
        self._expected = size
        self._state = _State.ETX if len(self._data) == size else _State.DATA

    def _fail(self, events: list[Event], reason: str) -> None:
        events.append(BadFrame(reason))
        self.reset()
