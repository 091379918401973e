"""TR-31 / ANSI X9.143 key blocks: how keys travel between HSMs with their use bound to them.

A key block is printable ASCII: a 16-character header (version, length, key
usage, algorithm, mode of use, key version, exportability, optional block
count), optional blocks, the encrypted payload in hex and a MAC in hex. The MAC
covers the header, so a key exported as "PIN encryption only" cannot be
re-labelled as a MAC or data key without the receiver noticing.

Versions:
- B (TDES) and D (AES), "key derivation binding": an encryption key (KBEK) and
  an authentication key (KBAK) are derived from the key block protection key
  (KBPK) with CMAC; the MAC is a CMAC of header || clear payload under the KBAK
  (8 bytes for B, 16 for D) and the payload is CBC-encrypted under the KBEK
  with that MAC as the IV.
- A and C (TDES), the older "key variant binding": KBEK and KBAK are the KBPK
  XORed with 0x45 and 0x4D bytes; the payload is CBC-encrypted with the first
  8 header characters as IV and the MAC is the leftmost 4 bytes of a TDES
  CBC-MAC (ISO 9797-1 algorithm 1) over header || binary ciphertext. Kept
  because older peers still send it.

The clear payload is a 2-byte key length in bits, the key, then random padding
to whole cipher blocks; X9.143 also allows padding as if the key were longer
(`masked_key_length`) so the block does not reveal the key's size. Padding
bytes come from an injectable `random.Random`-like source so published examples
can be replayed. Every block-cipher and MAC call goes through cipher.py/mac.py.

Errors name the part of the block and its offset, never the clear key; the key
handed back by `unwrap` is a `ClearKey`, whose repr does not show its bytes.
"""

from __future__ import annotations

import hmac
import random
import string
from dataclasses import dataclass
from typing import Protocol

from .cipher import (
    AES_BLOCK,
    DES_BLOCK,
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    tdes_cbc_decrypt,
    tdes_cbc_encrypt,
    xor,
)
from .mac import aes_cmac, cbc_mac, tdes_cmac

VERSIONS = ("A", "B", "C", "D")
HEADER_LENGTH = 16
MAX_BLOCK_LENGTH = 9999
PADDING_BLOCK_ID = "PB"

_ALNUM = frozenset(string.ascii_letters + string.digits)
_HEX = frozenset(string.hexdigits)
_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))


class KeyBlockError(ValueError):
    """A key block or wrap request that cannot be used.

    `part` names what is wrong (e.g. "length", "MAC", "optional block KS") and
    `offset` is the character offset in the block where that part starts, when
    there is a block to point into.
    """

    def __init__(self, part: str, problem: str, offset: int | None = None) -> None:
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"key block {part}{where}: {problem}")
        self.part = part
        self.offset = offset


class RandomSource(Protocol):
    """The one method of `random.Random` padding needs, so tests can replay published padding."""

    def randbytes(self, n: int, /) -> bytes: ...


class ClearKey(bytes):
    """Key bytes out of `unwrap`: equal to and usable as bytes, but repr/str hide the value.

    A tuple `(header, key)` lands in logs and assertion messages easily; this
    keeps the key itself out of them.
    """

    def __repr__(self) -> str:
        return f"<ClearKey: {len(self)} bytes>"

    __str__ = __repr__


@dataclass(frozen=True)
class KeyBlockHeader:
    """What the key is for, as the header binds it (everything but length and block count).

    `optional_blocks` is (ID, data) pairs in order, without the padding block
    (PB), which `wrap` adds and `unwrap` drops because it carries no meaning.
    `reserved` is the last two header characters (X9.143 puts the key context
    there; TR-31:2018 has "00").
    """

    version: str
    key_usage: str
    algorithm: str
    mode_of_use: str
    key_version: str = "00"
    exportability: str = "N"
    optional_blocks: tuple[tuple[str, str], ...] = ()
    reserved: str = "00"


@dataclass(frozen=True)
class _Scheme:
    """What differs between versions: cipher block, MAC length, KBPK sizes."""

    block: int
    mac_length: int
    kbpk_lengths: tuple[int, ...]


_SCHEMES = {
    "A": _Scheme(DES_BLOCK, 4, (8, 16, 24)),
    "B": _Scheme(DES_BLOCK, 8, (16, 24)),
    "C": _Scheme(DES_BLOCK, 4, (8, 16, 24)),
    "D": _Scheme(AES_BLOCK, 16, (16, 24, 32)),
}


# ---- header text ---------------------------------------------------------------------


