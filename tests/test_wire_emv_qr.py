"""EMV merchant-presented QR: published payloads, the encoder bugs QR libraries
are known for, strict versus lenient national-profile mode, and round trips.

Payloads here are built by hand and their CRCs computed with binascii.crc_hqx
(CRC-CCITT with a chosen init value), an oracle independent of the module.
"""

from __future__ import annotations

import binascii
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from possim.wire.emv_qr import (
    DecodedQr,
    QrEncodeError,
    crc16_ccitt_false,
    decode_mpm,
    dynamic_order_qr,
    encode_mpm,
)

# EMVCo MPM v1.1 specification example payload (CRC A13A), as quoted by many
# libraries' tests, e.g. the Elixir "exemvi" MPMTest @official_sample.
EMV_SPEC = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME91320016A0112233449988770708123456786304A13A"
)
# Pix: example of the Banco Central do Brasil "Manual do BR Code" (static Pix, random key).
PIX_BCB = (
    "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR"
    "5913Fulano de Tal6008BRASILIA62070503***63041D3D"
)
# PromptPay: promptpay.io output for 0918695214, decoded in chokchai9900/QR_Wiki
# "Example/Base Example .md". No 52, 59, 60 (the Thai profile drops them).
PROMPTPAY_WIKI = "00020101021129370016A000000677010111011300669186952145802TH5303764630471E4"
# PromptPay: a gateway's live payload stored in dictotal/pay src/platform/PAY/v-go/data.js
# (url_ali). Objects out of numeric order, and a CRC with a leading zero (0154).
PROMPTPAY_GATEWAY = "00020101021153037645802TH29370016A0000006770101110113006681017332754074999.9963040154"
# VietQR (NAPAS, ID 38 GUI A000000727): subiz/vietqr README, Generate(120000, "970415", ...).
VIETQR = (
    "00020101021238570010A00000072701270006970415011300110019324180208QRIBFTTA530370454061200005802VN"
    "62170813ung ho lu lut6304C15C"
)
# Cambodia, UnionPay account in plain ID 15, objects out of order: phannaly/emv-qr-code README.
UNIONPAY_KH = (
    "00020101021252044131153137210116372101160123456789ABCDE6010Phnom Penh5913Merchant Shop5802KH"
    "540510.005303840622501081234567802090124444446304A0BA"
)
# Pix as published in matheusb-comp's gist "Exemplos de formato PIX": its CRC
# (170E) is right but template 62 says 08 for a 7-character content.
PIX_GIST_BAD_62 = (
    "00020126360014BR.GOV.BCB.PIX0114+55119432143215204000053039865405"
    "66.665802BR5907EMPRESA6008BRASILIA62080503***6304170E"
)


def crc_oracle(text: str) -> str:
    return f"{binascii.crc_hqx(text.encode('utf-8'), 0xFFFF):04X}"


def tlv(tag: str, value: str, length: int | None = None) -> str:
    return f"{tag}{len(value) if length is None else length:02d}{value}"


def sealed(*parts: str) -> str:
    """Concatenate data objects and append a correct 6304 CRC."""
    body = "".join(parts) + "6304"
    return body + crc_oracle(body)


MAI = tlv("26", tlv("00", "com.possim.pay") + tlv("01", "898310048160001"))


def base(**overrides: str) -> list[str]:
    """A strict-valid payload's objects; overrides replace or (with "") drop a tag."""
    fields = {"00": "01", "01": "12", "26": None, "52": "5812", "53": "156", "54": "12.50", "58": "CN",
              "59": "POSSIM CAFE", "60": "SHANGHAI"} | overrides
    return [MAI if tag == "26" else tlv(tag, value) for tag, value in fields.items() if value != ""]


def tags(decoded: DecodedQr) -> list[str | None]:
    return [e.tag for e in decoded.errors]


# --- CRC ------------------------------------------------------------------------------

def test_crc_known_answers():
    # "123456789" -> 0x29B1: the check value of CRC-16/CCITT-FALSE in the reveng CRC catalogue.
    assert crc16_ccitt_false(b"123456789") == 0x29B1
    assert crc16_ccitt_false(EMV_SPEC[:-4].encode("utf-8")) == 0xA13A
    assert crc16_ccitt_false(PROMPTPAY_GATEWAY[:-4].encode()) == 0x0154


# --- published payloads -----------------------------------------------------------------

