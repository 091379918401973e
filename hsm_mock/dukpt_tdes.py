"""TDES DUKPT (ANSI X9.24-1:2009): one key per transaction from a base derivation key.

A terminal holds only its initial key and the keys still needed for future
counters; the host holds the BDK and re-derives any transaction's keys from the
key serial number (KSN) that travels with the message. Both sides meet only
through these pure functions, so a terminal and a host built on them agree by
construction, and the published Annex A vectors pin the arithmetic.

Three things are easy to get wrong and are kept explicit here:
- the transaction key is never used directly: PIN, MAC and data keys are
  variants of it (XOR masks), and the data key additionally goes through a
  one-way function (the variant TDES-encrypts itself);
- the counter is the rightmost 21 bits of the 80-bit KSN, and the
  non-reversible key generation works on the rightmost 64 bits (the "KSN
  register"), not on the whole KSN;
- counters with more than 10 one-bits are never used by a terminal.

Keys and KSNs are bytes; clear keys are returned to the caller and never
written anywhere by this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from possim.hsm_mock.cipher import CryptoKeyError, tdes_ecb_encrypt, xor

KSN_LENGTH = 10
COUNTER_BITS = 21
COUNTER_MASK = (1 << COUNTER_BITS) - 1
MAX_COUNTER_ONES = 10
KEY_LENGTH = 16

# X9.24-1:2009 A.2: the mask that turns a key into its "other half" for the
# left register of the non-reversible key generation and for the IPEK.
_KEY_MASK = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")

# X9.24-1:2009 A.6 variant constants (XORed into the transaction key).
_PIN_VARIANT = bytes.fromhex("00000000000000FF00000000000000FF")
_MAC_REQUEST_VARIANT = bytes.fromhex("000000000000FF00000000000000FF00")
_MAC_RESPONSE_VARIANT = bytes.fromhex("00000000FF00000000000000FF000000")
_DATA_REQUEST_VARIANT = bytes.fromhex("0000000000FF00000000000000FF0000")
_DATA_RESPONSE_VARIANT = bytes.fromhex("000000FF00000000000000FF00000000")


@dataclass(frozen=True)
class TdesDukptKeys:
    """Every key of one transaction; repr hides the values so a stray log line cannot leak them."""

    initial_key: bytes = field(repr=False)
    transaction_key: bytes = field(repr=False)
    pin_key: bytes = field(repr=False)
    mac_request_key: bytes = field(repr=False)
    mac_response_key: bytes = field(repr=False)
    data_request_key: bytes = field(repr=False)
    data_response_key: bytes = field(repr=False)


def _check_key(key: bytes, name: str) -> bytes:
    if len(key) != KEY_LENGTH:
        raise CryptoKeyError(f"{name} is {len(key)} bytes: TDES DUKPT uses a double-length key of {KEY_LENGTH}")
    return key


def _check_ksn(ksn: bytes) -> bytes:
    if len(ksn) != KSN_LENGTH:
        raise ValueError(f"ksn is {len(ksn)} bytes: a TDES DUKPT KSN has {KSN_LENGTH} (20 hex digits)")
    return ksn


def ksn_counter(ksn: bytes) -> int:
    """The 21-bit transaction counter at the right of the KSN."""
    return int.from_bytes(_check_ksn(ksn), "big") & COUNTER_MASK


def _check_counter(counter: int) -> int:
    if counter == 0:
        raise ValueError("ksn counter is 0: that KSN names the initial key, not a transaction")
    ones = counter.bit_count()
    if ones > MAX_COUNTER_ONES:
        raise ValueError(
            f"ksn counter {counter:06X} has {ones} bits set: TDES DUKPT allows at most {MAX_COUNTER_ONES}"
        )
    return counter


def _initial_ksn_register(ksn: bytes) -> int:
    """The rightmost 64 bits of the KSN with the counter cleared."""
    return int.from_bytes(_check_ksn(ksn)[2:], "big") & ~COUNTER_MASK


def initial_key(bdk: bytes, ksn: bytes) -> bytes:
    """The initial PIN encryption key (IPEK) loaded into the terminal with this KSN.

    Why the counter is cleared: every KSN of the device derives the same
    initial key, so the host can start from any transaction's KSN.
    """
    _check_key(bdk, "bdk")
    device_id = (int.from_bytes(_check_ksn(ksn), "big") & ~COUNTER_MASK).to_bytes(KSN_LENGTH, "big")[:8]
    left = tdes_ecb_encrypt(bdk, device_id)
    right = tdes_ecb_encrypt(xor(bdk, _KEY_MASK), device_id)
    return left + right


def _single_des_one_way(key: bytes, data: bytes) -> bytes:
    """XOR right half, single-DES under left half, XOR right half again."""
    left, right = key[:8], key[8:]
    return xor(tdes_ecb_encrypt(left, xor(data, right)), right)


def _non_reversible_key(key: bytes, ksn_register: bytes) -> bytes:
    """X9.24-1:2009 non-reversible key generation: the next key down the counter's tree."""
    right = _single_des_one_way(key, ksn_register)
    left = _single_des_one_way(xor(key, _KEY_MASK), ksn_register)
    return left + right


