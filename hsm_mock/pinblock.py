"""ISO 9564-1 PIN blocks: formats 0-3 (8 bytes, TDES) and format 4 (16 bytes, AES).

Formats 0-3 are built and read as one clear block and enciphered with TDES
ECB under a PIN key. Format 4 has no single clear block: its PIN field and
PAN field meet only inside an encrypt-XOR-encrypt chain, so its public
functions encipher and decipher directly.

Random fill (formats 1, 3, 4) comes from an injectable `random.Random`-like
source so a test can replay a block; the default is the operating system's
CSPRNG. Errors name the parameter and give lengths, never the PIN, PAN or
block itself (those must not reach logs or exception text).
"""

from __future__ import annotations

import random
from typing import Protocol

from .cipher import aes_ecb_decrypt, aes_ecb_encrypt, tdes_ecb_decrypt, tdes_ecb_encrypt, xor

CLASSIC_FORMATS = (0, 1, 2, 3)
_PIN_MIN, _PIN_MAX = 4, 12
_DIGITS = frozenset("0123456789")


class PinBlockError(ValueError):
    """A PIN, PAN or PIN block that cannot be used; the message names which."""


class RandomSource(Protocol):
    """The one method of `random.Random` the fill needs, so tests can pass a seeded one."""

    def getrandbits(self, k: int, /) -> int: ...


def _rng(rng: RandomSource | None) -> RandomSource:
    return rng if rng is not None else random.SystemRandom()


def _check_pin(pin: str) -> None:
    if not set(pin) <= _DIGITS:
        raise PinBlockError(f"pin: not all decimal digits; a PIN is {_PIN_MIN} to {_PIN_MAX} decimal digits")
    if not _PIN_MIN <= len(pin) <= _PIN_MAX:
        raise PinBlockError(f"pin: {len(pin)} digits given; a PIN is {_PIN_MIN} to {_PIN_MAX} decimal digits")


def _check_pan(pan: str, minimum: int) -> None:
    if not set(pan) <= _DIGITS:
        raise PinBlockError("pan: must be decimal digits only")
    if len(pan) < minimum:
        raise PinBlockError(f"pan: {len(pan)} digits is too short; at least {minimum} are needed")
    if len(pan) > 19:
        raise PinBlockError(f"pan: {len(pan)} digits is too long; a PAN has at most 19")


def _check_format(fmt: int) -> None:
    if fmt not in CLASSIC_FORMATS:
        raise PinBlockError(f"fmt: format {fmt} is not one of 0, 1, 2, 3")


# ---- formats 0-3 (8-byte blocks) -------------------------------------------------


def pan_field(pan: str) -> bytes:
    """Formats 0 and 3 bind the PIN to the 12 PAN digits before the check digit."""
    _check_pan(pan, 13)
    return bytes.fromhex("0000" + pan[-13:-1])


def _fill(fmt: int, count: int, rng: RandomSource | None) -> str:
    if fmt in (0, 2):
        return "F" * count
    source = _rng(rng)
    if fmt == 1:
        return "".join(f"{source.getrandbits(4):X}" for _ in range(count))
    return "".join(_nibble_a_to_f(source) for _ in range(count))


def _nibble_a_to_f(source: RandomSource) -> str:
    """Format 3 fill is uniform over A-F; rejection keeps it unbiased."""
    while True:
        value = source.getrandbits(3)
        if value < 6:
            return f"{0xA + value:X}"


def encode(fmt: int, pin: str, pan: str = "", rng: RandomSource | None = None) -> bytes:
    """The clear 8-byte PIN block of format 0, 1, 2 or 3.

    `pan` is needed by formats 0 and 3 only; `rng` by formats 1 and 3 only.
    """
    _check_format(fmt)
    _check_pin(pin)
    field = f"{fmt:X}{len(pin):X}{pin}"
    clear = bytes.fromhex(field + _fill(fmt, 16 - len(field), rng))
    return xor(clear, pan_field(pan)) if fmt in (0, 3) else clear