def test_emv_spec_example_is_strictly_valid_with_nested_fields():
    decoded = decode_mpm(EMV_SPEC, strict=True)
    assert decoded.valid, decoded.errors
    f = decoded.fields
    assert f["29"] == {"00": "D15600000000", "05": "A93FO3230Q"}
    assert f["64"] == {"00": "ZH", "01": "最佳运输", "02": "北京"}
    assert f["62"] == {"03": "1234", "06": "***", "07": "A6008667", "09": "ME"}
    assert f["91"] == {"00": "A011223344998877", "07": "12345678"}
    assert (f["54"], f["53"], f["55"], f["63"]) == ("23.72", "156", "01", "A13A")


@pytest.mark.parametrize("payload", [PIX_BCB, PROMPTPAY_WIKI, PROMPTPAY_GATEWAY, VIETQR, UNIONPAY_KH])
def test_national_payloads_decode_valid_in_lenient_mode(payload):
    decoded = decode_mpm(payload)
    assert decoded.valid, decoded.errors
    assert decoded.fields["00"] == "01"


def test_national_specifics_are_read():
    assert decode_mpm(PIX_BCB).fields["26"]["00"] == "br.gov.bcb.pix"
    assert decode_mpm(PROMPTPAY_GATEWAY).fields["29"] == {"00": "A000000677010111", "01": "0066810173327"}
    assert decode_mpm(PROMPTPAY_GATEWAY).fields["54"] == "4999.99"
    assert decode_mpm(VIETQR).fields["38"] == {"00": "A000000727", "01": "000697041501130011001932418",
                                               "02": "QRIBFTTA"}
    assert decode_mpm(UNIONPAY_KH).fields["15"] == "37210116372101160123456789ABCDE"


@pytest.mark.parametrize("payload", [PROMPTPAY_WIKI, PROMPTPAY_GATEWAY, VIETQR])
def test_strict_mode_names_what_national_profiles_leave_out(payload):
    decoded = decode_mpm(payload, strict=True)
    assert not decoded.valid
    assert sorted(tags(decoded)) == ["52", "59", "60"]
    assert all(e.offset == len(payload) for e in decoded.errors)


def test_lenient_mode_still_checks_the_crc():
    broken = PIX_BCB.replace("Fulano", "Fulana")
    decoded = decode_mpm(broken)
    assert tags(decoded) == ["63"]
    assert decoded.errors[0].offset == len(broken) - 8
    assert "1D3D" in decoded.errors[0].message


# --- CRC bugs -----------------------------------------------------------------------------

def test_crc_with_dropped_leading_zero_and_length_04_is_an_error_on_63():
    payload = PROMPTPAY_GATEWAY[:-4] + "154"  # "6304" then only 3 hex digits
    for strict in (False, True):
        decoded = decode_mpm(payload, strict)
        assert not decoded.valid
        assert decoded.errors[0].tag == "63"
        assert decoded.errors[0].offset == len(payload) - 7


def test_crc_with_dropped_leading_zero_and_length_03_is_an_error_on_63():
    payload = PROMPTPAY_GATEWAY[:-8] + "6303154"
    decoded = decode_mpm(payload)
    assert [(e.tag, e.offset) for e in decoded.errors] == [("63", len(payload) - 7)]
    assert "4 hex digits" in decoded.errors[0].message


def test_encoder_keeps_the_crc_leading_zero():
    # Search, with the independent oracle, for a reference whose CRC is below 0x1000.
    for n in range(10000):
        fields = {"00": "01", "26": {"00": "com.possim.pay", "01": "1"}, "53": "156", "58": "CN",
                  "62": {"05": f"R{n}"}}
        body = "000201" + "2623" + "0014com.possim.pay01011" + "5303156" + "5802CN" + tlv("62", tlv("05", f"R{n}"))
        if crc_oracle(body + "6304").startswith("0"):
            break
    payload = encode_mpm(fields)
    assert payload == body + "6304" + crc_oracle(body + "6304")
    assert payload[-4] == "0"
    assert decode_mpm(payload).valid


def test_lower_case_crc_strict_rejects_lenient_accepts():
    payload = EMV_SPEC[:-4] + "a13a"
    assert decode_mpm(payload).valid
    strict = decode_mpm(payload, strict=True)
    assert [(e.tag, e.offset) for e in strict.errors] == [("63", len(payload) - 8)]
    assert "upper case" in strict.errors[0].message


def test_missing_crc():
    payload = "".join(base())
    decoded = decode_mpm(payload)
    assert tags(decoded) == ["63"]
    assert "missing" in decoded.errors[0].message


