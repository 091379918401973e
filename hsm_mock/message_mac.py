"""The MAC on an ISO 8583 message, computed the same way by terminal and host.

Where the MAC goes follows ISO 8583:1987: it is the message's last data
element, so a message without a secondary bitmap carries it in field 64 (the
dialect's `roles.mac`), and one with a secondary bitmap (any field 65-128)
carries it in field 128, with field 64 absent. A dialect that does not define
field 128 keeps the MAC in field 64 whatever else the message holds.

The MAC block (MAB) is the encoded message from the MTI on (a message header
is left out) up to the MAC field's own bytes: with the MAC last, that is
everything before the final 8 bytes. Only in a dialect without field 128 can
fields follow the MAC; their bytes are covered too, so no field is left open
to change. The dialect's `mac:` name picks the algorithm:

- `cup-ecb`: the UnionPay ECB MAC; the MAC field holds its 8 printable
  characters (as hex of those ASCII bytes, the field being binary).
- `x9.19`: the ANSI X9.19 retail MAC, zero padding, the full 8-byte result.

Signing encodes once with a placeholder MAC and patches the 8 bytes in place,
so the MAC covers exactly the bytes that go on the wire.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable

from possim.wire.codec import Codec, CodecError
from possim.wire.message import Message

from .mac import cup_ecb_mac, retail_mac

MAC_LENGTH = 8
SECONDARY_MAC_FIELD = 128
"""Where ISO 8583:1987 puts the MAC of a message with a secondary bitmap."""
_PLACEHOLDER = "00" * MAC_LENGTH

MacFunction = Callable[[bytes, bytes], bytes]
"""(MAC key, MAB) -> the 8 bytes the MAC field carries."""

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
        self._primary = int(where)
        self._secondary = SECONDARY_MAC_FIELD if str(SECONDARY_MAC_FIELD) in dialect.spec else None
        self._mac = MAC_SCHEMES[scheme]

    def field_for(self, message: Message) -> int:
        """The field that carries (or will carry) `message`'s MAC: 128 once it has a secondary bitmap, else 64."""
        return self._field_among(message.fields)

    def _field_among(self, numbers: Iterable[int]) -> int:
        """Fields above 64 are what a secondary bitmap announces."""
        if self._secondary is not None and any(number > 64 for number in numbers):
            return self._secondary
        return self._primary

    def sign(self, message: Message, key: bytes) -> bytes:
        """The encoded message with its MAC in place; `message` gets the MAC field set too.

        Any MAC the message already had (in either field) is dropped first, so
        a message re-signed after losing its fields above 64 moves back to 64.
        """
        for number in (self._primary, self._secondary):
            if number is not None:
                message.fields.pop(number, None)
        number = self.field_for(message)
        message[number] = _PLACEHOLDER
        body, spans = self.codec.encode_spans(message)
        start, end = spans[str(number)]
        mac = self._mac(key, _block(body, spans, str(number)))
        message[number] = mac.hex().upper()
        return body[:start] + mac + body[end:]

    def verify(self, body: bytes, key: bytes, spans: dict[str, tuple[int, int]] | None = None) -> str | None:
        """Why the encoded message `body` does not carry a good MAC under `key`, or None when it does.

        `spans`: the byte ranges of `body`'s parts when the caller has them already (`Codec.decode_spans`
        of these very bytes), which spares decoding the message a second time.
        """
        if spans is None:
            try:
                spans = self.codec.spans(body)
            except (CodecError, ValueError) as exc:
                return f"MAC cannot be checked: {exc}"
        present = {int(part) for part in spans if part.isdigit() and part != "1"}
        number = self._field_among(present)
        if number not in present:
            if number != self._primary and self._primary in present:
                return (f"no MAC (field {number}): a message with a secondary bitmap carries it in field {number},"
                        f" not field {self._primary}")
            return f"no MAC (field {number})"
        if number != self._primary and self._primary in present:
            return f"MAC in field {number}, yet field {self._primary} is present too: it must be absent"
        start, end = spans[str(number)]
        expected = self._mac(key, _block(body, spans, str(number)))
        if not hmac.compare_digest(expected, body[start:end]):
            return f"MAC (field {number}) does not verify"
        return None


def _block(body: bytes, spans: dict[str, tuple[int, int]], mac_key: str) -> bytes:
    """The MAB: from the MTI on (any message header is left out), without the MAC's own bytes."""
    start, end = spans[mac_key]
    return body[spans["t"][0] : start] + body[end:]
