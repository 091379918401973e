"""The MAC on an ISO 8583 message, computed the same way by terminal and host.

The MAC block (MAB) is the encoded message from the MTI on, without the
8 bytes of the MAC field itself (field 64, which the bitmap still announces):
for the usual message whose last field is 64 that is exactly "the bytes from
the MTI up to field 64"; fields after it (iso87 reversals' field 90) stay
covered instead of being left open to change. The dialect's `mac:` name picks
the algorithm:

- `cup-ecb`: the UnionPay ECB MAC; field 64 holds its 8 printable characters
  (as hex of those ASCII bytes, field 64 being binary).
- `x9.19`: the ANSI X9.19 retail MAC, zero padding, the full 8-byte result.

Signing encodes once with a placeholder MAC and patches the 8 bytes in place,
so the MAC covers exactly the bytes that go on the wire.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from possim.wire.codec import Codec, CodecError
from possim.wire.message import Message

from .mac import cup_ecb_mac, retail_mac

MAC_LENGTH = 8
_PLACEHOLDER = "00" * MAC_LENGTH

MacFunction = Callable[[bytes, bytes], bytes]
"""(MAC key, MAB) -> the 8 bytes field 64 carries."""

MAC_SCHEMES: dict[str, MacFunction] = {
    "cup-ecb": lambda key, mab: cup_ecb_mac(key, mab).field64,
    "x9.19": lambda key, mab: retail_mac(key, mab),
}


class MessageMacError(ValueError):
    """A dialect whose MAC scheme or MAC field this module cannot serve."""


class MessageMac:
    """Signs and verifies encoded messages of one dialect."""

    def __init__(self, codec: Codec):
        dialect = codec.dialect
        scheme = dialect.mac_scheme
        if scheme not in MAC_SCHEMES:
            raise MessageMacError(f"dialect {dialect.name}: mac {scheme!r} is not one of {', '.join(MAC_SCHEMES)}")
        where = dialect.roles.get("mac")
        if where is None or not where.isdigit():
            raise MessageMacError(f"dialect {dialect.name}: roles.mac must name the MAC field, e.g. \"64\"")
        self.codec = codec
        self.field = int(where)
        self._key = str(self.field)
        self._mac = MAC_SCHEMES[scheme]

    def sign(self, message: Message, key: bytes) -> bytes:
        """The encoded message with its MAC in place; `message` gets the MAC field set too."""
        message[self.field] = _PLACEHOLDER
        body = self.codec.encode(message)
        spans = self.codec.spans(body)
        start, end = spans[self._key]
        mac = self._mac(key, _block(body, spans, self._key))
        message[self.field] = mac.hex().upper()
        return body[:start] + mac + body[end:]

    def verify(self, body: bytes, key: bytes) -> str | None:
        """Why the encoded message `body` does not carry a good MAC under `key`, or None when it does."""
        try:
            spans = self.codec.spans(body)
        except (CodecError, ValueError) as exc:
            return f"MAC cannot be checked: {exc}"
        if self._key not in spans:
            return f"no MAC (field {self.field})"
        start, end = spans[self._key]
        expected = self._mac(key, _block(body, spans, self._key))
        if not hmac.compare_digest(expected, body[start:end]):
            return f"MAC (field {self.field}) does not verify"
        return None



def _block(body: bytes, spans: dict[str, tuple[int, int]], mac_key: str) -> bytes:
    """The MAB: from the MTI on (any message header is left out), without the MAC's own bytes."""
    start, end = spans[mac_key]
    return body[spans["t"][0] : start] + body[end:]
