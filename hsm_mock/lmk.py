"""The HSM's Local Master Key: a payShield-style variant LMK set.

A variant LMK is 20 double-length DES key pairs (LMK 00-01 ... 38-39). A key
held "under the LMK" is encrypted with the pair its key type names, after two
XOR masks change that pair so one cryptogram can never pass for another:

- the key type variant (the first digit of a 3-digit key type code, e.g. 4 in
  CVK `402`) XORs the first byte of the pair's left key;
- the key scheme variant splits multi-length keys: scheme U encrypts the two
  halves of a double-length key under the pair with A6 and then 5A XORed
  into the first byte of the pair's right key; scheme T uses 6A, DE, 2B for
  the three thirds. Schemes X and Y (ANSI X9.17) and single-length keys use
  no scheme variant.

The same construction protects keys exchanged under a ZMK or TMK (key type
variant 0), so `wrap`/`unwrap` serve both.

The default set is the widely published payShield test LMK (the values in
the payShield manuals and in open HSM simulators, e.g. the ThalesSim
projects' `GenerateTestLMKs`), so cryptograms, KCVs and replies match other
test HSMs. A user can load their own set from a text file.

Errors name the parameter and never contain key material.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .cipher import CryptoKeyError, require_odd_parity, tdes_ecb_decrypt, tdes_ecb_encrypt

PAIR_COUNT = 20

TEST_LMK_PAIRS: tuple[str, ...] = (
    "01010101010101017902CD1FD36EF8BA",  # 00-01
    "20202020202020203131313131313131",  # 02-03
    "40404040404040405151515151515151",  # 04-05 ZMK
    "61616161616161617070707070707070",  # 06-07 ZPK
    "80808080808080809191919191919191",  # 08-09
    "A1A1A1A1A1A1A1A1B0B0B0B0B0B0B0B0",  # 10-11
    "C1C1010101010101D0D0010101010101",  # 12-13
    "E0E0010101010101F1F1010101010101",  # 14-15 TMK, TPK, PVK; CVK under variant 4
    "1C587F1C13924FEF0101010101010101",  # 16-17 TAK
    "01010101010101010101010101010101",  # 18-19
    "02020202020202020404040404040404",  # 20-21
    "07070707070707071010101010101010",  # 22-23
    "13131313131313131515151515151515",  # 24-25
    "16161616161616161919191919191919",  # 26-27 ZAK
    "1A1A1A1A1A1A1A1A1C1C1C1C1C1C1C1C",  # 28-29 BDK
    "23232323232323232525252525252525",  # 30-31 ZEK
    "26262626262626262929292929292929",  # 32-33 DEK/TEK
    "2A2A2A2A2A2A2A2A2C2C2C2C2C2C2C2C",  # 34-35
    "2F2F2F2F2F2F2F2F3131313131313131",  # 36-37
    "01010101010101010101010101010101",  # 38-39
)
"""The published payShield test LMK, pair by pair (variant LMK)."""

KEY_TYPE_VARIANTS = (0x00, 0xA6, 0x5A, 0x6A, 0xDE, 0x2B, 0x50, 0x74, 0x9C, 0xFA)
"""XOR masks for key type variants 0-9, applied to the first byte of the pair's left key."""

SCHEME_VARIANTS = {"U": (0xA6, 0x5A), "T": (0x6A, 0xDE, 0x2B)}
"""XOR masks per key part, applied to the first byte of the pair's right key."""

SCHEME_LENGTHS = {"Z": 8, "U": 16, "X": 16, "T": 24, "Y": 24}
"""Key length in bytes each key scheme tag stands for (Z: single length, untagged on the wire)."""

PAIR_CODES = {
    "00": 2, "01": 3, "02": 7, "03": 8, "04": 9, "05": 10, "06": 11, "07": 12,
    "08": 13, "09": 14, "0A": 15, "0B": 16, "0C": 17, "0D": 18, "0E": 19,
}  # fmt: skip
"""The last two characters of a key type code -> LMK pair index (00 = LMK 04-05, ...)."""


class LmkError(ValueError):
    """An LMK file or key type that cannot be used; the message names which part."""


@dataclass(frozen=True)
class KeyType:
    """A 3-character payShield key type code: variant digit + LMK pair code (`001` ZPK, `402` CVK)."""

    code: str
    pair: int
    """Index of the LMK pair: 0 for 00-01, 2 for 04-05, ..., 19 for 38-39."""
    variant: int

    @property
    def pair_name(self) -> str:
        return f"{2 * self.pair:02d}-{2 * self.pair + 1:02d}"


def key_type(code: str) -> KeyType:
    """The key type a 3-character code names, e.g. `001` (ZPK under LMK 06-07)."""
    code = code.upper()
    if len(code) != 3 or not code[0].isdigit() or code[1:] not in PAIR_CODES:
        raise LmkError(f"key type: {code!r} is not a variant-LMK key type code (variant digit + 00..0E)")
    return KeyType(code, PAIR_CODES[code[1:]], int(code[0]))


ZMK = key_type("000")
ZPK = key_type("001")
TMK = TPK = PVK = key_type("002")
TAK = key_type("003")
ZAK = key_type("008")
BDK = key_type("009")
TEK = key_type("00B")
"""A terminal's data (track) encryption key: LMK 32-33."""
CVK = key_type("402")


