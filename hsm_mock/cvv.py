"""Card verification values: CVV/CVC (stripe), CVV2/CVC2 (printed), iCVV (chip track).

One algorithm, shared by Visa and Mastercard, fed different inputs: the
stripe CVV uses the card's service code, CVV2 uses service code 000, iCVV
(the value in the chip's track 2 equivalent, so stripe data skimmed from a
chip cannot be replayed as a stripe) uses 999.

Expiry order. Track data stores the expiry as YYMM, and the CVV, iCVV and
Visa CVV2 calculations (as in the payShield CW/CY commands) take it in that
order. Some issuers compute CVC2 with the printed MMYY order instead, so
`cvv2` accepts `expiry_order="MMYY"`; both take the date as YYMM and
rearrange it, so callers never guess.

Key problems raise `CryptoKeyError`; bad data raises `ValueError` naming the
parameter. Messages never contain keys or CVVs.
"""

from __future__ import annotations

import hmac
from typing import Literal

from .cipher import CryptoKeyError, require_odd_parity, tdes_ecb_encrypt, xor
from .pinverify import visa_decimalize

CVV_LENGTH = 3
CVV2_SERVICE_CODE = "000"
ICVV_SERVICE_CODE = "999"

ExpiryOrder = Literal["YYMM", "MMYY"]


def _cvk(key: bytes) -> tuple[bytes, bytes]:
    """Key A and key B of a double-length CVK with odd parity."""
    if len(key) != 16:
        raise CryptoKeyError(f"cvk is {len(key)} bytes: a CVK is a double-length key (16 bytes, A||B)")
    require_odd_parity(key, "cvk")
    return key[:8], key[8:]


def _digits(value: str, name: str, shortest: int, longest: int) -> str:
    if not (value.isascii() and value.isdigit()) or not shortest <= len(value) <= longest:
        if shortest == longest:
            raise ValueError(f"{name} must be {shortest} decimal digits (got {len(value)} characters)")
        raise ValueError(
            f"{name} must be {shortest} to {longest} decimal digits (got {len(value)} characters)"
        )
    return value


def _yymm(expiry_yymm: str) -> str:
    """`expiry_yymm` checked as a real YYMM date, so an MMYY mix-up is caught, not hashed."""
    _digits(expiry_yymm, "expiry_yymm", 4, 4)
    if not 1 <= int(expiry_yymm[2:]) <= 12:
        raise ValueError("expiry_yymm must be YYMM with month 01-12")
    return expiry_yymm


def card_verification_value(cvk: bytes, pan: str, expiry: str, service_code: str) -> str:
    """The 3-digit value for PAN, 4 expiry digits (in the order given) and service code.

    PAN·expiry·service code, zero-padded to 32 hex digits, is split into two
    blocks: block 1 is DES-encrypted under key A, XORed with block 2, then
    TDES-encrypted under A||B; the result is Visa-decimalized.
    """
    key_a, _ = _cvk(cvk)
    pan = _digits(pan, "pan", 12, 19)
    expiry = _digits(expiry, "expiry", 4, 4)
    service_code = _digits(service_code, "service_code", 3, 3)
    data = bytes.fromhex((pan + expiry + service_code).ljust(32, "0"))
    chained = xor(tdes_ecb_encrypt(key_a, data[:8]), data[8:])
    return visa_decimalize(tdes_ecb_encrypt(cvk, chained).hex(), CVV_LENGTH)


def cvv(cvk: bytes, pan: str, expiry_yymm: str, service_code: str) -> str:
    """The magnetic-stripe CVV/CVC1 (expiry YYMM, the card's service code)."""
    return card_verification_value(cvk, pan, _yymm(expiry_yymm), service_code)


def cvv2(cvk: bytes, pan: str, expiry_yymm: str, expiry_order: ExpiryOrder = "YYMM") -> str:
    """The printed CVV2/CVC2 (service code 000; expiry YYMM unless the issuer uses MMYY)."""
    yymm = _yymm(expiry_yymm)
    if expiry_order == "YYMM":
        expiry = yymm
    elif expiry_order == "MMYY":
        expiry = yymm[2:] + yymm[:2]
    else:
        raise ValueError(f"expiry_order must be YYMM or MMYY (got {expiry_order!r})")
    return card_verification_value(cvk, pan, expiry, CVV2_SERVICE_CODE)


def icvv(cvk: bytes, pan: str, expiry_yymm: str) -> str:
    """The chip iCVV (service code 999, expiry YYMM)."""
    return card_verification_value(cvk, pan, _yymm(expiry_yymm), ICVV_SERVICE_CODE)


def _matches(expected: str, candidate: str) -> bool:
    candidate = _digits(candidate, "candidate", CVV_LENGTH, CVV_LENGTH)
    return hmac.compare_digest(expected, candidate)


def verify_cvv(cvk: bytes, pan: str, expiry_yymm: str, service_code: str, candidate: str) -> bool:
    """Whether `candidate` is the card's stripe CVV (constant-time compare)."""
    return _matches(cvv(cvk, pan, expiry_yymm, service_code), candidate)


def verify_cvv2(
    cvk: bytes, pan: str, expiry_yymm: str, candidate: str, expiry_order: ExpiryOrder = "YYMM"
) -> bool:
    """Whether `candidate` is the card's CVV2 (constant-time compare)."""
    return _matches(cvv2(cvk, pan, expiry_yymm, expiry_order), candidate)


def verify_icvv(cvk: bytes, pan: str, expiry_yymm: str, candidate: str) -> bool:
    """Whether `candidate` is the card's iCVV (constant-time compare)."""
    return _matches(icvv(cvk, pan, expiry_yymm), candidate)
