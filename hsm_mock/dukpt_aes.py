"""AES DUKPT (ANSI X9.24-3:2017): the AES successor of TDES DUKPT.

Instead of XOR variants, every key is derived by AES-ECB-encrypting a 16-byte
derivation data block under its parent key. The block says what the new key
is for (key usage), what algorithm and length it has, and whose it is
(initial key ID, or the low half of the initial key ID plus a counter), so two
keys for different purposes or lengths can never coincide.

The KSN is 12 bytes: an 8-byte initial key ID and a 32-bit transaction
counter; counters with more than 16 one-bits are never used. A host walks the
counter's set bits from the most significant down to reach the transaction's
derivation key, then derives the working key it needs from it.

Keys and KSNs are bytes; clear keys are returned to the caller and never
written anywhere by this module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from possim.hsm_mock.cipher import AES_BLOCK, CryptoKeyError, aes_ecb_encrypt

KSN_LENGTH = 12
INITIAL_KEY_ID_LENGTH = 8
COUNTER_BITS = 32
COUNTER_MASK = (1 << COUNTER_BITS) - 1
MAX_COUNTER_ONES = 16
_DERIVATION_DATA_VERSION = 0x01


class KeyType(enum.Enum):
    """Derived key types: the algorithm indicator and key length the derivation data carries."""

    TDES2 = (0x0000, 128)
    TDES3 = (0x0001, 192)
    AES128 = (0x0002, 128)
    AES192 = (0x0003, 192)
    AES256 = (0x0004, 256)

    @property
    def algorithm(self) -> int:
        return self.value[0]

    @property
    def bits(self) -> int:
        return self.value[1]

    @property
    def length(self) -> int:
        return self.bits // 8


_AES_KEY_TYPES = {16: KeyType.AES128, 24: KeyType.AES192, 32: KeyType.AES256}


class KeyUsage(enum.IntEnum):
    """Key usage indicators of X9.24-3:2017 table 2."""

    KEY_ENCRYPTION = 0x0002
    PIN_ENCRYPTION = 0x1000
    MAC_GENERATION = 0x2000
    MAC_VERIFICATION = 0x2001
    MAC_BOTH_WAYS = 0x2002
    DATA_ENCRYPT = 0x3000
    DATA_DECRYPT = 0x3001
    DATA_BOTH_WAYS = 0x3002
    KEY_DERIVATION = 0x8000
    INITIAL_KEY = 0x8001


@dataclass(frozen=True)
class AesDukptKeys:
    """Every key of one transaction; repr hides the values so a stray log line cannot leak them."""

    initial_key: bytes = field(repr=False)
    transaction_key: bytes = field(repr=False)
    pin_key: bytes = field(repr=False)
    mac_generation_key: bytes = field(repr=False)
    mac_verification_key: bytes = field(repr=False)
    data_encrypt_key: bytes = field(repr=False)
    data_decrypt_key: bytes = field(repr=False)


def _derivation_key_type(key: bytes, name: str) -> KeyType:
    try:
        return _AES_KEY_TYPES[len(key)]
    except KeyError:
        raise CryptoKeyError(f"{name} is {len(key)} bytes: an AES DUKPT key has 16, 24 or 32") from None


def _check_ksn(ksn: bytes) -> bytes:
    if len(ksn) != KSN_LENGTH:
        raise ValueError(
            f"ksn is {len(ksn)} bytes: an AES DUKPT KSN has {KSN_LENGTH} "
            f"({INITIAL_KEY_ID_LENGTH}-byte initial key ID + 4-byte counter, 24 hex digits)"
        )
    return ksn


def ksn_counter(ksn: bytes) -> int:
    """The 32-bit transaction counter at the right of the KSN."""
    return int.from_bytes(_check_ksn(ksn)[INITIAL_KEY_ID_LENGTH:], "big")


def initial_key_id(ksn: bytes) -> bytes:
    """The 8-byte initial key ID (BDK ID + derivation ID) at the left of the KSN."""
    return _check_ksn(ksn)[:INITIAL_KEY_ID_LENGTH]


def _check_counter(counter: int) -> int:
    if counter == 0:
        raise ValueError("ksn counter is 0: that KSN names the initial key, not a transaction")
    ones = counter.bit_count()
    if ones > MAX_COUNTER_ONES:
        raise ValueError(
            f"ksn counter {counter:08X} has {ones} bits set: AES DUKPT allows at most {MAX_COUNTER_ONES}"
        )
    return counter


def _derivation_data(usage: KeyUsage, key_type: KeyType, tail: bytes) -> bytearray:
    """The 16-byte block of X9.24-3:2017 6.3.2; byte 1 (block counter) is set per output block."""
    return bytearray(
        bytes([_DERIVATION_DATA_VERSION, 0])
        + usage.to_bytes(2, "big")
        + key_type.algorithm.to_bytes(2, "big")
        + key_type.bits.to_bytes(2, "big")
        + tail
    )


def _derive(parent: bytes, data: bytearray, key_type: KeyType) -> bytes:
    """Encrypt the derivation data once per 16 bytes of output, numbering the blocks from 1."""
    blocks = -(-key_type.length // AES_BLOCK)
    out = b""
    for number in range(1, blocks + 1):
        data[1] = number
        out += aes_ecb_encrypt(parent, bytes(data))
    return out[: key_type.length]


def initial_key(bdk: bytes, ksn: bytes) -> bytes:
    """The terminal's initial key: the BDK's type and length, bound to the KSN's initial key ID."""
    key_type = _derivation_key_type(bdk, "bdk")
    data = _derivation_data(KeyUsage.INITIAL_KEY, key_type, initial_key_id(ksn))
    return _derive(bdk, data, key_type)