def _check_field(name: str, value: str, width: int) -> None:
    if len(value) != width or not set(value) <= _ALNUM:
        raise KeyBlockError(name, f"{value!r} is not {width} letters or digits")


def _scheme(version: str, offset: int | None = None) -> _Scheme:
    scheme = _SCHEMES.get(version)
    if scheme is None:
        raise KeyBlockError("version", f"unknown version {version!r}; supported: {', '.join(VERSIONS)}", offset)
    return scheme


def _encode_optional_block(block_id: str, data: str) -> str:
    """ID, length (including ID and length) in 2 hex digits, or "00" + "02" + 4 hex digits when longer."""
    _check_field("optional block ID", block_id, 2)
    if not set(data) <= _PRINTABLE:
        raise KeyBlockError(f"optional block {block_id}", "data must be printable ASCII")
    if 4 + len(data) <= 0xFF:
        return f"{block_id}{4 + len(data):02X}{data}"
    if 10 + len(data) <= 0xFFFF:
        return f"{block_id}0002{10 + len(data):04X}{data}"
    raise KeyBlockError(f"optional block {block_id}", f"{len(data)} characters of data is too long")


def _header_text(header: KeyBlockHeader, payload_length: int) -> str:
    """The header with optional blocks and a PB block padding it to whole cipher blocks."""
    scheme = _scheme(header.version)
    _check_field("key usage", header.key_usage, 2)
    _check_field("algorithm", header.algorithm, 1)
    _check_field("mode of use", header.mode_of_use, 1)
    _check_field("key version", header.key_version, 2)
    _check_field("exportability", header.exportability, 1)
    _check_field("reserved", header.reserved, 2)
    if any(block_id == PADDING_BLOCK_ID for block_id, _ in header.optional_blocks):
        raise KeyBlockError("optional block PB", "the padding block is added by wrap, do not pass it")
    blocks = "".join(_encode_optional_block(block_id, data) for block_id, data in header.optional_blocks)
    count = len(header.optional_blocks)
    short = -(HEADER_LENGTH + len(blocks)) % scheme.block
    if count and short:
        # PB's own ID and length take 4 characters; a shorter gap needs one more block.
        fill = short if short >= 4 else short + scheme.block
        blocks += f"{PADDING_BLOCK_ID}{fill:02X}" + "0" * (fill - 4)
        count += 1
    if count > 99:
        raise KeyBlockError("optional blocks", f"{count} blocks; a header holds at most 99")
    total = HEADER_LENGTH + len(blocks) + 2 * payload_length + 2 * scheme.mac_length
    if total > MAX_BLOCK_LENGTH:
        raise KeyBlockError("length", f"{total} characters; a key block holds at most {MAX_BLOCK_LENGTH}")
    return (
        f"{header.version}{total:04d}{header.key_usage}{header.algorithm}{header.mode_of_use}"
        f"{header.key_version}{header.exportability}{count:02d}{header.reserved}{blocks}"
    )


def _read_hex_number(block: str, offset: int, width: int, part: str) -> int:
    text = block[offset : offset + width]
    if len(text) != width or not set(text) <= _HEX:
        raise KeyBlockError(part, f"{text!r} is not {width} hex digits", offset)
    return int(text, 16)


def _read_optional_blocks(block: str, count: int) -> tuple[tuple[tuple[str, str], ...], int]:
    """The (ID, data) pairs after the fixed header, without PB, and where the header ends."""
    blocks: list[tuple[str, str]] = []
    offset = HEADER_LENGTH
    for _ in range(count):
        block_id = block[offset : offset + 2]
        if len(block_id) != 2 or not set(block_id) <= _ALNUM:
            raise KeyBlockError("optional block ID", f"{block_id!r} is not 2 letters or digits", offset)
        part = f"optional block {block_id}"
        length = _read_hex_number(block, offset + 2, 2, f"{part} length")
        header_size = 4
        if length == 0:
            length_of_length = _read_hex_number(block, offset + 4, 2, f"{part} length of length")
            if length_of_length == 0:
                raise KeyBlockError(f"{part} length of length", "must not be 0", offset + 4)
            length = _read_hex_number(block, offset + 6, 2 * length_of_length, f"{part} length")
            header_size = 6 + 2 * length_of_length
        if length < header_size:
            raise KeyBlockError(f"{part} length", f"{length} does not cover its own ID and length", offset + 2)
        if offset + length > len(block):
            raise KeyBlockError(part, f"length {length} runs past the end of the block", offset)
        if block_id != PADDING_BLOCK_ID:
            blocks.append((block_id, block[offset + header_size : offset + length]))
        offset += length
    return tuple(blocks), offset


