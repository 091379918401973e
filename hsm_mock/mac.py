"""Message authentication codes used on payment messages.

- ISO/IEC 9797-1 MAC algorithm 1 (CBC-MAC; with a single-length DES key this
  is ANSI X9.9) and algorithm 3 (the retail MAC, ANSI X9.19), each with
  padding methods 1, 2 and 3.
- The UnionPay POS "ECB" MAC that the `cup` dialect puts in field 64.
- CMAC (NIST SP 800-38B) over AES and TDES, with the subkeys derived here
  from cipher.py's ECB primitive, because `cryptography`'s CMAC would need
  TripleDES outside cipher.py and would hide the subkey step we test.

Every block cipher call goes through cipher.py; this module only chains blocks.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

from .cipher import (
    AES_BLOCK,
    DES_BLOCK,
    aes_ecb_encrypt,
    tdes_cbc_encrypt,
    tdes_ecb_decrypt,
    tdes_ecb_encrypt,
    xor,
)

class MacError(ValueError):
    """A MAC request that cannot be computed; the message names the parameter."""


def pad(data: bytes, method: int, block: int = DES_BLOCK) -> bytes:
    """ISO/IEC 9797-1 padding.

    1: zeros to a whole block (empty data becomes one zero block);
    2: a 0x80 byte, then zeros;
    3: a block holding the data's length in bits, then the data padded as in 1.
    """
    if method == 1:
        if not data:
            return bytes(block)
        return data + bytes(-len(data) % block)
    if method == 2:
        data += b"\x80"
        return data + bytes(-len(data) % block)
    if method == 3:
        return (len(data) * 8).to_bytes(block, "big") + data + bytes(-len(data) % block)
    raise MacError(f"padding: method {method} is not one of 1, 2, 3")


def cbc_mac(key: bytes, data: bytes, padding: int = 1) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 1: the last block of a zero-IV CBC encryption.

    The block cipher is DES for an 8-byte key (ANSI X9.9) or TDES for 16/24.
    """
    return tdes_cbc_encrypt(key, pad(data, padding))[-DES_BLOCK:]


def x9_9_mac(key: bytes, data: bytes) -> bytes:
    """ANSI X9.9: algorithm 1 with single DES and zero padding."""
    if len(key) != 8:
        raise MacError(f"key: {len(key)} bytes; X9.9 uses a single-length (8-byte) DES key")
    return cbc_mac(key, data, 1)


def retail_mac(key: bytes, data: bytes, padding: int = 1) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 (ANSI X9.19 retail MAC) under a double-length key K||K'.

    Single DES under K chains every block, then the last result is decrypted
    under K' and encrypted under K: only the final block pays for TDES.
    """
    if len(key) != 16:
        raise MacError(f"key: {len(key)} bytes; the retail MAC uses a double-length (16-byte) key")
    left, right = key[:8], key[8:]
    chained = tdes_cbc_encrypt(left, pad(data, padding))[-DES_BLOCK:]
    return tdes_ecb_encrypt(left, tdes_ecb_decrypt(right, chained))


@dataclass(frozen=True)
class CupMac:
    """The UnionPay ECB MAC: `full` is the 16 hex characters, `field64` the first 8 of them."""

    full: bytes
    field64: bytes


def cup_ecb_mac(key: bytes, mab: bytes) -> CupMac:
    """UnionPay POS "ECB" MAC over the MAC block (MAB).

    XOR the zero-padded MAB's 8-byte blocks together, hex-expand the result to
    16 ASCII characters, encrypt the first 8 under the MAC key, XOR with the
    last 8, encrypt again and hex-expand: field 64 carries the first 8 characters.
    """
    # XOR is bytewise, so folding the blocks as native 64-bit words gives the same 8 bytes, at C speed.
    folded = reduce(operator.xor, memoryview(pad(mab, 1)).cast("Q"), 0).to_bytes(DES_BLOCK, sys.byteorder)
    expanded = folded.hex().upper().encode("ascii")
    first = int.from_bytes(tdes_ecb_encrypt(key, expanded[:DES_BLOCK]), "big")
    final = tdes_ecb_encrypt(key, (first ^ int.from_bytes(expanded[DES_BLOCK:], "big")).to_bytes(DES_BLOCK, "big"))
    full = final.hex().upper().encode("ascii")
    return CupMac(full=full, field64=full[:DES_BLOCK])


# ---- CMAC (NIST SP 800-38B) -------------------------------------------------------

_RB = {DES_BLOCK: 0x1B, AES_BLOCK: 0x87}


def _double(block: bytes) -> bytes:
    """Multiply by x in GF(2^b): shift left one bit, fold the carry back with Rb."""
    value = int.from_bytes(block, "big") << 1
    if value >> (8 * len(block)):
        value ^= _RB[len(block)]
    return (value & ((1 << (8 * len(block))) - 1)).to_bytes(len(block), "big")


def cmac_subkeys(encrypt: Callable[[bytes], bytes], block: int) -> tuple[bytes, bytes]:
    """K1 and K2 from L = CIPH_K(0^b) (SP 800-38B, 6.1)."""
    k1 = _double(encrypt(bytes(block)))
    return k1, _double(k1)


def _cmac(encrypt: Callable[[bytes], bytes], block: int, data: bytes) -> bytes:
    k1, k2 = cmac_subkeys(encrypt, block)
    if data and len(data) % block == 0:
        body, last = data[:-block], xor(data[-block:], k1)
    else:
        cut = len(data) - len(data) % block
        tail = data[cut:] + b"\x80"
        body, last = data[:cut], xor(tail + bytes(block - len(tail)), k2)
    state = bytes(block)
    for start in range(0, len(body), block):
        state = encrypt(xor(state, body[start : start + block]))
    return encrypt(xor(state, last))


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC, full 16-byte tag (truncate at the caller if a protocol says so)."""
    return _cmac(lambda block: aes_ecb_encrypt(key, block), AES_BLOCK, data)


def tdes_cmac(key: bytes, data: bytes) -> bytes:
    """TDES-CMAC, full 8-byte tag; a 16-byte key is used as K1K2K1."""
    if len(key) not in (16, 24):
        raise MacError(f"key: {len(key)} bytes; TDES-CMAC uses a double (16) or triple (24) length key")
    return _cmac(lambda block: tdes_ecb_encrypt(key, block), DES_BLOCK, data)
