"""BER-TLV as EMV uses it (field 55, consumer-presented QR)."""

from __future__ import annotations


class TlvError(ValueError):
    def __init__(self, message: str, offset: int):
        super().__init__(f"{message} at byte offset {offset}")
        self.offset = offset


def parse(data: bytes) -> list[tuple[str, bytes]]:
    """Top-level (tag, value) pairs; tags as upper-case hex ("9F26")."""
    items = []
    at = 0
    while at < len(data):
        if data[at] in (0x00, 0xFF):  # padding between objects is allowed
            at += 1
            continue
        tag_start = at
        at += 1
        if data[tag_start] & 0x1F == 0x1F:
            while at < len(data) and data[at] & 0x80:
                at += 1
            at += 1
        tag = data[tag_start:at].hex().upper()
        if at >= len(data):
            raise TlvError(f"tag {tag} has no length", tag_start)
        length = data[at]
        at += 1
        if length & 0x80:
            count = length & 0x7F
            if not 1 <= count <= 3 or at + count > len(data):
                raise TlvError(f"tag {tag} has a bad length", at - 1)
            length = int.from_bytes(data[at : at + count], "big")
            at += count
        if at + length > len(data):
            raise TlvError(f"tag {tag} wants {length} bytes, {len(data) - at} left", tag_start)
        items.append((tag, data[at : at + length]))
        at += length
    return items


def encode(items: list[tuple[str, bytes]]) -> bytes:
    """The BER-TLV bytes of (tag, value) pairs; refuses a tag `parse` would read differently."""
    out = bytearray()
    for tag, value in items:
        raw = _tag_bytes(tag, len(out))
        n = len(value)
        if n > 0xFFFFFF:
            raise TlvError(f"tag {tag} value of {n} bytes is longer than a 3-byte length allows", len(out))
        out += raw
        out += bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
        out += value
    return bytes(out)


def _tag_bytes(tag: str, offset: int) -> bytes:
    try:
        raw = bytes.fromhex(tag)
    except ValueError:
        raise TlvError(f"tag {tag!r} is not hex", offset) from None
    multi_byte = bool(raw) and raw[0] & 0x1F == 0x1F
    well_formed = (
        bool(raw)
        and raw[0] not in (0x00, 0xFF)
        and (
            len(raw) == 1 and not multi_byte
            or multi_byte and len(raw) > 1 and all(b & 0x80 for b in raw[1:-1]) and not raw[-1] & 0x80
        )
    )
    if not well_formed:
        raise TlvError(f"tag {tag!r} is not a BER-TLV tag", offset)
    return raw