def read_header(block: str) -> tuple[KeyBlockHeader, int]:
    """The header of a key block and the offset where its encrypted payload starts.

    Checks everything that needs no key: printable ASCII, length field equal to
    the block's length, known version, field syntax, optional block framing and
    a header that fills whole cipher blocks. An HSM reads this before choosing
    the KBPK; `unwrap` reads it before touching any key.
    """
    if not isinstance(block, str):
        raise KeyBlockError("type", f"expected str, got {type(block).__name__}")
    for offset, char in enumerate(block):
        if char not in _PRINTABLE:
            raise KeyBlockError("character", f"{char!r} is not printable ASCII", offset)
    if len(block) < HEADER_LENGTH:
        raise KeyBlockError("header", f"key block too short: {len(block)} characters, a header has {HEADER_LENGTH}")
    scheme = _scheme(block[0], 0)
    length_text = block[1:5]
    if not length_text.isdigit():
        raise KeyBlockError("length", f"{length_text!r} is not 4 decimal digits", 1)
    if int(length_text) != len(block):
        raise KeyBlockError("length", f"field says {int(length_text)} characters, the block has {len(block)}", 1)
    fields = (("key usage", 5, 2), ("algorithm", 7, 1), ("mode of use", 8, 1), ("key version", 9, 2),
              ("exportability", 11, 1), ("reserved", 14, 2))  # fmt: skip
    for name, offset, width in fields:
        if not set(block[offset : offset + width]) <= _ALNUM:
            raise KeyBlockError(name, f"{block[offset:offset + width]!r} is not letters or digits", offset)
    count_text = block[12:14]
    if not count_text.isdigit():
        raise KeyBlockError("optional block count", f"{count_text!r} is not 2 decimal digits", 12)
    optional_blocks, end = _read_optional_blocks(block, int(count_text))
    if end % scheme.block:
        raise KeyBlockError("header", f"{end} characters is not a whole number of {scheme.block}-byte blocks", 0)
    header = KeyBlockHeader(
        version=block[0],
        key_usage=block[5:7],
        algorithm=block[7],
        mode_of_use=block[8],
        key_version=block[9:11],
        exportability=block[11],
        optional_blocks=optional_blocks,
        reserved=block[14:16],
    )
    return header, end


# ---- keys ----------------------------------------------------------------------------


def _check_kbpk(version: str, kbpk: bytes) -> _Scheme:
    scheme = _scheme(version)
    if len(kbpk) not in scheme.kbpk_lengths:
        sizes = ", ".join(str(n) for n in scheme.kbpk_lengths)
        raise KeyBlockError("KBPK", f"{len(kbpk)} bytes; version {version} takes {sizes}")
    return scheme


def _derived_keys(version: str, kbpk: bytes) -> tuple[bytes, bytes]:
    """(KBEK, KBAK) for the version's binding method.

    Derivation binding (B, D) runs CMAC under the KBPK over 8-byte derivation
    data: counter, usage (0000 encryption, 0001 MAC), separator 00, algorithm
    and key length in bits of the KBPK, as many counters as the key needs.
    """
    if version in ("A", "C"):
        return xor(kbpk, b"\x45" * len(kbpk)), xor(kbpk, b"\x4d" * len(kbpk))
    if version == "B":
        algorithm, cmac = (0x0000 if len(kbpk) == 16 else 0x0001), tdes_cmac
    else:
        algorithm, cmac = {16: 0x0002, 24: 0x0003, 32: 0x0004}[len(kbpk)], aes_cmac
    keys = []
    for usage in (0x0000, 0x0001):
        derived = b""
        counter = 1
        while len(derived) < len(kbpk):
            data = bytes([counter]) + usage.to_bytes(2, "big") + b"\x00"
            derived += cmac(kbpk, data + algorithm.to_bytes(2, "big") + (len(kbpk) * 8).to_bytes(2, "big"))
            counter += 1
        keys.append(derived[: len(kbpk)])
    return keys[0], keys[1]


def _pad_length(scheme: _Scheme, key_length: int, masked_key_length: int | None) -> int:
    shown = key_length if masked_key_length is None else masked_key_length
    if shown < key_length:
        raise KeyBlockError("masked key length", f"{shown} bytes is shorter than the key")
    return shown - key_length + (-(2 + shown) % scheme.block)


# ---- wrap / unwrap -------------------------------------------------------------------


