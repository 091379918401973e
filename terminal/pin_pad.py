"""The terminal's PIN pad: a PIN leaves it only as an encrypted ISO 9564 format 0 block.

Two key setups, as terminals have them: the working PIN key a sign-on
delivered under the terminal master key, or DUKPT, where every transaction
gets its own key from the initial key and the next KSN, and the KSN travels
with the block so the host can derive the same key. Format 0 binds the PIN
to the PAN, which is what the "2" of field 53 announces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from possim.hsm_mock import dukpt_tdes, pinblock

SECURITY_CONTROL = "2600000000000000"
"""Field 53: 2 = PIN block ISO 9564 format 0 (with PAN), 6 = double-length TDES key, 0 = track data in clear."""


@dataclass(frozen=True)
class EncryptedPin:
    block: str = field(repr=False)
    """16 hex digits for field 52."""
    ksn: str | None = None
    """20 hex digits of the KSN for a DUKPT block; None under a working PIN key."""


def under_working_key(pin_key: bytes, pin: str, pan: str) -> EncryptedPin:
    return EncryptedPin(pinblock.encipher(pin_key, 0, pin, pan).hex().upper())


def under_dukpt(initial_key: bytes, ksn: bytes, pin: str, pan: str) -> EncryptedPin:
    key = dukpt_tdes.pin_key(dukpt_tdes.transaction_key(initial_key, ksn))
    return EncryptedPin(pinblock.encipher(key, 0, pin, pan).hex().upper(), ksn.hex().upper())
