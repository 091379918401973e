"""Working keys sent at sign-on: PIN, MAC and optionally track keys under the terminal master key.

The host makes fresh double-length TDES keys and sends each encrypted under
the TMK (TDES ECB), followed by the first 4 bytes of its check value, in the
`cup` layout of field 62, used by every dialect here:

- PIN key 16 + KCV 4, MAC key 16 + KCV 4 = 40 bytes: UnionPay sign-on with
  double-length keys (network management code 60.3 = 003);
- the same, then the track (data) key 16 + KCV 4 = 60 bytes: 60.3 = 004,
  for terminals that encrypt track data under a TDK.

The terminal decrypts them with its TMK and refuses them unless every check
value matches: a key that does not check would silently fail every MAC.
Single-length keys (60.3 = 001) are not offered.

Errors name the key, never its value.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .cipher import CryptoKeyError, double_length_key, require_odd_parity, tdes_ecb_decrypt, tdes_ecb_encrypt
from .kcv import tdes_kcv

KEY_LENGTH = 16
KCV_LENGTH = 4
_ENTRY_LENGTH = KEY_LENGTH + KCV_LENGTH
BLOCK_LENGTH = 2 * _ENTRY_LENGTH
"""PIN and MAC keys."""
BLOCK_LENGTH_WITH_TRACK_KEY = 3 * _ENTRY_LENGTH
"""PIN, MAC and track keys."""

_NAMES = ("PIN key", "MAC key", "track key")


class KeyDownloadError(ValueError):
    """Working keys that cannot be used; the message names which and why."""


@dataclass(frozen=True, repr=False)
class WorkingKeys:
    """Clear working keys: kept only in memory, never written anywhere."""

    pin_key: bytes
    mac_key: bytes
    data_key: bytes | None = None
    """The track (data) key, TDK: only in a 60.3 = 004 download."""


def odd_parity(key: bytes) -> bytes:
    """Each byte's low bit set so the byte has an odd number of one bits, as DES keys need."""
    return bytes((b & 0xFE) | (bin(b >> 1).count("1") % 2 == 0) for b in key)


def generate_key(rng: random.Random) -> bytes:
    """A fresh double-length TDES key with odd parity."""
    return odd_parity(rng.randbytes(KEY_LENGTH))


def generate_working_keys(rng: random.Random, with_data_key: bool = False) -> WorkingKeys:
    """Fresh PIN and MAC keys, and a track key when asked; PIN and MAC come first, so a seeded
    `rng` gives the same two whether or not a track key follows."""
    pin_key, mac_key = generate_key(rng), generate_key(rng)
    return WorkingKeys(pin_key, mac_key, generate_key(rng) if with_data_key else None)


def pack(tmk: bytes, keys: WorkingKeys) -> bytes:
    """The block the sign-on answer carries: each key under the TMK, then its 4-byte KCV.

    40 bytes for PIN and MAC keys, 60 when a track key follows them.
    """
    present = (keys.pin_key, keys.mac_key) + ((keys.data_key,) if keys.data_key is not None else ())
    return b"".join(tdes_ecb_encrypt(tmk, key) + tdes_kcv(key, KCV_LENGTH) for key in present)


@dataclass(frozen=True)
class Cryptograms:
    """The working keys as they arrived: still under the TMK, safe to store."""

    pin_key: bytes
    mac_key: bytes
    data_key: bytes | None = None


def unpack(tmk: bytes, block: bytes) -> tuple[Cryptograms, WorkingKeys]:
    """Check a downloaded block (40 or 60 bytes) against its check values; the keys under the TMK and in clear."""
    if len(block) not in (BLOCK_LENGTH, BLOCK_LENGTH_WITH_TRACK_KEY):
        raise KeyDownloadError(
            f"working keys: {len(block)} bytes; expected {BLOCK_LENGTH} (PIN key 16 + KCV 4, MAC key 16 + KCV 4)"
            f" or {BLOCK_LENGTH_WITH_TRACK_KEY} (the same, then track key 16 + KCV 4)"
        )
    cryptograms, clears = [], []
    for name, at in zip(_NAMES, range(0, len(block), _ENTRY_LENGTH)):
        cryptogram, kcv = block[at : at + KEY_LENGTH], block[at + KEY_LENGTH : at + _ENTRY_LENGTH]
        clear = tdes_ecb_decrypt(tmk, cryptogram)
        if tdes_kcv(clear, KCV_LENGTH) != kcv:
            raise KeyDownloadError(f"working keys: the {name}'s check value does not match (wrong TMK, or damaged)")
        require_odd_parity(clear, name)
        cryptograms.append(cryptogram)
        clears.append(clear)
    return Cryptograms(*cryptograms), WorkingKeys(*clears)


def clear_key(tmk: bytes, cryptogram: bytes) -> bytes:
    """A stored working key back in clear, for the moment it is used."""
    return tdes_ecb_decrypt(tmk, cryptogram)


def parse_tmk(text: object, who: str) -> bytes:
    """A TMK from its hex form in a profile: double length, odd parity; the error names `who`, not the key."""
    try:
        return double_length_key(text, "tmk")
    except CryptoKeyError as exc:
        raise KeyDownloadError(f"{who}: {exc}") from None