def wrap(
    kbpk: bytes,
    key: bytes,
    header: KeyBlockHeader,
    *,
    rng: RandomSource | None = None,
    masked_key_length: int | None = None,
) -> str:
    """The key block carrying `key` under `kbpk`, bound to `header`.

    `rng` supplies the padding (default: the OS CSPRNG); `masked_key_length`
    pads as if the key had that many bytes, as X9.143 recommends so a block
    does not reveal whether it holds a double- or triple-length key.
    """
    scheme = _check_kbpk(header.version, kbpk)
    if not key or len(key) * 8 > 0xFFFF:
        raise KeyBlockError("key", f"{len(key)} bytes; a key block carries 1 to {0xFFFF // 8} bytes")
    pad = _pad_length(scheme, len(key), masked_key_length)
    padding = (rng if rng is not None else random.SystemRandom()).randbytes(pad)
    if len(padding) != pad:
        raise KeyBlockError("padding", f"random source gave {len(padding)} bytes, {pad} needed")
    payload = (len(key) * 8).to_bytes(2, "big") + key + padding
    text = _header_text(header, len(payload))
    kbek, kbak = _derived_keys(header.version, kbpk)
    if header.version in ("A", "C"):
        encrypted = tdes_cbc_encrypt(kbek, payload, text[:DES_BLOCK].encode("ascii"))
        mac = cbc_mac(kbak, text.encode("ascii") + encrypted)[: scheme.mac_length]
        return text + encrypted.hex().upper() + mac.hex().upper()
    if header.version == "B":
        mac = tdes_cmac(kbak, text.encode("ascii") + payload)
        encrypted = tdes_cbc_encrypt(kbek, payload, mac)
    else:
        mac = aes_cmac(kbak, text.encode("ascii") + payload)
        encrypted = aes_cbc_encrypt(kbek, payload, mac)
    return text + encrypted.hex().upper() + mac.hex().upper()


def _hex_part(block: str, start: int, end: int, part: str) -> bytes:
    for offset in range(start, end):
        if block[offset] not in _HEX:
            raise KeyBlockError(part, f"{block[offset]!r} is not a hex digit", offset)
    return bytes.fromhex(block[start:end])


def unwrap(kbpk: bytes, block: str) -> tuple[KeyBlockHeader, ClearKey]:
    """The header and clear key of `block`, after checking its syntax and MAC.

    Raises KeyBlockError naming the first problem: non-printable text, key
    block too short, unknown version, length field, header syntax, non-hex
    payload or MAC, wrong payload size, MAC that does not verify, or a key
    length field that does not fit the payload.
    """
    header, payload_start = read_header(block)
    scheme = _check_kbpk(header.version, kbpk)
    mac_start = len(block) - 2 * scheme.mac_length
    payload_hex_length = mac_start - payload_start
    if payload_hex_length <= 0:
        raise KeyBlockError("payload", "key block too short: no room for a key before the MAC", payload_start)
    if payload_hex_length % (2 * scheme.block):
        raise KeyBlockError(
            "payload",
            f"{payload_hex_length} hex digits is not a whole number of {scheme.block}-byte blocks",
            payload_start,
        )
    encrypted = _hex_part(block, payload_start, mac_start, "encrypted key")
    mac = _hex_part(block, mac_start, len(block), "MAC")
    text = block[:payload_start]
    kbek, kbak = _derived_keys(header.version, kbpk)
    if header.version in ("A", "C"):
        expected = cbc_mac(kbak, text.encode("ascii") + encrypted)[: scheme.mac_length]
        payload = tdes_cbc_decrypt(kbek, encrypted, text[:DES_BLOCK].encode("ascii"))
    elif header.version == "B":
        payload = tdes_cbc_decrypt(kbek, encrypted, mac)
        expected = tdes_cmac(kbak, text.encode("ascii") + payload)
    else:
        payload = aes_cbc_decrypt(kbek, encrypted, mac)
        expected = aes_cmac(kbak, text.encode("ascii") + payload)
    if not hmac.compare_digest(mac, expected):
        raise KeyBlockError("MAC", "does not verify: wrong KBPK, or the block was altered", mac_start)
    bits = int.from_bytes(payload[:2], "big")
    if bits == 0 or bits % 8 or 2 + bits // 8 > len(payload):
        raise KeyBlockError(
            "key length",
            f"{bits} bits does not fit a {len(payload)}-byte payload as whole bytes (bad key length or padding)",
            payload_start,
        )
    return header, ClearKey(payload[2 : 2 + bits // 8])
