"""PIN verification without storing PINs: IBM 3624 offsets and Visa PVVs.

An issuer never keeps the PIN. It keeps either an IBM 3624 offset (the
digit-wise distance from a PIN derived from the card to the customer's chosen
PIN) or a Visa PVV (four digits derived from PAN, key index and PIN). Both
are recomputed under the PIN verification key (PVK) at authorization time
and compared, so a stolen database of offsets or PVVs reveals no PIN without
the key.

Key problems raise `CryptoKeyError` (an HSM answers 10/11); bad data raises
`ValueError` naming the parameter (an HSM answers 15). Messages never
contain PINs or keys.
"""

from __future__ import annotations

import hmac

from .cipher import CryptoKeyError, require_odd_parity, tdes_ecb_encrypt

HEX_DIGITS = "0123456789ABCDEF"
DEFAULT_DECIMALIZATION_TABLE = "0123456789012345"
"""Maps hex 0–F to 0123456789012345: the table IBM and most issuers publish."""

PVV_LENGTH = 4


def _pvk(key: bytes, name: str = "pvk") -> bytes:
    """A PVK is a single- or double-length DES key with odd parity."""
    if len(key) not in (8, 16):
        raise CryptoKeyError(f"{name} is {len(key)} bytes: a PIN verification key has 8 or 16")
    return require_odd_parity(key, name)


def _decimal(value: str, name: str, shortest: int, longest: int) -> str:
    """`value` if it is all decimal digits within the length bounds (length only in the error)."""
    if not (value.isascii() and value.isdigit()) or not shortest <= len(value) <= longest:
        raise ValueError(
            f"{name} must be {shortest} to {longest} decimal digits (got {len(value)} characters)"
        )
    return value


def _decimalization_table(table: str) -> str:
    if len(table) != 16 or not (table.isascii() and table.isdigit()):
        raise ValueError("decimalization_table must be 16 decimal digits")
    return table


def decimalize(hex_digits: str, table: str = DEFAULT_DECIMALIZATION_TABLE) -> str:
    """Each hex digit replaced by the table entry at its value (IBM 3624 step 2).

    The table is a parameter because issuers choose their own; a weak table
    (e.g. all zeros) is an issuer decision the HSM does not second-guess.
    """
    table = _decimalization_table(table)
    return "".join(table[HEX_DIGITS.index(digit)] for digit in hex_digits.upper())


def _validation_block(validation_data: str, pad: str) -> bytes:
    """Validation data right-padded with `pad` to the 16 hex digits DES encrypts."""
    if len(pad) != 1 or pad.upper() not in HEX_DIGITS:
        raise ValueError("pad must be one hex digit")
    if not 4 <= len(validation_data) <= 16 or any(c not in HEX_DIGITS for c in validation_data.upper()):
        raise ValueError(
            f"validation_data must be 4 to 16 hex digits (got {len(validation_data)} characters)"
        )
    return bytes.fromhex(validation_data.upper().ljust(16, pad.upper()))


def pan_validation_data(pan: str, start: int = 0, length: int = 16) -> str:
    """The PAN digits an issuer chose as validation data: `length` digits from `start`.

    Issuers commonly use the whole PAN or its leftmost 16 digits; which digits
    is issuer policy, so the caller says.
    """
    pan = _decimal(pan, "pan", 12, 19)
    if start < 0 or length < 4 or start + length > len(pan):
        raise ValueError(f"pan digits {start}..{start + length} are outside a {len(pan)}-digit pan")
    return pan[start : start + length]


def ibm3624_natural_pin(
    pvk: bytes,
    validation_data: str,
    pin_length: int,
    *,
    decimalization_table: str = DEFAULT_DECIMALIZATION_TABLE,
    pad: str = "F",
) -> str:
    """The PIN the card would have if the customer had not chosen one.

    Encrypt the padded validation data under the PVK, decimalize, keep the
    leftmost `pin_length` digits.
    """
    if not 4 <= pin_length <= 16:
        raise ValueError(f"pin_length must be 4 to 16 (got {pin_length})")
    encrypted = tdes_ecb_encrypt(_pvk(pvk), _validation_block(validation_data, pad))
    return decimalize(encrypted.hex().upper(), decimalization_table)[:pin_length]