def decode(block: bytes, pan: str = "", fmt: int | None = None) -> str:
    """The PIN in a clear 8-byte block of format 0-3, checked against its format's rules.

    With `fmt` given, a block of any other format is refused rather than read:
    a format mismatch means the two ends disagree about the PIN pad.
    """
    if len(block) != 8:
        raise PinBlockError(f"block: {len(block)} bytes; a format 0-3 PIN block has 8")
    declared = block[0] >> 4
    if declared not in CLASSIC_FORMATS:
        raise PinBlockError(f"block: format nibble {declared:X} is not ISO 9564 format 0, 1, 2 or 3")
    if fmt is not None:
        _check_format(fmt)
        if declared != fmt:
            raise PinBlockError(f"block: control nibble says format {declared}, expected format {fmt}")
    clear = xor(block, pan_field(pan)) if declared in (0, 3) else block
    pin, fill = _pin_and_fill(clear.hex().upper())
    if declared in (0, 2) and set(fill) - {"F"}:
        raise PinBlockError(f"block: format {declared} fill must be all F")
    if declared == 3 and set(fill) - set("ABCDEF"):
        raise PinBlockError("block: format 3 fill must be A-F")
    return pin


def _pin_and_fill(digits: str) -> tuple[str, str]:
    """Split the hex of a clear PIN field (control nibble, length nibble, PIN, fill) into PIN and fill."""
    length = int(digits[1], 16)
    if not _PIN_MIN <= length <= _PIN_MAX:
        raise PinBlockError(f"block: PIN length nibble {length} is outside {_PIN_MIN}-{_PIN_MAX}")
    pin, fill = digits[2 : 2 + length], digits[2 + length :]
    if not pin.isdigit():
        raise PinBlockError("block: PIN field holds a non-decimal digit")
    return pin, fill


def encipher(key: bytes, fmt: int, pin: str, pan: str = "", rng: RandomSource | None = None) -> bytes:
    """A format 0-3 block enciphered under a TDES PIN key (TPK/ZPK/PEK), as field 52 carries it."""
    return tdes_ecb_encrypt(key, encode(fmt, pin, pan, rng))


def decipher(key: bytes, block: bytes, pan: str = "", fmt: int | None = None) -> str:
    """The PIN in a TDES-enciphered format 0-3 block."""
    if len(block) != 8:
        raise PinBlockError(f"block: {len(block)} bytes; a format 0-3 PIN block has 8")
    return decode(tdes_ecb_decrypt(key, block), pan, fmt)


# ---- format 4 (16-byte AES blocks) ------------------------------------------------


def pin_field_4(pin: str, rng: RandomSource | None = None) -> bytes:
    """Control 4, length, PIN, fill A to 16 nibbles, then 8 random bytes."""
    _check_pin(pin)
    head = f"4{len(pin):X}{pin}".ljust(16, "A")
    return bytes.fromhex(head) + _rng(rng).getrandbits(64).to_bytes(8, "big")


def pan_field_4(pan: str) -> bytes:
    """Length of the PAN minus 12 in the first nibble, the PAN left-justified, zero filled.

    A PAN shorter than 12 digits gets nibble 0 and is right-justified in 12 digits.
    """
    _check_pan(pan, 1)
    digits = f"{len(pan) - 12:X}{pan}" if len(pan) >= 12 else "0" + pan.rjust(12, "0")
    return bytes.fromhex(digits.ljust(32, "0"))


def decode_pin_field_4(field: bytes) -> str:
    """The PIN in a clear format 4 PIN field."""
    if len(field) != 16:
        raise PinBlockError(f"block: {len(field)} bytes; a format 4 PIN field has 16")
    digits = field[:8].hex().upper()
    if digits[0] != "4":
        raise PinBlockError(f"block: control nibble says format {digits[0]}, expected format 4")
    pin, fill = _pin_and_fill(digits)
    if set(fill) - {"A"}:
        raise PinBlockError("block: format 4 fill must be all A")
    return pin


def encipher_4(key: bytes, pin: str, pan: str, rng: RandomSource | None = None) -> bytes:
    """Encrypt the PIN field, XOR the PAN field, encrypt again (ISO 9564-1:2017, 9.4.2)."""
    first = aes_ecb_encrypt(key, pin_field_4(pin, rng))
    return aes_ecb_encrypt(key, xor(first, pan_field_4(pan)))


def decipher_4(key: bytes, block: bytes, pan: str) -> str:
    """Undo `encipher_4`: decrypt, XOR the PAN field, decrypt, read the PIN field."""
    if len(block) != 16:
        raise PinBlockError(f"block: {len(block)} bytes; a format 4 PIN block has 16")
    middle = xor(aes_ecb_decrypt(key, block), pan_field_4(pan))
    return decode_pin_field_4(aes_ecb_decrypt(key, middle))