def _xor_byte(key: bytes, index: int, mask: int) -> bytes:
    changed = bytearray(key)
    changed[index] ^= mask
    return bytes(changed)


def scheme_for_length(length: int, tagged: bool = True) -> str:
    """The key scheme of a clear key of `length` bytes: Z, then U or T (or X or Y when not tagged)."""
    for scheme, size in SCHEME_LENGTHS.items():
        if size == length and (scheme in "ZUT" if tagged else scheme in "ZXY"):
            return scheme
    raise CryptoKeyError(f"key is {length} bytes: a DES/TDES key has 8, 16 or 24")


def wrap(kek: bytes, clear: bytes, scheme: str, type_variant: int = 0) -> bytes:
    """Encrypt `clear` under a double-length key-encrypting key with the variant method.

    `scheme` is Z (single length), U or T (a scheme variant per part), X or Y
    (each 8-byte block ECB under the same key).
    """
    return _variant_ecb(tdes_ecb_encrypt, kek, clear, scheme, type_variant)


def unwrap(kek: bytes, cryptogram: bytes, scheme: str, type_variant: int = 0) -> bytes:
    """Undo `wrap`."""
    return _variant_ecb(tdes_ecb_decrypt, kek, cryptogram, scheme, type_variant)


def _variant_ecb(
    cipher: Callable[[bytes, bytes], bytes], kek: bytes, data: bytes, scheme: str, type_variant: int
) -> bytes:
    """The key-type variant on byte 0 of the KEK; for U/T, a scheme mask on byte 8 per 8-byte part."""
    _check_scheme(scheme, len(data))
    base = _xor_byte(kek, 0, KEY_TYPE_VARIANTS[type_variant])
    if scheme not in SCHEME_VARIANTS:
        return cipher(base, data)
    return b"".join(
        cipher(_xor_byte(base, 8, mask), data[8 * part : 8 * part + 8])
        for part, mask in enumerate(SCHEME_VARIANTS[scheme])
    )


def _check_scheme(scheme: str, length: int) -> None:
    if scheme not in SCHEME_LENGTHS:
        raise LmkError(f"key scheme: {scheme!r} is not one of Z, U, T, X, Y")
    if SCHEME_LENGTHS[scheme] != length:
        raise CryptoKeyError(f"key is {length} bytes; key scheme {scheme} needs {SCHEME_LENGTHS[scheme]}")


def key_text(scheme: str, cryptogram: bytes) -> str:
    """How a key appears in a host command: the scheme tag (none for Z) then upper-case hex."""
    return ("" if scheme == "Z" else scheme) + cryptogram.hex().upper()


class VariantLmk:
    """Twenty double-length LMK pairs; encrypts and decrypts keys by key type."""

    def __init__(self, pairs: Sequence[bytes]):
        if len(pairs) != PAIR_COUNT:
            raise LmkError(f"lmk: {len(pairs)} pairs given; a variant LMK has {PAIR_COUNT} (00-01 to 38-39)")
        for index, pair in enumerate(pairs):
            name = f"lmk pair {2 * index:02d}-{2 * index + 1:02d}"
            if len(pair) != 16:
                raise LmkError(f"{name}: {len(pair)} bytes; each pair is a double-length key (16 bytes)")
            try:
                require_odd_parity(pair, name)
            except CryptoKeyError as exc:
                raise LmkError(str(exc)) from None
        self._pairs = tuple(bytes(pair) for pair in pairs)

    @classmethod
    def test(cls) -> VariantLmk:
        """The published payShield test LMK."""
        return cls([bytes.fromhex(pair) for pair in TEST_LMK_PAIRS])

    @classmethod
    def load(cls, path: str | Path) -> VariantLmk:
        """An LMK from a text file: 20 lines of 32 hex digits, pairs 00-01 to 38-39 in order.

        Blank lines and lines starting with `;` or `#` are skipped.
        """
        pairs = []
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
            text = line.strip()
            if not text or text[0] in ";#":
                continue
            if len(text) != 32 or any(c not in "0123456789abcdefABCDEF" for c in text):
                raise LmkError(f"lmk file line {number}: expected 32 hex digits (one LMK pair)")
            pairs.append(bytes.fromhex(text))
        return cls(pairs)

    def pair(self, index: int) -> bytes:
        return self._pairs[index]

    def check_value(self) -> bytes:
        """LMK pair 00-01's encryption of a zero block: the value NC reports (8 bytes)."""
        return tdes_ecb_encrypt(self._pairs[0], bytes(8))

    def encrypt(self, clear: bytes, kind: KeyType, scheme: str | None = None) -> bytes:
        """`clear` under the LMK for key type `kind`; scheme defaults to Z/U/T by length."""
        scheme = scheme or scheme_for_length(len(clear))
        return wrap(self._pairs[kind.pair], clear, scheme, kind.variant)

    def decrypt(self, cryptogram: bytes, kind: KeyType, scheme: str | None = None) -> bytes:
        scheme = scheme or scheme_for_length(len(cryptogram))
        return unwrap(self._pairs[kind.pair], cryptogram, scheme, kind.variant)