def _counter_tail(ksn: bytes, counter: int) -> bytes:
    """Right half of the derivation data: the low 4 bytes of the initial key ID, then a counter."""
    return initial_key_id(ksn)[4:] + counter.to_bytes(4, "big")


def transaction_key(initial_key: bytes, ksn: bytes) -> bytes:
    """The derivation key of the transaction numbered by the KSN's counter.

    One derivation per set bit of the counter, most significant first, each
    bound to the partial counter reached so far.
    """
    key_type = _derivation_key_type(initial_key, "initial_key")
    counter = _check_counter(ksn_counter(ksn))
    key = initial_key
    partial = 0
    bit = 1 << (COUNTER_BITS - 1)
    while bit:
        if counter & bit:
            partial |= bit
            data = _derivation_data(KeyUsage.KEY_DERIVATION, key_type, _counter_tail(ksn, partial))
            key = _derive(key, data, key_type)
        bit >>= 1
    return key


def working_key(transaction_key: bytes, ksn: bytes, usage: KeyUsage, key_type: KeyType) -> bytes:
    """A working key of the given usage and type from the transaction's derivation key.

    A working key may not be longer than the key it comes from (an AES-128
    BDK cannot yield AES-256 keys), so a weak BDK cannot pose as a strong one.
    """
    parent_type = _derivation_key_type(transaction_key, "transaction_key")
    if key_type.bits > parent_type.bits:
        raise CryptoKeyError(
            f"working key type {key_type.name} is {key_type.bits} bits: longer than the "
            f"{parent_type.bits}-bit derivation key it would come from"
        )
    counter = _check_counter(ksn_counter(ksn))
    return _derive(transaction_key, _derivation_data(usage, key_type, _counter_tail(ksn, counter)), key_type)


def derive_keys(bdk: bytes, ksn: bytes, working_key_type: KeyType = KeyType.AES128) -> AesDukptKeys:
    """All keys a host needs for one transaction, from the BDK and the KSN it received."""
    ik = initial_key(bdk, ksn)
    tk = transaction_key(ik, ksn)

    def derive(usage: KeyUsage) -> bytes:
        return working_key(tk, ksn, usage, working_key_type)

    return AesDukptKeys(
        initial_key=ik,
        transaction_key=tk,
        pin_key=derive(KeyUsage.PIN_ENCRYPTION),
        mac_generation_key=derive(KeyUsage.MAC_GENERATION),
        mac_verification_key=derive(KeyUsage.MAC_VERIFICATION),
        data_encrypt_key=derive(KeyUsage.DATA_ENCRYPT),
        data_decrypt_key=derive(KeyUsage.DATA_DECRYPT),
    )


def next_ksn(ksn: bytes) -> bytes:
    """The KSN of the terminal's next transaction.

    Counters with more than 16 one-bits are skipped by adding the lowest set
    bit; past the 32-bit counter the device is exhausted and must be reloaded.
    """
    counter = ksn_counter(ksn) + 1
    while counter.bit_count() > MAX_COUNTER_ONES:
        counter += counter & -counter
    if counter > COUNTER_MASK:
        raise ValueError("ksn counter exhausted: the device needs a new initial key")
    return initial_key_id(ksn) + counter.to_bytes(4, "big")