# --- lengths in UTF-8 bytes ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["北京烤鸭店", "ร้านกาแฟดี"])
def test_length_counted_in_utf8_bytes_is_reported_at_the_object(name):
    parts = base(**{"59": ""})
    parts.insert(7, tlv("59", name, len(name.encode("utf-8"))))  # the bug: bytes, not characters
    payload = sealed(*parts)
    decoded = decode_mpm(payload)
    assert [(e.tag, e.offset) for e in decoded.errors] == [("59", payload.index("59" + f"{len(name.encode())}"))]
    assert "UTF-8 bytes" in decoded.errors[0].message
    # decoding recovers and reads the rest of the payload
    assert decoded.fields["59"] == name
    assert decoded.fields["60"] == "SHANGHAI"


def test_utf8_byte_length_inside_the_language_template():
    inner = tlv("00", "ZH") + tlv("01", "最佳运输", 12)
    payload = sealed(*base(), tlv("64", inner))
    decoded = decode_mpm(payload)
    assert [e.tag for e in decoded.errors] == ["64.01"]
    assert decoded.errors[0].offset == payload.index("0112最佳")


def test_characters_not_bytes_is_right():
    payload = sealed(*base(), tlv("64", tlv("00", "ZH") + tlv("01", "最佳运输")))
    assert decode_mpm(payload, strict=True).valid
    assert payload.count("0104最佳运输") == 1


# --- nested template lengths ----------------------------------------------------------------

def test_real_pix_with_template_62_one_too_long():
    decoded = decode_mpm(PIX_GIST_BAD_62)
    assert not decoded.valid
    at_62 = PIX_GIST_BAD_62.index("62080503")
    errors62 = [e for e in decoded.errors if e.tag == "62"]
    assert [e.offset for e in errors62] == [at_62 + 4 + 7]  # the stray character after 05 03 ***


def test_template_62_too_short_names_the_sub_object():
    payload = sealed(*base(), "6206" + "0503***")
    decoded = decode_mpm(payload)
    assert decoded.errors[0].tag == "62.05"
    assert decoded.errors[0].offset == payload.index("6206") + 4
    assert "template 62" in decoded.errors[0].message


# --- order ------------------------------------------------------------------------------------

def test_order_is_free_between_00_and_63():
    parts = base()
    payload = sealed(parts[0], *reversed(parts[1:]))
    assert decode_mpm(payload, strict=True).valid
    assert decode_mpm(payload).valid


def test_00_must_be_first_and_63_last():
    parts = base()
    not_first = sealed(parts[1], parts[0], *parts[2:])
    assert [(e.tag, e.offset) for e in decode_mpm(not_first).errors] == [("00", 0)]
    body = "".join(parts) + "6304"
    crc_then_more = body + crc_oracle(body) + tlv("61", "200000")
    decoded = decode_mpm(crc_then_more)
    assert ("63", len(body) - 4) in [(e.tag, e.offset) for e in decoded.errors]


def test_duplicate_id():
    payload = sealed(*base(), tlv("59", "AGAIN"))
    decoded = decode_mpm(payload)
    assert [(e.tag, e.offset) for e in decoded.errors] == [("59", payload.index("5905AGAIN"))]


# --- amounts and tips ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "cur, amount",
    [("156", "100,50"), ("392", "100.5"), ("156", "1.234"), ("156", "1.2.3"), ("156", "-5"),
     ("156", "12345678901.50"), ("156", ".5")],
)
def test_bad_amounts_are_errors_on_54(cur, amount):
    payload = sealed(*base(**{"53": cur, "54": amount}))
    for strict in (False, True):
        decoded = decode_mpm(payload, strict)
        assert [(e.tag, e.offset) for e in decoded.errors] == [("54", payload.index("54" + tlv("", amount)[:2]))]


@pytest.mark.parametrize("cur, amount", [("392", "100"), ("048", "1.234"), ("156", "0.5"), ("418", "1.234567")])
def test_good_amounts(cur, amount):
    # 418 (LAK) is not in possim.wire.money: its decimals cannot be judged and are let through.
    assert decode_mpm(sealed(*base(**{"53": cur, "54": amount})), strict=True).valid


