"""CVV / CVV2 / iCVV against published known-answer vectors."""

from __future__ import annotations

import pytest

from possim.hsm_mock.cipher import CryptoKeyError
from possim.hsm_mock.cvv import (
    card_verification_value,
    cvv,
    cvv2,
    icvv,
    verify_cvv,
    verify_cvv2,
    verify_icvv,
)

# CVK A = 0123456789ABCDEF, CVK B = FEDCBA9876543210: the key pair of the published
# Visa CVV test data below.
CVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")

# Visa CVV test data ("测试数据": 13- and 16-digit PANs, expiry YYMM, service code, CVV),
# published in the CVV algorithm description at fsou.com/html/text/chl/848/84828_4.html.
PUBLISHED_CVV = [
    ("4123456789012", "8701", "101", "370"),
    ("4999988887777", "9105", "111", "649"),
    ("4666655554444", "9206", "120", "821"),
    ("4333322221111", "9307", "141", "697"),
    ("4123456789012345", "8701", "101", "561"),
    ("4999988887777000", "9105", "111", "245"),
    ("4666655554444111", "9206", "120", "664"),
    ("4333322221111222", "9307", "141", "382"),
]


@pytest.mark.parametrize(("pan", "expiry", "service_code", "value"), PUBLISHED_CVV)
def test_published_cvv_vectors(pan: str, expiry: str, service_code: str, value: str) -> None:
    assert cvv(CVK, pan, expiry, service_code) == value
    assert verify_cvv(CVK, pan, expiry, service_code, value)


def test_worked_cvn_example() -> None:
    # Step-by-step CVN example at topic.alibabacloud.com/a/algorithm-generation-7-cvn_8_8_31672247.html:
    # PAN 4123456789012345, expiry 8701, service code 111, same key pair -> 856.
    assert cvv(CVK, "4123456789012345", "8701", "111") == "856"


def test_psec_cvv_vector_with_parity_adjusted_key() -> None:
    # knovichikhin/psec tests/test_cvv.py: CVK 99999999999999998888888888888888,
    # PAN 2222222222222222, expiry 3333, service code 111 -> 361. Its bytes have even
    # parity, which we refuse; DES ignores the low bit of every byte, so the
    # odd-parity form 9898...8989... is the same key and must give the same value.
    published = bytes.fromhex("99999999999999998888888888888888")
    with pytest.raises(CryptoKeyError, match="cvk byte 1 of 16 has even parity"):
        card_verification_value(published, "2222222222222222", "3333", "111")
    same_key = bytes(b ^ 1 for b in published)
    assert card_verification_value(same_key, "2222222222222222", "3333", "111") == "361"


def test_cvv2_is_the_cvv_with_service_code_000() -> None:
    # CVV2 = CVV algorithm with service code 000 (Visa; also keylab.cloud/calculator/cvv2).
    # Expected values come from the published-vector-verified core with the inputs CVV2 defines.
    pan, yymm = "4123456789012345", "8701"
    assert cvv2(CVK, pan, yymm) == card_verification_value(CVK, pan, "8701", "000")
    assert cvv2(CVK, pan, yymm, "MMYY") == card_verification_value(CVK, pan, "0187", "000")
    assert cvv2(CVK, pan, yymm) != cvv2(CVK, pan, yymm, "MMYY")
    value = cvv2(CVK, pan, yymm)
    assert verify_cvv2(CVK, pan, yymm, value)
    assert not verify_cvv2(CVK, pan, yymm, f"{(int(value) + 1) % 1000:03d}")


def test_icvv_is_the_cvv_with_service_code_999() -> None:
    pan, yymm = "4999988887777000", "9105"
    value = icvv(CVK, pan, yymm)
    assert value == card_verification_value(CVK, pan, yymm, "999")
    assert value != cvv(CVK, pan, yymm, "111")
    assert verify_icvv(CVK, pan, yymm, value)
    assert not verify_icvv(CVK, pan, yymm, f"{(int(value) + 1) % 1000:03d}")


def test_wrong_cvv_or_changed_data_does_not_verify() -> None:
    # From the published 561 vector.
    assert not verify_cvv(CVK, "4123456789012345", "8701", "101", "562")
    assert not verify_cvv(CVK, "4123456789012345", "8702", "101", "561")
    assert not verify_cvv(CVK, "4123456789012345", "8701", "201", "561")


# --- bad input: every error names its parameter -------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (bytes.fromhex("0123456789ABCDEF"), "cvk is 8 bytes"),
        (bytes.fromhex("0123456789ABCDEF" * 3), "cvk is 24 bytes"),
        (bytes.fromhex("0123456789ABCDEFFEDCBA9876543211"), "cvk byte 16 of 16 has even parity"),
    ],
)
def test_bad_cvk(key: bytes, message: str) -> None:
    with pytest.raises(CryptoKeyError, match=message):
        cvv(key, "4123456789012345", "8701", "101")


@pytest.mark.parametrize(
    ("pan", "expiry", "service_code", "message"),
    [
        ("41234567890", "8701", "101", "pan must be 12 to 19"),
        ("41234567890123456789", "8701", "101", "pan must be 12 to 19"),
        ("412345678901234X", "8701", "101", "pan must be"),
        ("4123456789012345", "870", "101", "expiry_yymm must be 4 decimal digits"),
        ("4123456789012345", "87011", "101", "expiry_yymm must be 4"),
        ("4123456789012345", "87A1", "101", "expiry_yymm must be 4"),
        ("4123456789012345", "0187", "101", "expiry_yymm must be YYMM with month 01-12"),
        ("4123456789012345", "8700", "101", "expiry_yymm must be YYMM"),
        ("4123456789012345", "8701", "10", "service_code must be 3 decimal digits"),
        ("4123456789012345", "8701", "1011", "service_code must be 3"),
        ("4123456789012345", "8701", "1A1", "service_code must be 3"),
    ],
)
def test_bad_cvv_input(pan: str, expiry: str, service_code: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cvv(CVK, pan, expiry, service_code)


def test_bad_cvv2_and_candidate_input() -> None:
    with pytest.raises(ValueError, match="expiry_order must be YYMM or MMYY"):
        cvv2(CVK, "4123456789012345", "8701", "YYYYMM")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="candidate must be 3 decimal digits"):
        verify_cvv(CVK, "4123456789012345", "8701", "101", "56")
    with pytest.raises(ValueError, match="expiry must be 4 decimal digits"):
        card_verification_value(CVK, "4123456789012345", "870", "101")
