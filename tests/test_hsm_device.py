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
- [psec] knovichikhin/psec tests/test_pin.py (as in tests/test_hsm_pinverify.py): PVK
  0123456789ABCDEFFEDCBA9876543210, PAN 1122334455667788; Visa PVVs and IBM 3624
  offsets with decimalisation table 1234567890123456.
- [IBM 3624 example] the worked "customer PIN, natural PIN, PIN offset" examples at
  topic.alibabacloud.com / mamicode.com quoted in tests/test_hsm_pinverify.py.
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
from possim.hsm_mock.cipher import tdes_ecb_decrypt, tdes_ecb_encrypt
from possim.hsm_mock.cvv import cvv
from possim.hsm_mock.device import Hsm
from possim.hsm_mock.kcv import tdes_kcv
from possim.hsm_mock.lmk import (
    PVK,
    TAK,
    TEST_LMK_PAIRS,
    TMK,
    TPK,
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


# ---- DC / EC: PIN verification, Visa PVV -----------------------------------------

LMK = VariantLmk.test()
PSEC_PVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PSEC_PAN = "1122334455667788"
PIN_KEY = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")  # any odd-parity double-length key
PVK_FIELD = "U" + LMK.encrypt(PSEC_PVK, PVK, "U").hex().upper()


def _pin_key_field(kind_code: str) -> str:
    return "U" + LMK.encrypt(PIN_KEY, key_type(kind_code), "U").hex().upper()


def _block(pin: str, pan: str, fmt: int = 0) -> str:
    return pinblock.encipher(PIN_KEY, fmt, pin, pan, random.Random(3)).hex().upper()


def _account(pan: str) -> str:
    return pan[-13:-1]


# [psec] test_generate_visa_pvv: (PVKI, PIN, PAN, PVV)
PSEC_PVV = [
    ("1", "4524", "1122334455667788", "8523"),
    ("2", "1912", "1122334455667788", "3244"),
    ("1", "0570", "1122334455667718", "3144"),
    ("1", "8299", "1122334455667708", "4422"),
]


@pytest.mark.parametrize(("command", "kind"), [("DC", "002"), ("EC", "001")])
@pytest.mark.parametrize(("pvki", "pin", "pan", "pvv"), PSEC_PVV)
def test_dc_ec_verify_the_published_pvvs(hsm: Hsm, command: str, kind: str, pvki: str, pin: str, pan: str, pvv: str) -> None:
    reply_code = command[0] + chr(ord(command[1]) + 1)
    head = command + _pin_key_field(kind) + PVK_FIELD
    assert send(hsm, f"{head}{_block(pin, pan)}01{_account(pan)}{pvki}{pvv}") == reply_code + "00"
    wrong = f"{(int(pin) + 1) % 10000:04d}"
    assert send(hsm, f"{head}{_block(wrong, pan)}01{_account(pan)}{pvki}{pvv}") == reply_code + "01"
    other_pvki = "3" if pvki != "3" else "4"
    assert send(hsm, f"{head}{_block(pin, pan)}01{_account(pan)}{other_pvki}{pvv}") == reply_code + "01"


@pytest.mark.parametrize(("code", "fmt"), [("05", 1), ("47", 3)])
def test_dc_reads_iso_formats_1_and_3(hsm: Hsm, code: str, fmt: int) -> None:
    block = _block("4524", PSEC_PAN, fmt)
    assert send(hsm, f"DC{_pin_key_field('002')}{PVK_FIELD}{block}{code}{_account(PSEC_PAN)}18523") == "DD00"


def test_dc_bare_32h_pvk_pair_is_read_as_scheme_x(hsm: Hsm) -> None:
    bare = LMK.encrypt(PSEC_PVK, PVK, "X").hex().upper()
    block = _block("4524", PSEC_PAN)
    assert send(hsm, f"DC{_pin_key_field('002')}{bare}{block}01{_account(PSEC_PAN)}18523") == "DD00"


def test_dc_ec_errors(hsm: Hsm) -> None:
    tpk, zpk = _pin_key_field("002"), _pin_key_field("001")
    block, account = _block("4524", PSEC_PAN), _account(PSEC_PAN)
    # A key under the wrong LMK pair decrypts to garbage: a parity error or a block that does not decode.
    assert send(hsm, f"EC{tpk}{PVK_FIELD}{block}01{account}18523")[:4] in ("ED10", "ED20")
    assert send(hsm, f"DC{tpk}{PVK_FIELD}{block}03{account}18523") == "DD23"  # Diebold: not supported
    assert send(hsm, f"DC{tpk}{PVK_FIELD}{block}01{'9' * 12}18523") == "DD20"  # wrong account: block does not decode
    triple = "T" + LMK.encrypt(PSEC_PVK + PSEC_PVK[:8], PVK, "T").hex().upper()
    assert send(hsm, f"DC{tpk}{triple}{block}01{account}18523") == "DD27"
    assert send(hsm, f"EC{zpk}{PVK_FIELD}{block}01{account}1852") == "ED15"
    answer = hsm.answer(f"{HEADER}DC{tpk}{PVK_FIELD}{block}01{account}1852X".encode())
    assert answer.error_code == "15" and "PVV" in answer.reason
    answer = hsm.answer(f"{HEADER}DC{tpk}{PVK_FIELD}{block}01{account}X8523".encode())
    assert answer.error_code == "15" and "PVKI" in answer.reason
    answer = hsm.answer(f"{HEADER}DC{tpk}{PVK_FIELD}{block[:-1]}G01{account}18523".encode())
    assert answer.error_code == "15" and "PIN block" in answer.reason


def test_dc_parity_errors_name_the_pin_key_and_the_pvk(hsm: Hsm) -> None:
    # Even-parity keys encrypted independently under LMK 14-15 (variant 0; X scheme is plain ECB).
    even_tpk = tdes_ecb_encrypt(bytes.fromhex(TEST_LMK_PAIRS[7]), bytes.fromhex("0123456789ABCDEE")).hex().upper()
    even_pvk = tdes_ecb_encrypt(bytes.fromhex(TEST_LMK_PAIRS[7]), bytes.fromhex("0123456789ABCDEE" * 2)).hex().upper()
    block, account = _block("4524", PSEC_PAN), _account(PSEC_PAN)
    assert send(hsm, f"DC{even_tpk}{PVK_FIELD}{block}01{account}18523") == "DD10"
    assert send(hsm, f"DC{_pin_key_field('002')}{even_pvk}{block}01{account}18523") == "DD11"
    assert send(hsm, f"DA{_pin_key_field('002')}{even_pvk[:16]}12{block}0104{account}{'1' * 16}1122334455N80000FFFFFFFF") == "DB11"


# ---- DA / EA: PIN verification, IBM 3624 offset ------------------------------------

PSEC_TABLE = "1234567890123456"
# The validation data is the whole [psec] PAN: "N" stands for the last 5 account digits (66778).
PSEC_VALIDATION = "1122334455N8"
# [psec] test_generate_ibm3624_offset with PAN start 0, length 16, pad F: (offset, customer PIN)
PSEC_OFFSETS = [("0000", "4524"), ("1111", "5635"), ("6586", "0000"), ("7697", "1111"), ("7710", "1234")]


def _ibm(command: str, kind: str, pvk: str, pin: str, pan: str, table: str, validation: str, offset: str, check: int = 4) -> str:
    block = _block(pin, pan)
    return f"{command}{_pin_key_field(kind)}{pvk}12{block}01{check:02d}{_account(pan)}{table}{validation}{offset.ljust(12, 'F')}"


@pytest.mark.parametrize(("command", "kind"), [("DA", "002"), ("EA", "001")])
@pytest.mark.parametrize(("offset", "pin"), PSEC_OFFSETS)
def test_da_ea_verify_the_published_offsets(hsm: Hsm, command: str, kind: str, offset: str, pin: str) -> None:
    reply_code = command[0] + chr(ord(command[1]) + 1)
    assert send(hsm, _ibm(command, kind, PVK_FIELD, pin, PSEC_PAN, PSEC_TABLE, PSEC_VALIDATION, offset)) == reply_code + "00"
    wrong = f"{(int(pin) + 1) % 10000:04d}"
    assert send(hsm, _ibm(command, kind, PVK_FIELD, wrong, PSEC_PAN, PSEC_TABLE, PSEC_VALIDATION, offset)) == reply_code + "01"


def test_da_single_length_pvk_six_digit_pin() -> None:
    # [IBM 3624 example] 1: PAN 1234567890123456 as validation data (N = 12345), PVK 1313131313131313,
    # table 0123456789012345: offset 456789 -> PIN 099764; offset 000000 -> natural PIN 643085.
    hsm = Hsm(LMK)
    pvk = LMK.encrypt(bytes.fromhex("1313131313131313"), PVK).hex().upper()
    pan, table, validation = "1234567890123456", "0123456789012345", "N67890123456"
    assert send(hsm, _ibm("DA", "002", pvk, "099764", pan, table, validation, "456789", 6)) == "DB00"
    assert send(hsm, _ibm("DA", "002", pvk, "643085", pan, table, validation, "000000", 6)) == "DB00"
    assert send(hsm, _ibm("DA", "002", pvk, "099765", pan, table, validation, "456789", 6)) == "DB01"
    assert send(hsm, _ibm("DA", "002", pvk, "09976", pan, table, validation, "456789", 4)) == "DB01"  # shorter PIN


def test_ea_single_length_pvk_check_length_4() -> None:
    # [IBM 3624 example] 2: card 1234567890123445 (N = 12344), PVK 0123456789ABCDEF: offset 2298 -> PIN 1234.
    hsm = Hsm(LMK)
    pvk = LMK.encrypt(bytes.fromhex("0123456789ABCDEF"), PVK).hex().upper()
    pan, table, validation = "1234567890123445", "0123456789012345", "1234567890N5"
    assert send(hsm, _ibm("EA", "001", pvk, "1234", pan, table, validation, "2298")) == "EB00"
    assert send(hsm, _ibm("EA", "001", pvk, "1234", pan, table, validation, "2299")) == "EB01"


def test_da_checks_only_check_length_leading_digits() -> None:
    # From the [IBM 3624 example] 1 vector: with check length 4, the last two offset digits are not compared.
    hsm = Hsm(LMK)
    pvk = LMK.encrypt(bytes.fromhex("1313131313131313"), PVK).hex().upper()
    pan, table, validation = "1234567890123456", "0123456789012345", "N67890123456"
    assert send(hsm, _ibm("DA", "002", pvk, "099764", pan, table, validation, "456700", 4)) == "DB00"
    assert send(hsm, _ibm("DA", "002", pvk, "099764", pan, table, validation, "456700", 6)) == "DB01"


def test_da_errors_name_the_field(hsm: Hsm) -> None:
    good = _ibm("DA", "002", PVK_FIELD, "1234", PSEC_PAN, PSEC_TABLE, PSEC_VALIDATION, "7710")
    assert send(hsm, good) == "DB00"
    for broken, field in [
        (good.replace(PSEC_VALIDATION, "112233445588"), "PIN validation data"),  # no N
        (good.replace(PSEC_VALIDATION, "11223344NN88"), "PIN validation data"),
        (good.replace(PSEC_TABLE, "123456789012345A"), "decimalisation table"),
        (good[:-12] + "77F0FFFFFFFF", "offset"),
        (good[:-12] + "771FFFFFFFFF", "offset"),  # 3 digits
        (good[:-1], "offset"),
    ]:
        answer = hsm.answer((HEADER + broken).encode())
        assert answer.error_code == "15", field
        assert field in answer.reason
    head = "DA" + _pin_key_field("002") + PVK_FIELD
    answer = hsm.answer(f"{HEADER}{head}13{_block('1234', PSEC_PAN)}0104".encode())
    assert answer.error_code == "15" and "maximum PIN length" in answer.reason
    five = _ibm("DA", "002", PVK_FIELD, "12345", PSEC_PAN, PSEC_TABLE, PSEC_VALIDATION, "77100")
    assert send(hsm, five.replace(PVK_FIELD + "12", PVK_FIELD + "04", 1)) == "DB24"  # PIN longer than the maximum


def test_verification_reasons_never_carry_pins_or_offsets(hsm: Hsm) -> None:
    block = _block("4524", PSEC_PAN)
    for body in [
        f"DC{_pin_key_field('002')}{PVK_FIELD}{block}01{_account(PSEC_PAN)}18524",
        _ibm("DA", "002", PVK_FIELD, "4524", PSEC_PAN, PSEC_TABLE, PSEC_VALIDATION, "0001"),
    ]:
        answer = hsm.answer((HEADER + body).encode())
        assert answer.error_code == "01"
        for secret in ("4524", "8524", "0001", block, PSEC_PAN[-13:-1], PVK_FIELD[1:]):
            assert secret not in answer.reason


# ---- A6 / A8: key import and export ---------------------------------------------

# [ThalesSim] GenerateKeyTest (see test_a0_reproduces_the_published_reply_for_the_same_random_key):
# one ZPK under the ZMK below is X6A4B..., under the LMK U37C2..., KCV 18EC38.
ZMK_FIELD = "U4C94ED3CBF0597C848000A85A55C2E54"
PUBLISHED_UNDER_ZMK = "X6A4BF2BD845FCBD66A4BF2BD845FCBD6"
PUBLISHED_UNDER_LMK = "U37C214786596A294ED92DBA27208C13B"


def test_a6_and_a8_reproduce_the_published_a0_reply(hsm: Hsm) -> None:
    assert send(hsm, f"A6001{ZMK_FIELD}{PUBLISHED_UNDER_ZMK}U") == f"A700{PUBLISHED_UNDER_LMK}18EC38"
    assert send(hsm, f"A8001{ZMK_FIELD}{PUBLISHED_UNDER_LMK}X") == f"A900{PUBLISHED_UNDER_ZMK}18EC38"
    assert send(hsm, f"A8001;0{ZMK_FIELD}{PUBLISHED_UNDER_LMK}X") == f"A900{PUBLISHED_UNDER_ZMK}18EC38"


@pytest.mark.parametrize(("kind", "scheme", "zmk_scheme"), [("001", "U", "U"), ("002", "T", "T"), ("003", "Z", "Z"), ("00A", "U", "X")])
def test_a0_mode_1_keys_import_back_with_a6(hsm: Hsm, kind: str, scheme: str, zmk_scheme: str) -> None:
    reply = send(hsm, f"A01{kind}{scheme}{ZMK_FIELD}{zmk_scheme}")
    assert reply[:4] == "A100"
    width = (0 if scheme == "Z" else 1) + 2 * {"Z": 8, "U": 16, "T": 24}[scheme]
    under_lmk, under_zmk, kcv = reply[4 : 4 + width], reply[4 + width : 4 + 2 * width], reply[4 + 2 * width :]
    assert send(hsm, f"A6{kind}{ZMK_FIELD}{under_zmk}{scheme}") == f"A700{under_lmk}{kcv}"
    clear = LMK.decrypt(bytes.fromhex(under_lmk.lstrip("UT")), key_type(kind), scheme)
    assert kcv == tdes_kcv(clear).hex().upper()


def test_a8_then_a6_round_trip_and_kcv(hsm: Hsm) -> None:
    generated = send(hsm, "A00002U")  # a TPK under the LMK
    under_lmk, kcv = generated[4:37], generated[37:]
    exported = send(hsm, f"A8002{ZMK_FIELD}{under_lmk}U")
    assert exported[:4] == "A900" and exported[-6:] == kcv
    assert send(hsm, f"A6002{ZMK_FIELD}{exported[4:37]}U") == f"A700{under_lmk}{kcv}"
    clear = LMK.decrypt(bytes.fromhex(under_lmk[1:]), TPK, "U")
    assert kcv == tdes_kcv(clear).hex().upper()


def test_a8_under_a_tmk_is_plain_ecb_for_scheme_x(hsm: Hsm) -> None:
    tmk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    tmk_field = "U" + LMK.encrypt(tmk, TMK, "U").hex().upper()
    reply = send(hsm, f"A8001;1{tmk_field}{PUBLISHED_UNDER_LMK}X")
    assert reply[:5] == "A900X" and reply[-6:] == "18EC38"
    clear = tdes_ecb_decrypt(tmk, bytes.fromhex(reply[5:37]))  # independent: X = ECB under the KEK
    assert tdes_kcv(clear).hex().upper() == "18EC38"


def test_a6_forces_odd_parity_and_advises_01(hsm: Hsm) -> None:
    zmk = LMK.decrypt(bytes.fromhex(ZMK_FIELD[1:]), ZMK, "U")
    even = bytes.fromhex("0123456789ABCDEEFEDCBA9876543210")  # byte 8 has even parity
    under_zmk = tdes_ecb_encrypt(zmk, even).hex().upper()  # scheme X, built independently
    reply = send(hsm, f"A6001{ZMK_FIELD}X{under_zmk}U")
    assert reply[:4] == "A701"
    imported = LMK.decrypt(bytes.fromhex(reply[5:37]), ZPK, "U")
    assert imported == bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    assert reply[37:] == tdes_kcv(imported).hex().upper() == "08D7B4"  # the classic test key's KCV


def test_a6_a8_parity_and_input_errors(hsm: Hsm) -> None:
    even_zmk = tdes_ecb_encrypt(bytes.fromhex(TEST_LMK_PAIRS[2]), bytes.fromhex("0123456789ABCDEE" * 2)).hex().upper()
    assert send(hsm, f"A6001{even_zmk}{PUBLISHED_UNDER_ZMK}U") == "A710"
    assert send(hsm, f"A8001{even_zmk}{PUBLISHED_UNDER_LMK}X") == "A910"
    even_key = tdes_ecb_encrypt(bytes.fromhex(TEST_LMK_PAIRS[3]), bytes.fromhex("0123456789ABCDEE" * 2)).hex().upper()
    assert send(hsm, f"A8001{ZMK_FIELD}X{even_key}U") == "A911"
    answer = hsm.answer(f"{HEADER}A6001{ZMK_FIELD}{PUBLISHED_UNDER_ZMK}Z".encode())
    assert answer.error_code == "15" and "key scheme (LMK)" in answer.reason
    answer = hsm.answer(f"{HEADER}A8001{ZMK_FIELD}{PUBLISHED_UNDER_LMK}T".encode())
    assert answer.error_code == "15" and "key scheme (ZMK)" in answer.reason
    answer = hsm.answer(f"{HEADER}A6001{ZMK_FIELD}{PUBLISHED_UNDER_ZMK[:-2]}U".encode())
    assert answer.error_code == "15" and "key under ZMK" in answer.reason
    assert send(hsm, f"A60F1{ZMK_FIELD}{PUBLISHED_UNDER_ZMK}U") == "A715"  # not a key type
    assert send(hsm, f"A8001;2{ZMK_FIELD}{PUBLISHED_UNDER_LMK}X") == "A915"  # ZMK/TMK flag


def test_a6_a8_reasons_never_carry_keys(hsm: Hsm) -> None:
    zmk = LMK.decrypt(bytes.fromhex(ZMK_FIELD[1:]), ZMK, "U")
    under_zmk = tdes_ecb_encrypt(zmk, bytes.fromhex("0123456789ABCDEEFEDCBA9876543210")).hex().upper()
    answer = hsm.answer(f"{HEADER}A6001{ZMK_FIELD}X{under_zmk}U".encode())
    assert answer.error_code == "01" and answer.reason
    for secret in ("0123456789ABCDE", under_zmk, ZMK_FIELD[1:], zmk.hex().upper()):
        assert secret not in answer.reason.upper()


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
@given(
    st.sampled_from(["NC", "BU", "A0", "CW", "CY", "M6", "M8", "CA", "G0", "DA", "EA", "DC", "EC", "A6", "A8"]),
    st.text(max_size=80),
)
def test_known_commands_with_random_fields_answer_with_an_error_code(command: str, fields: str) -> None:
    hsm = Hsm(VariantLmk.test(), random.Random(0))
    reply = hsm.handle((HEADER + command + fields).encode("utf-8"))
    assert reply[4:5] == command[:1].encode()
    assert reply[6:8].decode() in {"00", "01", "10", "11", "15", "20", "23", "24", "27"}