def test_tip_rules():
    fee_missing = decode_mpm(sealed(*base(), tlv("55", "02")))
    assert tags(fee_missing) == ["55"]
    stray_fee = sealed(*base(), tlv("56", "1.00"))
    assert [(e.tag, e.offset) for e in decode_mpm(stray_fee).errors] == [("56", stray_fee.index("56041.00"))]
    assert tags(decode_mpm(sealed(*base(), tlv("55", "03"), tlv("57", "100")))) == ["57"]
    assert decode_mpm(sealed(*base(), tlv("55", "03"), tlv("57", "3.5")), strict=True).valid
    assert decode_mpm(sealed(*base(), tlv("55", "02"), tlv("56", "1.00")), strict=True).valid


def test_all_value_errors_are_collected_in_offset_order():
    payload = sealed(*base(**{"52": "58A2", "54": "1,00", "58": "CHN"}))
    decoded = decode_mpm(payload)
    assert tags(decoded) == ["52", "54", "58"]
    assert [e.offset for e in decoded.errors] == sorted(e.offset for e in decoded.errors)
    assert decoded.errors[0].offset == payload.index("520458A2")


# --- strict versus lenient ----------------------------------------------------------------------

def test_strict_only_rules():
    long_name = sealed(*base(**{"59": "A" * 26, "60": "B" * 16}))
    assert decode_mpm(long_name).valid
    assert tags(decode_mpm(long_name, strict=True)) == ["59", "60"]
    rfu = sealed(*base(), tlv("70", "X"), tlv("62", tlv("20", "Y")))
    assert decode_mpm(rfu).valid
    assert tags(decode_mpm(rfu, strict=True)) == ["70", "62.20"]  # in payload order
    unicode_name = sealed(*base(**{"59": "北京烤鸭店"}))
    assert decode_mpm(unicode_name).valid
    assert tags(decode_mpm(unicode_name, strict=True)) == ["59"]
    static_22 = sealed(*base(**{"01": "22"}))
    assert decode_mpm(static_22).valid
    assert tags(decode_mpm(static_22, strict=True)) == ["01"]


def test_both_modes_require_a_gui_and_a_merchant_account():
    no_gui = sealed(*[p for p in base() if not p.startswith("26")], tlv("27", tlv("01", "123")))
    for strict in (False, True):
        decoded = decode_mpm(no_gui, strict)
        assert [(e.tag, e.offset) for e in decoded.errors] == [("27", no_gui.index("2707"))]
    no_account = sealed(*[p for p in base() if not p.startswith("26")])
    assert tags(decode_mpm(no_account)) == ["02-51"]


@pytest.mark.parametrize("payload", ["", "0002", "00020", "AB02010", "0002010X"])
def test_structure_errors_do_not_raise(payload):
    decoded = decode_mpm(payload)
    assert not decoded.valid
    assert decoded.errors


def test_to_json():
    out = decode_mpm(PROMPTPAY_WIKI[:-4] + "0000").to_json()
    assert json.loads(json.dumps(out, ensure_ascii=False)) == out
    assert out["valid"] is False
    assert out["errors"] == [{"tag": "63", "offset": len(PROMPTPAY_WIKI) - 8,
                              "message": "CRC 0000 does not match the payload's 71E4"}]
    assert out["fields"]["29"]["01"] == "0066918695214"


# --- encoder -------------------------------------------------------------------------------------

def test_encode_orders_and_seals():
    fields = {"59": "POSSIM CAFE", "26": {"01": "898310048160001", "00": "com.possim.pay"}, "60": "SHANGHAI",
              "53": "156", "58": "CN", "52": "5812", "00": "01", "01": "12", "54": "12.50"}
    assert encode_mpm(fields, strict=True) == sealed(*base())


@pytest.mark.parametrize(
    "fields, tag",
    [
        ({"54": "1,00"}, "54"),
        ({"52": {"00": "x"}}, "52"),
        ({"59": "A" * 100}, "59"),
        ({"62": {"05": ""}}, "62.05"),
        ({"63": "ABCD"}, "63"),
        ({"5": "x"}, None),
    ],
)
def test_encode_refuses_with_the_tag(fields, tag):
    good = {"00": "01", "26": {"00": "com.possim.pay"}, "53": "156", "58": "CN"}
    with pytest.raises(QrEncodeError) as caught:
        encode_mpm(good | fields)
    assert caught.value.tag == tag
    if tag:
        assert str(caught.value).startswith(f"{tag}: ")


