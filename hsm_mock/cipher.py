"""Block ciphers for payment cryptography, on `cryptography`.

Triple DES comes from `cryptography.hazmat.decrepit` and is always handed a
24-byte key: double-length keys are expanded K1K2K1 here, in one place, so
no caller reaches the deprecated short-key path. Keys and data are bytes;
every function checks lengths and says which parameter is wrong.
"""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

DES_BLOCK = 8
AES_BLOCK = 16


class CryptoKeyError(ValueError):
    """Not a usable key: the message names the parameter and what it needs."""


def tdes_key(key: bytes, name: str = "key") -> bytes:
    """A 24-byte TDES key from a single (8), double (16) or triple (24) length key.

    Single length becomes K1K1K1, which is plain DES; double becomes K1K2K1.
    """
    if len(key) == 8:
        return key * 3
    if len(key) == 16:
        return key + key[:8]
    if len(key) == 24:
        return key
    raise CryptoKeyError(f"{name} is {len(key)} bytes: a DES/TDES key has 8, 16 or 24")


def require_odd_parity(key: bytes, name: str = "key") -> bytes:
    """The key unchanged, if every byte has odd parity as DES keys must.

    DES ignores the low bit of each byte, so a parity error is the only sign
    of a mistyped or corrupted key; HSMs refuse such keys and so do we.
    """
    for index, byte in enumerate(key):
        if bin(byte).count("1") % 2 == 0:
            raise CryptoKeyError(f"{name} byte {index + 1} of {len(key)} has even parity: DES keys need odd parity")
    return key


def double_length_key(text: object, name: str) -> bytes:
    """A double-length DES key from its hex form in a fixture or profile; errors name it, never show it."""
    try:
        key = bytes.fromhex(str(text))
    except ValueError:
        raise CryptoKeyError(f"{name} is not hex") from None
    if len(key) != 16:
        raise CryptoKeyError(f"{name} is {len(key)} bytes; it must be double length (16 bytes, 32 hex digits)")
    return require_odd_parity(key, name)


def aes_key(key: bytes, name: str = "key") -> bytes:
    if len(key) not in (16, 24, 32):
        raise CryptoKeyError(f"{name} is {len(key)} bytes: an AES key has 16, 24 or 32")
    return key


def _blocks(data: bytes, size: int, name: str) -> bytes:
    if len(data) % size:
        raise ValueError(f"{name} is {len(data)} bytes: not a whole number of {size}-byte blocks")
    return data


def tdes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    encryptor = Cipher(TripleDES(tdes_key(key)), modes.ECB()).encryptor()
    return encryptor.update(_blocks(data, DES_BLOCK, "data")) + encryptor.finalize()


def tdes_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    decryptor = Cipher(TripleDES(tdes_key(key)), modes.ECB()).decryptor()
    return decryptor.update(_blocks(data, DES_BLOCK, "data")) + decryptor.finalize()


def tdes_cbc_encrypt(key: bytes, data: bytes, iv: bytes = bytes(DES_BLOCK)) -> bytes:
    encryptor = Cipher(TripleDES(tdes_key(key)), modes.CBC(iv)).encryptor()
    return encryptor.update(_blocks(data, DES_BLOCK, "data")) + encryptor.finalize()


def tdes_cbc_decrypt(key: bytes, data: bytes, iv: bytes = bytes(DES_BLOCK)) -> bytes:
    decryptor = Cipher(TripleDES(tdes_key(key)), modes.CBC(iv)).decryptor()
    return decryptor.update(_blocks(data, DES_BLOCK, "data")) + decryptor.finalize()


def aes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(aes_key(key)), modes.ECB()).encryptor()
    return encryptor.update(_blocks(data, AES_BLOCK, "data")) + encryptor.finalize()


def aes_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(aes_key(key)), modes.ECB()).decryptor()
    return decryptor.update(_blocks(data, AES_BLOCK, "data")) + decryptor.finalize()


def aes_cbc_encrypt(key: bytes, data: bytes, iv: bytes = bytes(AES_BLOCK)) -> bytes:
    encryptor = Cipher(algorithms.AES(aes_key(key)), modes.CBC(iv)).encryptor()
    return encryptor.update(_blocks(data, AES_BLOCK, "data")) + encryptor.finalize()


def aes_cbc_decrypt(key: bytes, data: bytes, iv: bytes = bytes(AES_BLOCK)) -> bytes:
    decryptor = Cipher(algorithms.AES(aes_key(key)), modes.CBC(iv)).decryptor()
    return decryptor.update(_blocks(data, AES_BLOCK, "data")) + decryptor.finalize()


def xor(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError(f"cannot XOR {len(a)} bytes with {len(b)} bytes")
    return bytes(x ^ y for x, y in zip(a, b))
