"""Key check values.

TDES: the classic 0123456789ABCDEF FEDCBA9876543210 encrypts the zero block to
08D7B4FB629D0885 (published in many public test suites, e.g. "TripleDesEncrypt" and
"test_tdea_2_ede" assertions found by code search, and shown as the key's check value in
the QPOS SDK demo's setMasterKey call), so its KCV is 08D7B4.

AES: the method (CMAC of one zero block, leftmost bytes, at most 40 bits) is stated by
PCI PIN requirement 15-1 / ANSI X9.24-1:2017 as quoted on Wikipedia "Key checksum value";
AWS Payment Cryptography docs describe the same CMAC over 16 zero bytes but show 3 bytes.
No published AES KCV for a known clear key was found, so the value is derived
independently from the NIST SP 800-38B published subkey K1 (see that test).
"""

from __future__ import annotations

import pytest

from possim.hsm_mock import kcv
from possim.hsm_mock.cipher import CryptoKeyError, aes_ecb_encrypt
from possim.hsm_mock.kcv import KcvError

H = bytes.fromhex
CLASSIC = H("0123456789ABCDEFFEDCBA9876543210")


def test_tdes_kcv_classic_published():
    assert kcv.tdes_kcv(CLASSIC) == H("08D7B4")
    assert kcv.tdes_kcv(CLASSIC, 4) == H("08D7B4FB")  # the 4-byte form the cup sign-on download carries
    assert kcv.tdes_kcv(CLASSIC, 8) == H("08D7B4FB629D0885")


def test_tdes_kcv_triple_length_k1k2k1_equals_double():
    assert kcv.tdes_kcv(CLASSIC + CLASSIC[:8]) == H("08D7B4")


def test_aes_kcv_by_independent_derivation():
    """For the one-block message 0^128, CMAC = AES_K(0^128 xor K1) = AES_K(K1); K1 for the
    NIST SP 800-38B D.1 key is published (fbeed618...), so the KCV is AES_K(K1)[:5]."""
    key = H("2b7e151628aed2a6abf7158809cf4f3c")
    published_k1 = H("fbeed618357133667c85e08f7236a8de")
    expected = aes_ecb_encrypt(key, published_k1)[:5]
    assert kcv.aes_kcv(key) == expected
    assert kcv.aes_kcv(key, 3) == expected[:3]


def test_aes_kcv_is_not_the_ecb_method():
    key = H("2b7e151628aed2a6abf7158809cf4f3c")
    assert kcv.aes_kcv(key) != aes_ecb_encrypt(key, bytes(16))[:5]


@pytest.mark.parametrize("length", [0, 9])
def test_tdes_kcv_length_is_named(length):
    with pytest.raises(KcvError, match=f"^length: {length} bytes"):
        kcv.tdes_kcv(CLASSIC, length)


@pytest.mark.parametrize("length", [0, 6])
def test_aes_kcv_length_is_named(length):
    with pytest.raises(KcvError, match=f"^length: {length} bytes"):
        kcv.aes_kcv(bytes(16), length)


def test_wrong_key_lengths_are_named():
    with pytest.raises(CryptoKeyError, match="^key is 12 bytes"):
        kcv.tdes_kcv(bytes(12))
    with pytest.raises(CryptoKeyError, match="^key is 20 bytes"):
        kcv.aes_kcv(bytes(20))