def transaction_key(initial_key: bytes, ksn: bytes) -> bytes:
    """The key of the transaction numbered by the KSN's counter (before any variant).

    Walks the counter's set bits from the most significant down, adding each
    bit to the KSN register and deriving one key per bit, which is what a host
    must do since it keeps no per-terminal state.
    """
    key = _check_key(initial_key, "initial_key")
    counter = _check_counter(ksn_counter(ksn))
    register = _initial_ksn_register(ksn)
    bit = 1 << (COUNTER_BITS - 1)
    while bit:
        if counter & bit:
            register |= bit
            key = _non_reversible_key(key, register.to_bytes(8, "big"))
        bit >>= 1
    return key


def _variant(transaction_key: bytes, mask: bytes) -> bytes:
    return xor(_check_key(transaction_key, "transaction_key"), mask)


def _one_way_data_key(variant: bytes) -> bytes:
    """X9.24-1:2009: the data variant TDES-encrypts itself (each half, ECB) so the data key cannot be walked back."""
    return tdes_ecb_encrypt(variant, variant)


def pin_key(transaction_key: bytes) -> bytes:
    """The key that encrypts the PIN block."""
    return _variant(transaction_key, _PIN_VARIANT)


def mac_request_key(transaction_key: bytes) -> bytes:
    """The MAC key for the terminal's request."""
    return _variant(transaction_key, _MAC_REQUEST_VARIANT)


def mac_response_key(transaction_key: bytes) -> bytes:
    """The MAC key for the host's response, distinct so a request MAC cannot be replayed as a response."""
    return _variant(transaction_key, _MAC_RESPONSE_VARIANT)


def data_request_key(transaction_key: bytes) -> bytes:
    """The data encryption key for the request, through the one-way function."""
    return _one_way_data_key(_variant(transaction_key, _DATA_REQUEST_VARIANT))


def data_response_key(transaction_key: bytes) -> bytes:
    """The data encryption key for the response, through the one-way function."""
    return _one_way_data_key(_variant(transaction_key, _DATA_RESPONSE_VARIANT))


def derive_keys(bdk: bytes, ksn: bytes) -> TdesDukptKeys:
    """All keys a host needs for one transaction, from the BDK and the KSN it received."""
    ik = initial_key(bdk, ksn)
    tk = transaction_key(ik, ksn)
    return TdesDukptKeys(
        initial_key=ik,
        transaction_key=tk,
        pin_key=pin_key(tk),
        mac_request_key=mac_request_key(tk),
        mac_response_key=mac_response_key(tk),
        data_request_key=data_request_key(tk),
        data_response_key=data_response_key(tk),
    )


def next_ksn(ksn: bytes) -> bytes:
    """The KSN of the terminal's next transaction.

    Counters with more than 10 one-bits are skipped by adding the lowest set
    bit, as a terminal does when it has no future key for them; past the
    21-bit counter the device is exhausted and must be reloaded.
    """
    counter = ksn_counter(ksn) + 1
    while counter.bit_count() > MAX_COUNTER_ONES:
        counter += counter & -counter
    if counter > COUNTER_MASK:
        raise ValueError("ksn counter exhausted: the device needs a new initial key")
    value = (int.from_bytes(ksn, "big") & ~COUNTER_MASK) | counter
    return value.to_bytes(KSN_LENGTH, "big")
