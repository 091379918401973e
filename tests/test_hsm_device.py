"""The payShield-style HSM device: the variant LMK and every host command, I/O free.

Sources of the published values used here:
- [ThalesSim] the open-source Thales HSM simulator's host command tests
  (ThalesSim HostCommandTests, github.com/nickntg/thalessimulatorlibrary and its
  VB.NET predecessor): request fields and replies under the payShield test LMK,
  quoted below as request body -> error code + reply fields.
- [LMK-tool] the variant-LMK vector in the cryptocarver project
  (ThalesLmkExternalVectorTest), captured from an external Thales key tool:
  key 0123456789ABCDEFFEDCBA9876543210 under LMK pair 00-01, variant 1, scheme U.
- [Visa CVV] the Visa CVV test data already used by tests/test_hsm_cvv.py.
Everything else is cross-checked against this project's own primitives on keys
decrypted independently (cipher.py under the published LMK values).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from possim.hsm_mock import pinblock
from possim.hsm_mock.cipher import tdes_ecb_encrypt
from possim.hsm_mock.cvv import cvv
from possim.hsm_mock.device import Hsm
from possim.hsm_mock.kcv import tdes_kcv
from possim.hsm_mock.lmk import (
    TAK,
    TEST_LMK_PAIRS,
    ZMK,
    ZPK,
    LmkError,
    VariantLmk,
    key_type,
    unwrap,
    wrap,
)
from possim.hsm_mock.mac import cbc_mac, retail_mac, x9_9_mac

HEADER = "0001"


class FixedBits:
    """A random source replaying given 64-bit values, so A0 can be checked against a published reply."""

    def __init__(self, *values: int):
        self.values = list(values)

    def getrandbits(self, k: int) -> int:
        return self.values.pop(0) & ((1 << k) - 1)


def send(hsm: Hsm, body: str) -> str:
    """Send header + body, check the header echo, return response code + error code + fields."""
    reply = hsm.handle((HEADER + body).encode("latin-1")).decode("latin-1")
    assert reply.startswith(HEADER)
    return reply[len(HEADER) :]


@pytest.fixture
def hsm() -> Hsm:
    return Hsm(VariantLmk.test())


# ---- the LMK -------------------------------------------------------------------


def test_default_lmk_is_the_published_test_lmk() -> None:
    lmk = VariantLmk.test()
    assert lmk.pair(0) == bytes.fromhex("01010101010101017902CD1FD36EF8BA")  # LMK 00-01
    assert lmk.pair(2) == bytes.fromhex("40404040404040405151515151515151")  # LMK 04-05
    assert lmk.pair(19) == bytes.fromhex("01010101010101010101010101010101")  # LMK 38-39
    assert len(TEST_LMK_PAIRS) == 20


def test_variant_and_scheme_masks_match_the_published_lmk_tool_vector() -> None:
    # [LMK-tool]: variant 1 (A6 on the pair's first byte), scheme U (A6 then 5A on byte 8).
    pair = VariantLmk.test().pair(0)
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    assert wrap(pair, key, "U", 1).hex().upper() == "A12049CC30D20BE0DC6E5E2A98FADE9E"
    assert wrap(pair, key, "U", 2).hex().upper() == "BD7F64B9F9875B731BAED72101DEA65B"
    assert unwrap(pair, bytes.fromhex("A12049CC30D20BE0DC6E5E2A98FADE9E"), "U", 1) == key


def test_key_type_table() -> None:
    assert (key_type("000").pair_name, key_type("000").variant) == ("04-05", 0)  # ZMK
    assert key_type("001").pair_name == "06-07"  # ZPK
    assert key_type("002").pair_name == "14-15"  # TMK/TPK/PVK
    assert key_type("003").pair_name == "16-17"  # TAK
    assert key_type("008").pair_name == "26-27"  # ZAK
    assert key_type("009").pair_name == "28-29"  # BDK
    assert (key_type("402").pair_name, key_type("402").variant) == ("14-15", 4)  # CVK
    with pytest.raises(LmkError, match="key type"):
        key_type("0F1")


def test_x_scheme_is_plain_ecb_under_the_variant_pair() -> None:
    lmk = VariantLmk.test()
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    pair = bytearray(lmk.pair(7))
    pair[0] ^= 0xDE  # key type variant 4 (CVK 402)
    assert lmk.encrypt(key, key_type("402"), "X") == tdes_ecb_encrypt(bytes(pair), key)


def test_lmk_loads_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "lmk.txt"
    path.write_text("; my LMK\n\n" + "\n".join(TEST_LMK_PAIRS) + "\n", encoding="utf-8")
    loaded = VariantLmk.load(path)
    assert [loaded.pair(i) for i in range(20)] == [VariantLmk.test().pair(i) for i in range(20)]


def test_lmk_file_errors_name_the_line_or_pair(tmp_path: Path) -> None:
    path = tmp_path / "lmk.txt"
    path.write_text("\n".join(TEST_LMK_PAIRS[:3]) + "\nnot hex\n", encoding="utf-8")
    with pytest.raises(LmkError, match="line 4"):
        VariantLmk.load(path)
    path.write_text("\n".join(TEST_LMK_PAIRS[:19]) + "\n", encoding="utf-8")
    with pytest.raises(LmkError, match="19 pairs"):
        VariantLmk.load(path)
    even = ["00" + TEST_LMK_PAIRS[5][2:]] + list(TEST_LMK_PAIRS[1:])
    path.write_text("\n".join(even), encoding="utf-8")
    with pytest.raises(LmkError, match="pair 00-01.*parity"):
        VariantLmk.load(path)


def test_a_users_lmk_changes_every_cryptogram(tmp_path: Path) -> None:
    pairs = list(TEST_LMK_PAIRS)
    pairs[3] = "13131313131313131515151515151515"  # a different ZPK pair (06-07)
    path = tmp_path / "lmk.txt"
    path.write_text("\n".join(pairs), encoding="utf-8")
    own = Hsm(VariantLmk.load(path))
    # The ZPK of the [ThalesSim] BU vector no longer decrypts to the same key under this LMK.
    assert send(own, "BU011U1EF828AA8F6B80EB83E19FBC373F3A85") != "BV006F1E3F74F826B7EB"


# ---- NC ------------------------------------------------------------------------


def test_nc_reports_the_lmk_check_value_and_firmware(hsm: Hsm) -> None:
    reply = send(hsm, "NC")
    check = tdes_ecb_encrypt(bytes.fromhex(TEST_LMK_PAIRS[0]), bytes(8)).hex().upper()
    assert reply[:4] == "ND00"
    assert reply[4:20] == check == "7D22274C5745C5A1"
    firmware = reply[20:]
    assert len(firmware) == 9 and firmware[4] == "-"


# ---- BU ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "kcv"),
    [
        # [ThalesSim] TestGenerateCheckValueBU
        ("0200406FBB23A5214DF", "0035BBE340A4B763"),  # TMK, single length
        ("000ACE9B8A0BE50C09B", "4BD5E2482582C2C4"),  # ZMK, single length
        ("001U93CB819F8FEE4F78BF9C4CDD84750DB1", "B70AD25C94548822"),  # ZMK, scheme U
        ("011U1EF828AA8F6B80EB83E19FBC373F3A85", "6F1E3F74F826B7EB"),  # ZPK, scheme U
    ],
)
def test_bu_published_check_values(hsm: Hsm, request_fields: str, kcv: str) -> None:
    assert send(hsm, "BU" + request_fields) == "BV00" + kcv


def test_bu_with_a_three_digit_key_type(hsm: Hsm) -> None:
    # The [ThalesSim] CVK (KCV 08D7B4 published with AW/AU) addressed as key type 402.
    reply = send(hsm, "BUFF1U9B4934384B19946B040CD702B4D58145;402")
    assert reply == "BV00" + tdes_kcv(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), 8).hex().upper()
    assert reply[4:10] == "08D7B4"


def test_bu_triple_length_keys_tagged_and_bare(hsm: Hsm) -> None:
    clear = bytes.fromhex("0123456789ABCDEFFEDCBA987654321089ABCDEF01234567")
    lmk = VariantLmk.test()
    kcv = tdes_kcv(clear, 8).hex().upper()
    assert send(hsm, "BU032T" + lmk.encrypt(clear, TAK, "T").hex().upper()) == "BV00" + kcv
    assert send(hsm, "BU032" + lmk.encrypt(clear, TAK, "Y").hex().upper()) == "BV00" + kcv


def test_bu_refuses_a_key_with_bad_parity(hsm: Hsm) -> None:
    cryptogram = tdes_ecb_encrypt(bytes.fromhex(TEST_LMK_PAIRS[7]), bytes.fromhex("0123456789ABCDEE"))
    assert send(hsm, "BU020" + cryptogram.hex().upper()) == "BV10"


def test_bu_key_length_flag_must_match_the_key(hsm: Hsm) -> None:
    assert send(hsm, "BU000U93CB819F8FEE4F78BF9C4CDD84750DB1") == "BV15"


# ---- A0 ------------------------------------------------------------------------


def test_a0_reproduces_the_published_reply_for_the_same_random_key() -> None:
    # [ThalesSim] GenerateKeyTest: its deterministic generator produced the ZPK
    # CDCD...CD; given the same bits this HSM must give the same reply.
    hsm = Hsm(VariantLmk.test(), FixedBits(0xCDCDCDCDCDCDCDCD, 0xCDCDCDCDCDCDCDCD))
    assert send(hsm, "A00001U") == "A100U37C214786596A294ED92DBA27208C13B18EC38"
    hsm = Hsm(VariantLmk.test(), FixedBits(0xCDCDCDCDCDCDCDCD, 0xCDCDCDCDCDCDCDCD))
    assert (
        send(hsm, "A01001UU4C94ED3CBF0597C848000A85A55C2E54X")
        == "A100U37C214786596A294ED92DBA27208C13BX6A4BF2BD845FCBD66A4BF2BD845FCBD618EC38"
    )


def test_a0_key_under_zmk_unwraps_to_the_key_under_lmk(hsm: Hsm) -> None:
    zmk_field = "U4C94ED3CBF0597C848000A85A55C2E54"
    reply = send(hsm, "A01001U;0" + zmk_field + "U")
    assert reply[:4] == "A100"
    under_lmk, under_zmk, kcv = reply[4:37], reply[37:70], reply[70:]
    lmk = VariantLmk.test()
    clear = lmk.decrypt(bytes.fromhex(under_lmk[1:]), ZPK, "U")
    zmk = lmk.decrypt(bytes.fromhex(zmk_field[1:]), ZMK, "U")
    assert under_zmk[0] == "U"
    assert unwrap(zmk, bytes.fromhex(under_zmk[1:]), "U") == clear
    assert kcv == tdes_kcv(clear).hex().upper()
    assert all(bin(byte).count("1") % 2 for byte in clear)
    assert send(hsm, "BU011" + under_lmk)[4:10] == kcv


def test_a0_single_length_and_triple_length_keys(hsm: Hsm) -> None:
    single = send(hsm, "A00003Z")
    assert single[:4] == "A100" and len(single) == 4 + 16 + 6
    triple = send(hsm, "A00009T")
    assert triple[:5] == "A100T" and len(triple) == 5 + 48 + 6
    clear = VariantLmk.test().decrypt(bytes.fromhex(triple[5:53]), key_type("009"), "T")
    assert triple[53:] == tdes_kcv(clear).hex().upper()


def test_a0_rejects_a_mismatched_zmk_scheme_and_bad_mode(hsm: Hsm) -> None:
    assert send(hsm, "A01001UU4C94ED3CBF0597C848000A85A55C2E54Z") == "A115"
    assert send(hsm, "A02001U") == "A115"
    assert send(hsm, "A00ZZZU") == "A115"


# ---- CW / CY -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "value"),
    [
        # [ThalesSim] TestGenerateCVV; the CVK is the [Visa CVV] pair 0123...3210.
        ("U9B4934384B19946B040CD702B4D581454123456789012345;8701101", "561"),
        ("0A61E674E88C6A7EEABC38C2B2BB492F4123456789012345;8701101", "561"),
        ("0A61E674E88C6A7EEABC38C2B2BB492F4999988887777;9105111", "649"),
    ],
)
def test_cw_published_cvvs(hsm: Hsm, request_fields: str, value: str) -> None:
    assert send(hsm, "CW" + request_fields) == "CX00" + value


def test_cw_matches_the_cvv_primitive_for_the_decrypted_cvk(hsm: Hsm) -> None:
    clear = VariantLmk.test().decrypt(bytes.fromhex("9B4934384B19946B040CD702B4D58145"), key_type("402"), "U")
    for pan, expiry, service in [("4333322221111222", "9307", "141"), ("6212345678901234567", "2912", "201")]:
        assert send(hsm, f"CWU9B4934384B19946B040CD702B4D58145{pan};{expiry}{service}") == "CX00" + cvv(
            clear, pan, expiry, service
        )


@pytest.mark.parametrize(
    ("request_fields", "code"),
    [
        # [ThalesSim] TestVerifyCVV
        ("U9B4934384B19946B040CD702B4D581455614123456789012345;8701101", "00"),
        ("U9B4934384B19946B040CD702B4D581451114123456789012345;8701101", "01"),
        ("0A61E674E88C6A7EEABC38C2B2BB492F6494999988887777;9105111", "00"),
        ("0A61E674E88C6A7EEABC38C2B2BB492F1114999988887777;9105111", "01"),
    ],
)
def test_cy_published_verifications(hsm: Hsm, request_fields: str, code: str) -> None:
    assert send(hsm, "CY" + request_fields) == "CZ" + code


def test_cw_bad_input(hsm: Hsm) -> None:
    assert send(hsm, "CWU9B4934384B19946B040CD702B4D581454123456789012345") == "CX15"  # no ';'
    assert send(hsm, "CWU9B4934384B19946B040CD702B4D5814541234;8701101") == "CX15"  # short PAN
    assert send(hsm, "CWU9B4934384B19946B040CD702B4D58145412345678901234X;8701101") == "CX15"


# ---- M6 / M8 -------------------------------------------------------------------


def _tak_under_lmk(clear: bytes) -> str:
    scheme = "U" if len(clear) == 16 else ""
    return scheme + VariantLmk.test().encrypt(clear, TAK).hex().upper()


def test_m6_x9_9_with_a_single_length_tak(hsm: Hsm) -> None:
    clear = bytes.fromhex("0123456789ABCDEF")
    message = "givemeSOMEMACing"
    # mode 0, input format 2 (text), MAC size 0 (8H), algorithm 1, padding 0 (whole blocks), TAK
    body = "M6" + "02010" + "003" + _tak_under_lmk(clear) + f"{len(message):04X}" + message
    assert send(hsm, body) == "M700" + x9_9_mac(clear, message.encode()).hex().upper()[:8]


@pytest.mark.parametrize("padding", [1, 2, 3])
def test_m6_retail_mac_matches_the_primitive(hsm: Hsm, padding: int) -> None:
    clear = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    data = bytes(range(37))
    # mode 0, input format 1 (hex), MAC size 1 (16H), algorithm 3, padding, ZAK
    body = f"M60113{padding}008"
    key = "U" + VariantLmk.test().encrypt(clear, key_type("008")).hex().upper()
    reply = send(hsm, body + key + f"{2 * len(data):04X}" + data.hex().upper())
    assert reply == "M700" + retail_mac(clear, data, padding).hex().upper()


def test_m6_binary_message_and_short_mac(hsm: Hsm) -> None:
    clear = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    data = bytes([0x00, 0x19, 0xFF, 0x80, 0x30]) * 3
    # mode 0, input format 0 (binary), MAC size 0 (8H), algorithm 3, padding 1
    body = "M6" + "00031" + "003" + _tak_under_lmk(clear) + f"{len(data):04X}" + data.decode("latin-1")
    assert send(hsm, body) == "M700" + retail_mac(clear, data, 1).hex().upper()[:8]


def test_m6_algorithm_1_double_length_is_tdes_cbc_mac(hsm: Hsm) -> None:
    clear = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    data = b"0200 purchase 000000012345"
    body = "M6" + "02111" + "003" + _tak_under_lmk(clear) + f"{len(data):04X}" + data.decode()
    assert send(hsm, body) == "M700" + cbc_mac(clear, data, 1).hex().upper()


def test_m8_verifies_and_rejects(hsm: Hsm) -> None:
    clear = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    data = "ISO 8583 message body"
    mac = retail_mac(clear, data.encode(), 2).hex().upper()
    head = "M8" + "02132" + "003" + _tak_under_lmk(clear) + f"{len(data):04X}"
    assert send(hsm, head + data + mac) == "M900"
    assert send(hsm, head + data.replace("8583", "8584") + mac) == "M901"
    assert send(hsm, head + data + mac[:-1] + ("0" if mac[-1] != "0" else "1")) == "M901"


def test_m6_bad_input(hsm: Hsm) -> None:
    key = _tak_under_lmk(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))
    assert send(hsm, "M6" + "02130" + "003" + key + "0005" + "12345") == "M715"  # padding 0, not whole blocks
    assert send(hsm, "M6" + "02131" + "001" + key + "0005" + "12345") == "M715"  # a ZPK is no MAC key
    assert send(hsm, "M6" + "02131" + "003" + key + "0010" + "12345") == "M715"  # message shorter than its length
    assert send(hsm, "M6" + "01131" + "003" + key + "0003" + "ABC") == "M715"  # odd hex


# ---- CA ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "reply"),
    [
        # [ThalesSim] TestTranslatePINFromTPKToZMK (ISO format 0 both sides)
        ("0406FBB23A5214DFBAB32D775A38E4AB12AE7A708F877571A90101550000025321", "CB0004E98FFDA17099AF5501"),
        (
            "U8463435FC4B4DAA0C49025272C29B12CU1EF828AA8F6B80EB83E19FBC373F3A85126428EB94035AF53B0101550000025321",
            "CB000491DDDA0A7C12CFAA01",
        ),
    ],
)
def test_ca_published_translations(hsm: Hsm, request_fields: str, reply: str) -> None:
    assert send(hsm, "CA" + request_fields) == reply


def _clear(field: str, kind_code: str) -> bytes:
    scheme = field[0] if field[0] in "UX" else "Z"
    return VariantLmk.test().decrypt(bytes.fromhex(field.lstrip("UX")), key_type(kind_code), scheme)


TPK_FIELD = "U8463435FC4B4DAA0C49025272C29B12C"
ZPK_FIELD = "U1EF828AA8F6B80EB83E19FBC373F3A85"
PAN = "4000001234567899"
ACCOUNT = PAN[-13:-1]


@pytest.mark.parametrize(("code", "fmt"), [("01", 0), ("05", 1), ("47", 3)])
def test_ca_changes_the_format_and_keeps_the_pin(code: str, fmt: int) -> None:
    tpk, zpk = _clear(TPK_FIELD, "002"), _clear(ZPK_FIELD, "001")
    source = pinblock.encipher(tpk, 0, "92751", PAN)
    hsm = Hsm(VariantLmk.test(), random.Random(7))
    reply = send(hsm, f"CA{TPK_FIELD}{ZPK_FIELD}12{source.hex().upper()}01{code}{ACCOUNT}")
    assert reply[:6] == "CB0005" and reply[-2:] == code
    assert pinblock.decipher(zpk, bytes.fromhex(reply[6:22]), PAN, fmt) == "92751"


def test_ca_errors(hsm: Hsm) -> None:
    tpk = _clear(TPK_FIELD, "002")
    good = pinblock.encipher(tpk, 0, "92751", PAN).hex().upper()
    assert send(hsm, f"CA{TPK_FIELD}{ZPK_FIELD}04{good}0101{ACCOUNT}") == "CB24"  # PIN longer than the maximum
    assert send(hsm, f"CA{TPK_FIELD}{ZPK_FIELD}12{good}0103{ACCOUNT}") == "CB23"  # Diebold format not supported
    assert send(hsm, f"CA{TPK_FIELD}{ZPK_FIELD}12{good}0101{'9' * 12}") == "CB20"  # wrong account: bad block
    assert send(hsm, f"CA{TPK_FIELD}{ZPK_FIELD}12{good}0101{ACCOUNT[:-1]}") == "CB15"
    assert send(hsm, f"CA{TPK_FIELD}{ZPK_FIELD}12{good[:-1]}G0101{ACCOUNT}") == "CB15"  # non-hex


def test_ca_parity_errors_name_the_source_and_destination_keys(hsm: Hsm) -> None:
    even = tdes_ecb_encrypt(bytes.fromhex(TEST_LMK_PAIRS[3]), bytes.fromhex("0123456789ABCDEE")).hex().upper()
    even_tpk = tdes_ecb_encrypt(bytes.fromhex(TEST_LMK_PAIRS[7]), bytes.fromhex("0123456789ABCDEE")).hex().upper()
    block = "0" * 16
    assert send(hsm, f"CA{even_tpk}{ZPK_FIELD}12{block}0101{ACCOUNT}") == "CB10"
    assert send(hsm, f"CA{TPK_FIELD}{even}12{block}0101{ACCOUNT}") == "CB11"


# ---- G0 -----------------------------------------------------------------------

# ANSI X9.24-1:2009 Annex A.4 (as in tests/test_hsm_dukpt_tdes.py): BDK 0123...3210,
# PIN 1234, PAN 4012345678909, ISO format 0 block under the transaction's PIN key.
BDK_CLEAR = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
DUKPT_BLOCKS = [("FFFF9876543210E00001", "1B9C1845EB993A7A"), ("FFFF9876543210E00002", "10A01C8D02C69107")]


@pytest.mark.parametrize(("ksn", "block"), DUKPT_BLOCKS)
def test_g0_translates_the_published_dukpt_pin_blocks(hsm: Hsm, ksn: str, block: str) -> None:
    bdk = "U" + VariantLmk.test().encrypt(BDK_CLEAR, key_type("009")).hex().upper()
    reply = send(hsm, f"G0{bdk}{ZPK_FIELD}A05{ksn}{block}01401234567890")
    assert reply[:6] == "G10004" and reply[-2:] == "01"
    zpk = _clear(ZPK_FIELD, "001")
    assert pinblock.decipher(zpk, bytes.fromhex(reply[6:22]), "4012345678909", 0) == "1234"


def test_g0_errors(hsm: Hsm) -> None:
    bdk = "U" + VariantLmk.test().encrypt(BDK_CLEAR, key_type("009")).hex().upper()
    ksn, block = DUKPT_BLOCKS[0]
    assert send(hsm, f"G0{bdk}{ZPK_FIELD}A05{ksn[:-2]}{block}01401234567890") == "G115"  # short KSN
    assert send(hsm, f"G0{bdk}{ZPK_FIELD}A05{DUKPT_BLOCKS[1][0]}{block}01401234567890") == "G120"  # wrong counter
    assert send(hsm, f"G0{bdk}{ZPK_FIELD}A05{ksn}{block}03401234567890") == "G123"


# ---- the envelope: unknown commands, short and garbage requests -----------------


def test_unknown_command_is_68_with_the_advanced_response_code(hsm: Hsm) -> None:
    assert send(hsm, "ZB") == "ZC68"
    assert send(hsm, "CI") == "CJ68"


def test_request_without_a_command(hsm: Hsm) -> None:
    assert hsm.handle(b"00") == b"00ZZ15"
    assert hsm.handle(b"0001N") == b"0001ZZ15"


def test_trailing_data_is_refused_but_the_lmk_identifier_is_accepted(hsm: Hsm) -> None:
    assert send(hsm, "NC%00")[:4] == "ND00"
    assert send(hsm, "NCX") == "ND15"
    answer = hsm.answer(b"0001NCXYZ")
    assert "offset 0" in answer.reason


def test_header_length_is_configurable() -> None:
    hsm = Hsm(VariantLmk.test(), header_length=6)
    assert hsm.handle(b"ABCDEFNC")[:10] == b"ABCDEFND00"


def test_error_reasons_never_carry_pins_blocks_or_keys(hsm: Hsm) -> None:
    tpk = _clear(TPK_FIELD, "002")
    block = pinblock.encipher(tpk, 0, "92751", PAN).hex().upper()
    requests = [
        f"CA{TPK_FIELD}{ZPK_FIELD}04{block}0101{ACCOUNT}",
        f"CA{TPK_FIELD}{ZPK_FIELD}12{block}0101{'9' * 12}",
        f"CA{TPK_FIELD}{ZPK_FIELD}12{block}0199{ACCOUNT}",
        "CYU9B4934384B19946B040CD702B4D581451114123456789012345;8701101",
    ]
    for body in requests:
        answer = hsm.answer((HEADER + body).encode())
        assert answer.error_code != "00" and answer.reason
        for secret in ("92751", block, TPK_FIELD[1:], ZPK_FIELD[1:], tpk.hex().upper(), "4123456789012345", "561"):
            assert secret not in answer.reason.upper()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_any_bytes_get_an_answer_never_an_exception(data: bytes) -> None:
    hsm = Hsm(VariantLmk.test(), random.Random(0))
    reply = hsm.handle(data)
    assert reply.startswith(data[:4])
    if len(data) >= 6:
        assert reply[6:8].isdigit()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["NC", "BU", "A0", "CW", "CY", "M6", "M8", "CA", "G0"]), st.text(max_size=80))
def test_known_commands_with_random_fields_answer_with_an_error_code(command: str, fields: str) -> None:
    hsm = Hsm(VariantLmk.test(), random.Random(0))
    reply = hsm.handle((HEADER + command + fields).encode("utf-8"))
    assert reply[4:5] == command[:1].encode()
    assert reply[6:8].decode() in {"00", "01", "10", "11", "15", "20", "23", "24"}