def test_encode_strict_refuses_a_long_name():
    fields = {"00": "01", "26": {"00": "com.possim.pay"}, "52": "5812", "53": "156", "58": "CN",
              "59": "N" * 26, "60": "C"}
    assert decode_mpm(encode_mpm(fields)).valid
    with pytest.raises(QrEncodeError) as caught:
        encode_mpm(fields, strict=True)
    assert caught.value.tag == "59"


@pytest.mark.parametrize("cur, minor, text", [("392", 1500, "1500"), ("CNY", 1250, "12.50"), ("048", 1, "0.001")])
def test_dynamic_order_qr(cur, minor, text):
    payload = dynamic_order_qr(
        merchant_account={"00": "com.possim.pay", "01": "898310048160001"}, mcc="5812", currency=cur,
        amount_minor=minor, country="CN", name="POSSIM CAFE", city="SHANGHAI", reference="ORD-42",
        terminal_label="T0001", language={"00": "ZH", "01": "最佳运输"},
    )
    assert payload.startswith("000201010212")
    assert tlv("54", text) in payload
    assert payload[-8:] == "6304" + crc_oracle(payload[:-4])
    decoded = decode_mpm(payload, strict=True)
    assert decoded.valid, decoded.errors
    assert decoded.fields["62"] == {"05": "ORD-42", "07": "T0001"}
    assert decoded.fields["64"]["01"] == "最佳运输"


def test_dynamic_order_qr_refusals():
    args = dict(merchant_account={"00": "com.possim.pay", "01": "1"}, mcc="5812", currency="156", amount_minor=None,
                country="CN", name="SHOP", city="CITY", reference=None, terminal_label=None)
    decoded = decode_mpm(dynamic_order_qr(**args), strict=True)
    assert decoded.valid and "54" not in decoded.fields and "62" not in decoded.fields
    for bad, tag in [({"amount_minor": -1}, "54"), ({"currency": "999"}, "53"), ({"mcc": "58"}, "52"),
                     ({"merchant_account": {"01": "1"}}, "26")]:
        with pytest.raises(QrEncodeError) as caught:
            dynamic_order_qr(**(args | bad))
        assert caught.value.tag == tag


# --- round trip ------------------------------------------------------------------------------------

_PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=25)
_CURRENCIES = [("156", 2), ("392", 0), ("048", 3), ("840", 2), ("704", 0)]


@st.composite
def strict_fields(draw):
    numeric, exponent = draw(st.sampled_from(_CURRENCIES))
    fields = {"00": "01", "52": draw(st.from_regex(r"[0-9]{4}", fullmatch=True)), "53": numeric,
              "58": draw(st.from_regex(r"[A-Z]{2}", fullmatch=True)), "59": draw(_PRINTABLE),
              "60": draw(_PRINTABLE.filter(lambda s: len(s) <= 15))}
    if draw(st.booleans()):
        fields["01"] = draw(st.sampled_from(["11", "12"]))
    for tag in draw(st.sets(st.integers(26, 51), min_size=1, max_size=3)):
        fields[str(tag)] = {"00": draw(st.from_regex(r"[a-z]{2,8}\.[a-z]{2,8}\.[a-z]{2,8}", fullmatch=True)),
                            "01": draw(_PRINTABLE)}
    if draw(st.booleans()):
        minor = draw(st.integers(0, 10**9))
        digits = str(minor).rjust(exponent + 1, "0")
        fields["54"] = f"{digits[:-exponent]}.{digits[-exponent:]}" if exponent else digits
    sub = draw(st.dictionaries(st.sampled_from([f"{n:02d}" for n in range(1, 9)]), _PRINTABLE, max_size=3))
    if sub:
        fields["62"] = sub
    return fields


@settings(max_examples=150, deadline=None)
@given(strict_fields())
def test_round_trip_strict(fields):
    payload = encode_mpm(fields, strict=True)
    assert payload[-8:] == "6304" + crc_oracle(payload[:-4])
    decoded = decode_mpm(payload, strict=True)
    assert decoded.valid, decoded.errors
    assert {k: v for k, v in decoded.fields.items() if k != "63"} == fields


@settings(max_examples=100, deadline=None)
@given(strict_fields(), st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=20))
def test_round_trip_unicode_names_lenient(fields, name, alternate):
    fields = fields | {"59": name, "64": {"00": "ZH", "01": alternate}}
    payload = encode_mpm(fields)
    decoded = decode_mpm(payload)
    assert decoded.valid, decoded.errors
    assert decoded.fields["59"] == name
    assert decoded.fields["64"]["01"] == alternate
