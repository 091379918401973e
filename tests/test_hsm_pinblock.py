"""ISO 9564 PIN blocks against published vectors, plus round trips and refusals.

Vector sources (values only, no code taken):
- BP-Tools output published on the ID TECH knowledge base (ISO-0 example).
- knovichikhin/psec tests/test_pinblock.py (formats 0, 2, 3, 4; the format 4
  decipher vector there is from the ep2 eft/pos 2000 Security Specification 8.0.0, 8.4).
- ANSI X9.24-3:2017 supplement, format 4 PIN/PAN fields, as quoted in
  Leon Lynch's pinblock_format4_test.c.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from possim.hsm_mock import pinblock
from possim.hsm_mock.pinblock import PinBlockError

H = bytes.fromhex
PSEC_PAN = "5555555551234567"


class AllOnes:
    """A random source that always answers all ones: the 0xFF fill the psec/paysec vectors use."""

    def getrandbits(self, k: int) -> int:
        return (1 << k) - 1


# ---- format 0 --------------------------------------------------------------------


@pytest.mark.parametrize(
    "pin, pan, block",
    [
        # BP-Tools ISO-0 example, ID TECH knowledge base ("PIN blocks: PIN block encrypt operation")
        ("1234", "43219876543210987", "0412AC89ABCDEF67"),
        # psec tests/test_pinblock.py, test_encode_pinblock_iso_0
        ("1234", PSEC_PAN, "041261AAAAEDCBA9"),
        ("123456789012", PSEC_PAN, "0C1261032D8226A9"),
    ],
)
def test_format_0_encode_published(pin, pan, block):
    assert pinblock.encode(0, pin, pan).hex().upper() == block


@pytest.mark.parametrize(
    "block, pin",
    [
        # psec tests/test_pinblock.py, test_decode_pinblock_iso_0
        ("041261AAAAEDCBA9", "1234"),
        ("091261032D8DCBA9", "123456789"),
        ("0A1261032D82CBA9", "1234567890"),
        ("0C1261032D8226A9", "123456789012"),
    ],
)
def test_format_0_decode_published(block, pin):
    assert pinblock.decode(H(block), PSEC_PAN) == pin
    assert pinblock.decode(H(block), PSEC_PAN, fmt=0) == pin


def test_format_0_decode_bp_tools_example():
    # BP-Tools ISO-0 decode example, ID TECH knowledge base
    assert pinblock.decode(H("0412AC89ABCDEF67"), "43219876543210987") == "1234"


# ---- format 1 --------------------------------------------------------------------


def test_format_1_layout_and_replay():
    """No published format 1 vector was found: the block is checked field by field
    (control 1, length, PIN, 16 - 2 - len fill nibbles) and replays from a seed."""
    block = pinblock.encode(1, "98765", rng=random.Random(7))
    text = block.hex().upper()
    assert text[:7] == "1598765"
    assert len(block) == 8
    assert block == pinblock.encode(1, "98765", rng=random.Random(7))
    assert pinblock.decode(block, fmt=1) == "98765"


# ---- format 2 --------------------------------------------------------------------


@pytest.mark.parametrize(
    "pin, block",
    [
        # psec tests/test_pinblock.py, test_encode_pinblock_iso_2 / test_decode_pinblock_iso_2
        ("1234", "241234FFFFFFFFFF"),
        ("123456789", "29123456789FFFFF"),
        ("1234567890", "2A1234567890FFFF"),
        ("123456789012", "2C123456789012FF"),
    ],
)
def test_format_2_published(pin, block):
    assert pinblock.encode(2, pin).hex().upper() == block
    assert pinblock.decode(H(block), fmt=2) == pin


# ---- format 3 --------------------------------------------------------------------


@pytest.mark.parametrize(
    "block, pin",
    [
        # psec tests/test_pinblock.py, test_decode_pinblock_iso_3
        ("341261AAAAEDCBA9", "1234"),
        ("391261032D8DCBA9", "123456789"),
        ("3A1261032D82CBA9", "1234567890"),
        ("3C1261032D8226A9", "123456789012"),
    ],
)
def test_format_3_decode_published(block, pin):
    assert pinblock.decode(H(block), PSEC_PAN, fmt=3) == pin


@pytest.mark.parametrize(
    "pin, prefix",
    # psec tests/test_pinblock.py, test_encode_pinblock_iso_3 (random fill, so only the PIN part is fixed)
    [("1234", "341261"), ("123456789012", "3C1261032D8226")],
)
def test_format_3_encode_published_prefix_and_random_fill(pin, prefix):
    block = pinblock.encode(3, pin, PSEC_PAN, rng=random.Random(3))
    assert block.hex().upper().startswith(prefix)
    clear = bytes(a ^ b for a, b in zip(block, pinblock.pan_field(PSEC_PAN))).hex().upper()
    assert set(clear[2 + len(pin) :]) <= set("ABCDEF")
    assert block == pinblock.encode(3, pin, PSEC_PAN, rng=random.Random(3))
    assert block != pinblock.encode(3, pin, PSEC_PAN, rng=random.Random(4))


# ---- TDES encipherment of formats 0-3 ----------------------------------------------


def test_encipher_is_tdes_ecb_of_the_clear_block():
    """Independent derivation: the enciphered block decrypts, under the same key, to the
    published clear block of the BP-Tools example."""
    from possim.hsm_mock.cipher import tdes_ecb_decrypt

    key = H("0123456789ABCDEFFEDCBA9876543210")
    enciphered = pinblock.encipher(key, 0, "1234", "43219876543210987")
    assert enciphered != H("0412AC89ABCDEF67")
    assert tdes_ecb_decrypt(key, enciphered) == H("0412AC89ABCDEF67")
    assert pinblock.decipher(key, enciphered, "43219876543210987", fmt=0) == "1234"


# ---- format 4 --------------------------------------------------------------------


def test_format_4_fields_published():
    # ANSI X9.24-3:2017 supplement (AES PIN block format 4 example), via pinblock_format4_test.c
    assert pinblock.pin_field_4("1234", AllOnes())[:8] == H("441234AAAAAAAAAA")
    assert pinblock.pan_field_4("4111111111111111") == H("44111111111111111000000000000000")
    # pinblock_format4_test.c hand-made short PAN example
    assert pinblock.pan_field_4("123456789") == H("00001234567890000000000000000000")
    # psec tests/test_pinblock.py, test_encode_pan_field_iso_4
    assert pinblock.pan_field_4("112233445566778899") == H("61122334455667788990000000000000")


def test_format_4_encipher_published():
    # psec test_encipher_pinblock_iso_4_det (random bytes all 0xFF); same vector in the paysec crate docs
    key = H("00112233445566778899AABBCCDDEEFF")
    block = pinblock.encipher_4(key, "1234", "1234567890123456789", AllOnes())
    assert block == H("28B41FDDD29B743E93124BD8E32D921E")


@pytest.mark.parametrize(
    "key, block, pan, pin",
    [
        # ep2 eft/pos 2000 Security Specification 8.0.0, 8.4, as quoted in psec tests
        ("C1D0F8FB4958670DBA40AB1F3752EF0D", "CC17F65586BFD0953010226C4FC5B3CA", "432198765432109870", "1234"),
        # psec tests/test_pinblock.py, PAN shorter than 12 digits
        ("00112233445566778899AABBCCDDEEFF", "39B69B1B91FE05D48F7EF0D68EB2CBD6", "1", "123456"),
    ],
)
def test_format_4_decipher_published(key, block, pan, pin):
    assert pinblock.decipher_4(H(key), H(block), pan) == pin


def test_format_4_decipher_refuses_a_block_that_is_not_format_4():
    # psec test_decipher_pinblock_iso_4_exception: this block deciphers to control field 3
    with pytest.raises(PinBlockError, match="expected format 4") as caught:
        pinblock.decipher_4(
            H("E60B15B90ABDF14CEE337C97440F0D6E"), H("7D5AF4C33667A2098626027FB7A9A1B7"), "4266229809609384667"
        )
    assert caught.value.args[0].startswith("block:")


# ---- refusals ----------------------------------------------------------------------


@pytest.mark.parametrize("pin", ["123", "1234567890123", "12a4", "１２３４", ""])
def test_bad_pin_is_named(pin):
    with pytest.raises(PinBlockError, match="^pin:"):
        pinblock.encode(0, pin, PSEC_PAN)
    with pytest.raises(PinBlockError, match="^pin:"):
        pinblock.pin_field_4(pin, AllOnes())


@pytest.mark.parametrize("pan", ["555555555123", "", "5555555551234A", "1" * 20])
def test_bad_pan_is_named(pan):
    with pytest.raises(PinBlockError, match="^pan:"):
        pinblock.encode(0, "1234", pan)
    with pytest.raises(PinBlockError, match="^pan:"):
        pinblock.encode(3, "1234", pan, rng=random.Random(1))


def test_short_pan_says_too_short():
    with pytest.raises(PinBlockError, match="pan: 12 digits is too short"):
        pinblock.encode(0, "1234", "555555555123")
    with pytest.raises(PinBlockError, match="pan: 0 digits is too short"):
        pinblock.encipher_4(bytes(16), "1234", "", AllOnes())


def test_unknown_format_is_named():
    with pytest.raises(PinBlockError, match="^fmt: format 4"):
        pinblock.encode(4, "1234", PSEC_PAN)


def test_decode_refuses_bad_format_nibble():
    with pytest.raises(PinBlockError, match="format nibble 5"):
        pinblock.decode(H("541261AAAAEDCBA9"), PSEC_PAN)


def test_decode_refuses_mismatched_format():
    # psec's format 2 block read as format 0 / format 0 block read as format 3
    with pytest.raises(PinBlockError, match="says format 2, expected format 0"):
        pinblock.decode(H("241234FFFFFFFFFF"), PSEC_PAN, fmt=0)
    with pytest.raises(PinBlockError, match="says format 0, expected format 3"):
        pinblock.decode(H("041261AAAAEDCBA9"), PSEC_PAN, fmt=3)


@pytest.mark.parametrize(
    "block, message",
    [
        # psec test_decode_pinblock_iso_0_exception / _iso_2_ / _iso_3_ blocks
        ("041261AAAAEDCBAA", "fill must be all F"),
        ("0F1261AAAAEDCBA9", "length nibble 15"),
        ("051261AAAAEDCBA9", "non-decimal"),
        ("341261AAAAEDCBA2", "fill must be A-F"),
        ("2C123456789012CF", "fill must be all F"),
        ("041261AAAAEDCB", "7 bytes"),
    ],
)
def test_decode_refuses_malformed_blocks(block, message):
    with pytest.raises(PinBlockError, match=message):
        pinblock.decode(H(block), PSEC_PAN)


def test_errors_never_echo_pin_or_pan():
    for call in (
        lambda: pinblock.encode(0, "98765432109876", PSEC_PAN),
        lambda: pinblock.encode(0, "9876", "987654321098"),
        lambda: pinblock.decode(H("051261AAAAEDCBA9"), PSEC_PAN),
    ):
        with pytest.raises(PinBlockError) as caught:
            call()
        text = str(caught.value)
        assert "9876" not in text and "5555" not in text and "1261" not in text


# ---- round trips -------------------------------------------------------------------

pins = st.text("0123456789", min_size=4, max_size=12)
pans = st.text("0123456789", min_size=13, max_size=19)
keys = st.sampled_from([H("0123456789ABCDEFFEDCBA9876543210"), H("C1D0F8FB4958670DBA40AB1F3752EF0D")])


@given(fmt=st.sampled_from([0, 1, 2, 3]), pin=pins, pan=pans, seed=st.integers(0, 2**32), key=keys)
def test_round_trip_formats_0_to_3(fmt, pin, pan, seed, key):
    block = pinblock.encode(fmt, pin, pan, random.Random(seed))
    assert pinblock.decode(block, pan, fmt) == pin
    enciphered = pinblock.encipher(key, fmt, pin, pan, random.Random(seed))
    assert pinblock.decipher(key, enciphered, pan, fmt) == pin


@given(pin=pins, pan=st.text("0123456789", min_size=1, max_size=19), seed=st.integers(0, 2**32))
def test_round_trip_format_4(pin, pan, seed):
    key = H("00112233445566778899AABBCCDDEEFF")
    block = pinblock.encipher_4(key, pin, pan, random.Random(seed))
    assert len(block) == 16
    assert pinblock.decipher_4(key, block, pan) == pin