def ibm3624_offset(
    pvk: bytes,
    validation_data: str,
    pin: str,
    *,
    decimalization_table: str = DEFAULT_DECIMALIZATION_TABLE,
    pad: str = "F",
) -> str:
    """The offset to store: customer PIN minus natural PIN, digit by digit mod 10 (no borrow)."""
    pin = _decimal(pin, "pin", 4, 16)
    natural = ibm3624_natural_pin(
        pvk, validation_data, len(pin), decimalization_table=decimalization_table, pad=pad
    )
    return "".join(str((int(p) - int(n)) % 10) for p, n in zip(pin, natural))


def ibm3624_pin_from_offset(
    pvk: bytes,
    validation_data: str,
    offset: str,
    *,
    decimalization_table: str = DEFAULT_DECIMALIZATION_TABLE,
    pad: str = "F",
) -> str:
    """The customer PIN an offset stands for: natural PIN plus offset, digit by digit mod 10."""
    offset = _decimal(offset, "offset", 4, 16)
    natural = ibm3624_natural_pin(
        pvk, validation_data, len(offset), decimalization_table=decimalization_table, pad=pad
    )
    return "".join(str((int(n) + int(o)) % 10) for n, o in zip(natural, offset))


def ibm3624_verify(
    pvk: bytes,
    validation_data: str,
    pin: str,
    offset: str,
    *,
    decimalization_table: str = DEFAULT_DECIMALIZATION_TABLE,
    pad: str = "F",
) -> bool:
    """Whether `pin` is the PIN that `offset` encodes (constant-time compare)."""
    pin = _decimal(pin, "pin", 4, 16)
    offset = _decimal(offset, "offset", 4, 16)
    if len(pin) != len(offset):
        return False
    expected = ibm3624_offset(pvk, validation_data, pin, decimalization_table=decimalization_table, pad=pad)
    return hmac.compare_digest(expected, offset)


def visa_decimalize(hex_digits: str, count: int) -> str:
    """Visa's decimalization: the decimal digits left to right, then A–F minus 10, first `count`.

    Shared by PVV and CVV. Unlike an IBM table it needs no parameter, which is
    why every Visa implementation agrees on it.
    """
    hex_digits = hex_digits.upper()
    digits = [c for c in hex_digits if c.isdigit()]
    letters = [str(HEX_DIGITS.index(c) - 10) for c in hex_digits if not c.isdigit()]
    return "".join(digits + letters)[:count]


def _transformed_security_parameter(pan: str, pvki: str, pin: str) -> bytes:
    """TSP: 11 rightmost PAN digits before the check digit, PVKI, 4 leftmost PIN digits."""
    pan = _decimal(pan, "pan", 12, 19)
    pvki = _decimal(pvki, "pvki", 1, 1)
    pin = _decimal(pin, "pin", 4, 12)
    return bytes.fromhex(pan[-12:-1] + pvki + pin[:4])


def visa_pvv(pvk: bytes, pan: str, pvki: str, pin: str) -> str:
    """The 4-digit Visa PIN verification value stored for this card and PIN."""
    encrypted = tdes_ecb_encrypt(_pvk(pvk), _transformed_security_parameter(pan, pvki, pin))
    return visa_decimalize(encrypted.hex(), PVV_LENGTH)


def visa_pvv_verify(pvk: bytes, pan: str, pvki: str, pin: str, pvv: str) -> bool:
    """Whether `pin` reproduces the stored `pvv` (constant-time compare)."""
    pvv = _decimal(pvv, "pvv", PVV_LENGTH, PVV_LENGTH)
    return hmac.compare_digest(visa_pvv(pvk, pan, pvki, pin), pvv)
