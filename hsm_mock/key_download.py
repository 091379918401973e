"""Working keys sent at sign-on: a PIN key and a MAC key under the terminal master key.

The host makes two fresh double-length TDES keys and sends each encrypted
under the TMK (TDES ECB), followed by the first 4 bytes of its check value:
PIN key 16 + KCV 4, MAC key 16 + KCV 4 = 40 bytes, the `cup` layout for
sign-on with double-length keys (60.3 = 003), used by every dialect here.
The terminal decrypts them with its TMK and refuses them unless both check
values match: a key that does not check would silently fail every MAC.

Errors name the key, never its value.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .cipher import require_odd_parity, tdes_ecb_decrypt, tdes_ecb_encrypt
from .kcv import tdes_kcv

KEY_LENGTH = 16
KCV_LENGTH = 4
BLOCK_LENGTH = 2 * (KEY_LENGTH + KCV_LENGTH)


class KeyDownloadError(ValueError):
    """Working keys that cannot be used; the message names which and why."""


@dataclass(frozen=True, repr=False)
class WorkingKeys:
    """Clear working keys: kept only in memory, never written anywhere."""

    pin_key: bytes
    mac_key: bytes


def odd_parity(key: bytes) -> bytes:
    """Each byte's low bit set so the byte has an odd number of one bits, as DES keys need."""
    return bytes((b & 0xFE) | (bin(b >> 1).count("1") % 2 == 0) for b in key)


def generate_key(rng: random.Random) -> bytes:
    """A fresh double-length TDES key with odd parity."""
    return odd_parity(rng.randbytes(KEY_LENGTH))


def generate_working_keys(rng: random.Random) -> WorkingKeys:
    return WorkingKeys(generate_key(rng), generate_key(rng))


def pack(tmk: bytes, keys: WorkingKeys) -> bytes:
    """The 40 bytes the sign-on answer carries: each key under the TMK, then its 4-byte KCV."""
    return b"".join(
        tdes_ecb_encrypt(tmk, key) + tdes_kcv(key, KCV_LENGTH) for key in (keys.pin_key, keys.mac_key)
    )


@dataclass(frozen=True)
class Cryptograms:
    """The working keys as they arrived: still under the TMK, safe to store."""

    pin_key: bytes
    mac_key: bytes


def unpack(tmk: bytes, block: bytes) -> tuple[Cryptograms, WorkingKeys]:
    """Check a downloaded block against its check values; the keys under the TMK and in clear."""
    if len(block) != BLOCK_LENGTH:
        raise KeyDownloadError(
            f"working keys: {len(block)} bytes; expected {BLOCK_LENGTH} (PIN key 16 + KCV 4, MAC key 16 + KCV 4)"
        )
    parts = []
    for name, at in (("PIN key", 0), ("MAC key", KEY_LENGTH + KCV_LENGTH)):
        cryptogram, kcv = block[at : at + KEY_LENGTH], block[at + KEY_LENGTH : at + KEY_LENGTH + KCV_LENGTH]
        clear = tdes_ecb_decrypt(tmk, cryptogram)
        if tdes_kcv(clear, KCV_LENGTH) != kcv:
            raise KeyDownloadError(f"working keys: the {name}'s check value does not match (wrong TMK, or damaged)")
        require_odd_parity(clear, name)
        parts.append((cryptogram, clear))
    (pin_c, pin), (mac_c, mac) = parts
    return Cryptograms(pin_c, mac_c), WorkingKeys(pin, mac)


def clear_key(tmk: bytes, cryptogram: bytes) -> bytes:
    """A stored working key back in clear, for the moment it is used."""
    return tdes_ecb_decrypt(tmk, cryptogram)


def parse_tmk(text: object, who: str) -> bytes:
    """A TMK from its hex form in a profile: double length, odd parity; the error names `who`, not the key."""
    try:
        key = bytes.fromhex(str(text))
    except ValueError:
        raise KeyDownloadError(f"{who}: tmk is not hex") from None
    if len(key) != KEY_LENGTH:
        raise KeyDownloadError(f"{who}: tmk is {len(key)} bytes; a TMK is double length (16 bytes, 32 hex digits)")
    try:
        require_odd_parity(key, "tmk")
    except ValueError as exc:
        raise KeyDownloadError(f"{who}: {exc}") from None
    return key
