"""Card data of a queued advice, sealed under the terminal master key for the state file.

An advice (an offline sale, a refund whose answer never came) is sent
later, and must then carry the card as it was read (field 35, or 2 and 14,
and the chip data of 55). PCI DSS forbids keeping that in clear, so the
terminal encrypts those fields before the state sees them: TDES-CBC under
the TMK with a fresh random IV per advice (so equal cards do not give equal
blobs), ISO 9797-1 padding method 2. The TMK lives in the profile, never in
the state, so the state file alone does not reveal the card.

A lab simplification: real terminals keep a separate data-encryption key
rather than using the key-encryption key (TMK) on data.
"""

from __future__ import annotations

import json
import secrets

from possim.hsm_mock.cipher import DES_BLOCK, tdes_cbc_decrypt, tdes_cbc_encrypt

from .state import CARD_DATA_FIELDS

SEALED_FIELDS = CARD_DATA_FIELDS | {23}
"""What is taken out of an advice before it is stored: card data, and the card sequence number with it."""


class SealError(ValueError):
    """Sealed card data that does not open under this TMK; the text never shows the data."""


def split_card_data(fields: dict[int, str]) -> tuple[dict[int, str], dict[int, str]]:
    """(fields safe to store, card fields to seal) of a request."""
    safe = {n: v for n, v in fields.items() if n not in SEALED_FIELDS}
    card = {n: v for n, v in fields.items() if n in SEALED_FIELDS}
    return safe, card


def seal(tmk: bytes, card_fields: dict[int, str]) -> bytes:
    """IV (8 bytes) followed by the TDES-CBC encryption of the fields as JSON, padded (ISO 9797-1 method 2)."""
    clear = json.dumps({str(n): v for n, v in sorted(card_fields.items())}).encode()
    clear += b"\x80" + bytes(-(len(clear) + 1) % DES_BLOCK)
    iv = secrets.token_bytes(DES_BLOCK)
    return iv + tdes_cbc_encrypt(tmk, clear, iv)


def unseal(tmk: bytes, blob: bytes) -> dict[int, str]:
    """The card fields `seal` put in `blob`."""
    if len(blob) < 2 * DES_BLOCK or len(blob) % DES_BLOCK:
        raise SealError(f"sealed card data is {len(blob)} bytes: not an IV and whole 8-byte blocks")
    clear = tdes_cbc_decrypt(tmk, blob[DES_BLOCK:], blob[:DES_BLOCK]).rstrip(b"\x00")
    if not clear.endswith(b"\x80"):
        raise SealError("sealed card data does not open under this terminal's TMK (bad padding)")
    try:
        data = json.loads(clear[:-1].decode())
        return {int(n): str(v) for n, v in data.items()}
    except (UnicodeDecodeError, ValueError, AttributeError):
        raise SealError("sealed card data does not open under this terminal's TMK (not the sealed fields)") from None
