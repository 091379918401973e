"""Block ciphers for payment cryptography, on `cryptography`.

Triple DES comes from `cryptography.hazmat.decrepit` and is always handed a
24-byte key: double-length keys are expanded K1K2K1 here, in one place, so
no caller reaches the deprecated short-key path. Keys and data are bytes;
every function checks lengths and says which parameter is wrong.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

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


@lru_cache(maxsize=4096)
def _tdes(key: bytes, iv: bytes | None) -> Cipher:
    """A TDES cipher (ECB without `iv`, else CBC), kept for the keys in use: building one costs as much as
    encrypting a block with it, and each encryptor() or decryptor() is a fresh context, so it can be shared.
    The cache is this process's memory only, like the keys its callers hold."""
    return Cipher(TripleDES(tdes_key(key)), modes.ECB() if iv is None else modes.CBC(iv))


_ECB_CONTEXTS = 4096
"""ECB contexts a thread keeps (one or two per key in use: encrypting, decrypting) before it starts afresh:
room for the MAC key of every terminal a host serves, at about 2 KB a key."""
_per_thread = threading.local()


def _ecb_context(key: bytes, encrypt: bool) -> Any:
    """A TDES ECB context for `key`, kept by this thread and used for every call.

    ECB chains nothing, and with whole blocks and no padding `update` returns
    every block at once and keeps nothing back, so a context never needs
    finishing and one serves any number of calls — sparing OpenSSL a context
    and a key schedule per call, which cost more than the block itself (a MAC
    takes two). A context must not be shared between threads, hence one set
    per thread; like the keys its callers hold, it lives in memory only.
    """
    contexts: dict[tuple[bytes, bool], Any] | None = getattr(_per_thread, "ecb", None)
    if contexts is None:
        contexts = _per_thread.ecb = {}
    context = contexts.get((key, encrypt))
    if context is None:
        cipher = _tdes(key, None)
        if len(contexts) >= _ECB_CONTEXTS:
            contexts.clear()
        context = contexts[key, encrypt] = cipher.encryptor() if encrypt else cipher.decryptor()
    return context


def tdes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    return _ecb_context(bytes(key), True).update(_blocks(data, DES_BLOCK, "data"))


def tdes_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    return _ecb_context(bytes(key), False).update(_blocks(data, DES_BLOCK, "data"))


def tdes_cbc_encrypt(key: bytes, data: bytes, iv: bytes = bytes(DES_BLOCK)) -> bytes:
    encryptor = _tdes(bytes(key), bytes(iv)).encryptor()
    return encryptor.update(_blocks(data, DES_BLOCK, "data")) + encryptor.finalize()


def tdes_cbc_decrypt(key: bytes, data: bytes, iv: bytes = bytes(DES_BLOCK)) -> bytes:
    decryptor = _tdes(bytes(key), bytes(iv)).decryptor()
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
