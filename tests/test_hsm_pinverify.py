"""IBM 3624 PIN offsets and Visa PVVs against published known-answer vectors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from possim.hsm_mock.cipher import CryptoKeyError
from possim.hsm_mock.pinverify import (
    decimalize,
    ibm3624_natural_pin,
    ibm3624_offset,
    ibm3624_pin_from_offset,
    ibm3624_verify,
    pan_validation_data,
    visa_decimalize,
    visa_pvv,
    visa_pvv_verify,
)

# Double-length PVK used by every vector in knovichikhin/psec tests/test_pin.py.
PSEC_PVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PSEC_TABLE = "1234567890123456"
PSEC_PAN = "1122334455667788"


def test_decimalize_ibm_cca_example() -> None:
    # IBM 4758 CCA Basic Services Release 2.54, Appendix E "IBM 3624 PIN-Calculation
    # Method" example: encrypted validation data E5C1BD67B66AE7C6 with decimalization
    # table 8351296477461538 gives newpin 3913656466643416 (6-digit A-PIN 391365).
    assert decimalize("E5C1BD67B66AE7C6", "8351296477461538") == "3913656466643416"


def test_natural_pin_and_customer_pin_single_length_pvk() -> None:
    # "IBM 3624 Customer PIN, natural PIN, PIN offset" example 1, published at
    # topic.alibabacloud.com (a/ibm-3624-customer-...-pin-offset-related-content_8_8_31433408)
    # and mamicode.com/info-detail-865237.html: account 1234567890123456,
    # PVK 1313131313131313, table 0123456789012345, k=6 -> natural PIN 643085;
    # offset 456789 -> customer PIN 099764; offset 000000 -> 643085.
    pvk = bytes.fromhex("1313131313131313")
    assert ibm3624_natural_pin(pvk, "1234567890123456", 6) == "643085"
    assert ibm3624_pin_from_offset(pvk, "1234567890123456", "456789") == "099764"
    assert ibm3624_pin_from_offset(pvk, "1234567890123456", "000000") == "643085"
    assert ibm3624_offset(pvk, "1234567890123456", "099764") == "456789"


def test_offset_for_customer_pin() -> None:
    # Same published page, example 2: card 1234567890123445, PIN key 0123456789ABCDEF,
    # natural PIN 9046, offset 2298, customer PIN 1234.
    pvk = bytes.fromhex("0123456789ABCDEF")
    assert ibm3624_natural_pin(pvk, "1234567890123445", 4) == "9046"
    assert ibm3624_offset(pvk, "1234567890123445", "1234") == "2298"
    assert ibm3624_verify(pvk, "1234567890123445", "1234", "2298")
    assert not ibm3624_verify(pvk, "1234567890123445", "1235", "2298")
    assert not ibm3624_verify(pvk, "1234567890123445", "1234", "2299")


# knovichikhin/psec tests/test_pin.py, test_generate_ibm3624_pin / _offset:
# (offset, PAN start, PAN length, pad, customer PIN) under PSEC_PVK and table 1234567890123456.
PSEC_IBM3624 = [
    ("0000", 0, 16, "F", "4524"),
    ("0000", 0, 16, "f", "4524"),
    ("1111", 0, 16, "F", "5635"),
    ("6586", 0, 16, "F", "0000"),
    ("7697", 0, 16, "F", "1111"),
    ("7710", 0, 16, "F", "1234"),
    ("0000", 0, 14, "F", "5518"),
    ("0000", 1, 14, "1", "3675"),
    ("0000", 2, 14, "1", "5550"),
]


@pytest.mark.parametrize(("offset", "start", "length", "pad", "pin"), PSEC_IBM3624)
def test_ibm3624_psec_vectors(offset: str, start: int, length: int, pad: str, pin: str) -> None:
    data = pan_validation_data(PSEC_PAN, start, length)
    assert ibm3624_pin_from_offset(PSEC_PVK, data, offset, decimalization_table=PSEC_TABLE, pad=pad) == pin
    assert ibm3624_offset(PSEC_PVK, data, pin, decimalization_table=PSEC_TABLE, pad=pad) == offset
    assert ibm3624_verify(PSEC_PVK, data, pin, offset, decimalization_table=PSEC_TABLE, pad=pad)


def test_ibm3624_pin_length_mismatch_does_not_verify() -> None:
    # From the psec vector PIN 1234 / offset 7710: a longer PIN is not the same PIN.
    data = pan_validation_data(PSEC_PAN)
    assert not ibm3624_verify(PSEC_PVK, data, "12345", "7710", decimalization_table=PSEC_TABLE)


# knovichikhin/psec tests/test_pin.py, test_generate_visa_pvv: (PVKI, PIN, PAN, PVV) under PSEC_PVK.
PSEC_PVV = [
    ("1", "4524", "1122334455667788", "8523"),
    ("2", "1912", "1122334455667788", "3244"),
    ("1", "0570", "1122334455667718", "3144"),
    ("1", "8299", "1122334455667708", "4422"),
]


@pytest.mark.parametrize(("pvki", "pin", "pan", "pvv"), PSEC_PVV)
def test_visa_pvv_psec_vectors(pvki: str, pin: str, pan: str, pvv: str) -> None:
    assert visa_pvv(PSEC_PVK, pan, pvki, pin) == pvv
    assert visa_pvv_verify(PSEC_PVK, pan, pvki, pin, pvv)


def test_visa_pvv_rejects_wrong_pin_and_wrong_pvki() -> None:
    # Built on the first psec vector (PVKI 1, PIN 4524 -> PVV 8523).
    assert not visa_pvv_verify(PSEC_PVK, PSEC_PAN, "1", "4525", "8523")
    assert not visa_pvv_verify(PSEC_PVK, PSEC_PAN, "2", "4524", "8523")


def test_visa_pvv_uses_only_four_leftmost_pin_digits() -> None:
    # The TSP holds 4 PIN digits, so a 6-digit PIN starting 4524 gives the psec PVV 8523.
    assert visa_pvv(PSEC_PVK, PSEC_PAN, "1", "452499") == "8523"


def test_visa_decimalize_takes_digits_then_letters() -> None:
    # Worked CVV example at topic.alibabacloud.com (algorithm-generation-7-cvn_8_8_31672247):
    # 8D5625FA78011A0C -> digits 85625780110, letters DFAAC -> 35002; first three 856.
    assert visa_decimalize("8D5625FA78011A0C", 16) == "8562578011035002"
    assert visa_decimalize("8D5625FA78011A0C", 3) == "856"


# --- bad input: every error names its parameter -------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (bytes(4), "pvk is 4 bytes"),
        (bytes.fromhex("0123456789ABCDEF" * 3), "pvk is 24 bytes"),
        (bytes.fromhex("0023456789ABCDEF"), "pvk byte 1 of 8 has even parity"),
    ],
)
def test_bad_pvk(key: bytes, message: str) -> None:
    with pytest.raises(CryptoKeyError, match=message):
        visa_pvv(key, PSEC_PAN, "1", "1234")
    with pytest.raises(CryptoKeyError, match=message):
        ibm3624_offset(key, PSEC_PAN, "1234")


@pytest.mark.parametrize(
    ("pan", "pvki", "pin", "message"),
    [
        ("11223344556", "1", "1234", "pan must be 12 to 19"),
        ("112233445566778899001", "1", "1234", "pan must be 12 to 19"),
        ("112233445566778A", "1", "1234", "pan must be"),
        (PSEC_PAN, "A", "1234", "pvki must be"),
        (PSEC_PAN, "12", "1234", "pvki must be"),
        (PSEC_PAN, "1", "123", "pin must be 4 to 12"),
        (PSEC_PAN, "1", "12a4", "pin must be"),
    ],
)
def test_bad_pvv_input(pan: str, pvki: str, pin: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        visa_pvv(PSEC_PVK, pan, pvki, pin)


def test_bad_input_errors_do_not_echo_the_pin() -> None:
    with pytest.raises(ValueError) as caught:
        visa_pvv(PSEC_PVK, PSEC_PAN, "1", "98765432109876")
    assert "98765432109876" not in str(caught.value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ibm3624_offset(PSEC_PVK, PSEC_PAN, "12x4"), "pin must be"),
        (lambda: ibm3624_pin_from_offset(PSEC_PVK, PSEC_PAN, "771"), "offset must be 4 to 16"),
        (lambda: ibm3624_natural_pin(PSEC_PVK, PSEC_PAN, 3), "pin_length must be 4 to 16"),
        (lambda: ibm3624_natural_pin(PSEC_PVK, "123", 4), "validation_data must be 4 to 16 hex"),
        (lambda: ibm3624_natural_pin(PSEC_PVK, "12345678901234567", 4), "validation_data must be"),
        (lambda: ibm3624_natural_pin(PSEC_PVK, "1234G", 4), "validation_data must be"),
        (lambda: ibm3624_natural_pin(PSEC_PVK, "1234", 4, pad="FF"), "pad must be one hex digit"),
        (lambda: ibm3624_natural_pin(PSEC_PVK, "1234", 4, pad="X"), "pad must be one hex digit"),
        (
            lambda: ibm3624_natural_pin(PSEC_PVK, PSEC_PAN, 4, decimalization_table="123"),
            "decimalization_table",
        ),
        (lambda: decimalize("AB", "123456789012345A"), "decimalization_table must be 16 decimal"),
        (lambda: pan_validation_data(PSEC_PAN, 1, 16), "outside a 16-digit pan"),
        (lambda: pan_validation_data("11223344556", 0, 4), "pan must be 12 to 19"),
    ],
)
def test_bad_ibm3624_input(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
