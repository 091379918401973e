"""Key check values: how two parties confirm they hold the same key without showing it.

TDES (ANSI X9.24-1 legacy method): encrypt one zero block, keep the leftmost
bytes (3 by default; some networks show 4, e.g. the `cup` sign-on download).
AES (ANSI X9.24-1:2017 Annex A, PCI PIN 15-1): CMAC of one zero block, keep the
leftmost bytes, at most 5 (40 bits). AES must not use the ECB method: it gives
a different value for the same key, so an HSM comparing would reject it.
"""

from __future__ import annotations

from .cipher import AES_BLOCK, DES_BLOCK, tdes_ecb_encrypt
from .mac import aes_cmac

TDES_KCV_LENGTH = 3
AES_KCV_LENGTH = 5


class KcvError(ValueError):
    """A check value length the method cannot give; the message names the parameter."""


def _check_length(length: int, maximum: int) -> None:
    if not 1 <= length <= maximum:
        raise KcvError(f"length: {length} bytes; this check value has 1 to {maximum}")


def tdes_kcv(key: bytes, length: int = TDES_KCV_LENGTH) -> bytes:
    """Leftmost `length` bytes of the key's encryption of 8 zero bytes."""
    _check_length(length, DES_BLOCK)
    return tdes_ecb_encrypt(key, bytes(DES_BLOCK))[:length]


def aes_kcv(key: bytes, length: int = AES_KCV_LENGTH) -> bytes:
    """Leftmost `length` bytes of the AES-CMAC of 16 zero bytes (X9.24-1 caps it at 5)."""
    _check_length(length, AES_KCV_LENGTH)
    return aes_cmac(key, bytes(AES_BLOCK))[:length]
