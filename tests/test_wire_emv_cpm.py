"""EMV QR consumer-presented mode: the spec's worked examples decode to what
they say, our payloads survive a round trip, bad payloads are refused naming
the tag and byte offset, and a decoded payload never shows its PAN or track."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from possim.wire.emv_cpm import CpmError, authorization_fields, decode_cpm, encode_cpm
from possim.wire.tlv import encode as tlv

# EMVCo CPM specification examples, as reproduced verbatim in public CPM libraries' tests:
# kenmaz JPQRReader CPMDecoderTests.testEMVCPM_Example1/Example2, mvallim/emv-qrcode
# ConsumerPresentedModeDecoderTest, dongri/emv-qrcode README (which lists example 2's values).
EXAMPLE_1 = "hQVDUFYwMWEaTwegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF8="
EXAMPLE_2 = (
    "hQVDUFYwMWETTwegAAAAVVVVUAhQcm9kdWN0MWETTwegAAAAZmZmUAhQcm9kdWN0MmJJWggSNFZ4kBI0"
    "WF8gDkNBUkRIT0xERVIvRU1WXy0IcnVlc2RlZW5kIZ8QBwYBCgMAAACfJghYT9OF+iNLzJ82AgABnzcE"
    "bVjvEw=="
)
SPEC_PAN = "1234567890123458"


def b64(hex_text: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_text.replace(" ", ""))).decode()


def test_spec_example_1_track2_in_application_template():
    payload = decode_cpm(EXAMPLE_1)
    assert payload.format_indicator == "CPV01"
    assert payload.aid == "A0000000555555"
    assert payload.track2 == SPEC_PAN + "D1912" + "201" + "12345"
    assert payload.pan == SPEC_PAN
    assert payload.expiry == "1912"
    assert payload.label is None and payload.chip_data == b""
    assert authorization_fields(payload) == {22: "072", 35: SPEC_PAN + "D191220112345"}


def test_spec_example_2_common_data_template():
    payload = decode_cpm(EXAMPLE_2)
    assert payload.aid == "A0000000555555"  # the first of its two application templates
    assert payload.label == "Product1"
    assert payload.pan == SPEC_PAN
    assert payload.track2 is None
    assert payload.cardholder_name == "CARDHOLDER/EMV"
    assert payload.language == "ruesdeen"
    # Tag 64 of the example, rebuilt from the values the dongri/emv-qrcode README lists.
    assert payload.chip_data == tlv(
        [
            ("9F10", bytes.fromhex("06010A03000000")),
            ("9F26", bytes.fromhex("584FD385FA234BCC")),
            ("9F36", bytes.fromhex("0001")),
            ("9F37", bytes.fromhex("6D58EF13")),
        ]
    )
    fields = authorization_fields(payload)
    assert fields[2] == SPEC_PAN and 35 not in fields and 14 not in fields
    assert fields[22] == "072" and fields[23] == "001"
    assert fields[55] == "9F100706010A03000000" "9F2608584FD385FA234BCC" "9F36020001" "9F37046D58EF13"


def test_encoding_matches_a_hand_built_payload():
    encoded = encode_cpm(aid="A0000000555555", pan=SPEC_PAN, expiry="1912", label="Product1")
    expected = (
        "85 05 4350563031"  # "CPV01"
        "61 24"
        " 4F 07 A0000000555555"
        " 50 08 50726F6475637431"  # "Product1"
        " 57 0F 1234567890123458 D 1912 201 00000 F"  # 29 nibbles, padded with F
    )
    assert base64.b64decode(encoded) == bytes.fromhex(expected.replace(" ", ""))


def test_round_trip_with_chip_data_and_pan_sequence_number():
    chip = tlv(
        [("9F26", bytes(range(8))), ("9F27", b"\x80"), ("9F36", b"\x00\x2a"), ("82", b"\x19\x80"), ("5F34", b"\x02")]
    )
    encoded = encode_cpm(
        aid="A0000000031010",
        pan="4761739001010010",
        expiry="2712",
        label="VISA",
        cardholder_name="TEST/CARD",
        chip_data=chip,
    )
    payload = decode_cpm(encoded)
    assert (payload.aid, payload.label, payload.cardholder_name) == ("A0000000031010", "VISA", "TEST/CARD")
    assert (payload.pan, payload.expiry) == ("4761739001010010", "2712")
    assert payload.chip_data == chip
    assert authorization_fields(payload) == {
        22: "072",
        35: "4761739001010010D271220100000",
        23: "002",
        55: chip.hex().upper(),
    }


@settings(max_examples=100, deadline=None)
@given(
    pan=st.text("0123456789", min_size=12, max_size=19),
    year=st.integers(0, 99),
    month=st.integers(1, 12),
    service=st.text("0123456789", min_size=3, max_size=3),
)
def test_round_trip_any_pan_length(pan, year, month, service):
    expiry = f"{year:02d}{month:02d}"
    payload = decode_cpm(encode_cpm(aid="A000000333010101", pan=pan, expiry=expiry, service_code=service))
    assert payload.pan == pan and payload.expiry == expiry
    assert payload.track2 == f"{pan}D{expiry}{service}00000"
    assert authorization_fields(payload)[35] == payload.track2


def test_pan_sequence_number_outside_the_chip_template_still_reaches_field_55():
    payload = decode_cpm(b64("85 05 4350563031 61 17 4F 07 A0000000555555 5A 08 1234567890123458 5F34 01 01"))
    assert payload.chip_data == bytes.fromhex("5F340101")
    assert authorization_fields(payload)[23] == "001"


def test_expiry_from_5f24_and_last_four_digits():
    payload = decode_cpm(
        b64("85 05 4350563031 61 1E 4F 07 A0000000555555 5A 08 1234567890123458 5F24 03 301231 9F25 02 3458")
    )
    assert payload.expiry == "3012" and payload.pan_last4 == "3458"
    assert authorization_fields(payload) == {22: "072", 2: SPEC_PAN, 14: "3012"}


def test_truncated_payload_names_the_tag_and_offset():
    data = base64.b64decode(EXAMPLE_1)[:-3]
    with pytest.raises(CpmError) as caught:
        decode_cpm(base64.b64encode(data).decode())
    assert caught.value.tag == "61" and caught.value.offset == 7  # 85 05 'CPV01' is 7 bytes
    assert "tag 61 at byte offset 7" in str(caught.value)


def test_truncated_chip_data_inside_a_template_names_the_inner_tag():
    # 85(0) 61(7) 4F(9) 63(18) 9F26(20): the cryptogram claims 8 bytes and has 1.
    with pytest.raises(CpmError) as caught:
        decode_cpm(b64("85 05 4350563031 61 0F 4F 07 A0000000555555 63 04 9F26 08 11"))
    assert caught.value.tag == "9F26" and caught.value.offset == 20


def test_missing_format_indicator():
    with pytest.raises(CpmError) as caught:
        decode_cpm(b64("61 09 4F 07 A0000000555555"))
    assert caught.value.tag == "85" and caught.value.offset == 0
    assert "found tag 61" in str(caught.value)


def test_wrong_format_indicator():
    with pytest.raises(CpmError) as caught:
        decode_cpm(b64("85 05 4350563032 61 09 4F 07 A0000000555555"))  # "CPV02"
    assert caught.value.tag == "85" and caught.value.offset == 0
    assert "CPV02" in str(caught.value) and "CPV01" in str(caught.value)


def test_missing_application_template():
    with pytest.raises(CpmError) as caught:
        decode_cpm(b64("85 05 4350563031"))
    assert caught.value.tag == "61" and caught.value.offset == 7


@pytest.mark.parametrize("garbage", ["not base64!", "hQVDUFYwMWE", "hQVD\u00e9", "   "])
def test_base64_garbage(garbage):
    with pytest.raises(CpmError) as caught:
        decode_cpm(garbage)
    assert caught.value.offset == "base64"
    assert "base64" in str(caught.value)


def test_bad_track2_is_named_without_showing_it():
    # 57 at offset 18 holds a PAN with no 'D' separator.
    with pytest.raises(CpmError) as caught:
        decode_cpm(b64("85 05 4350563031 61 13 4F 07 A0000000555555 57 08 1234567890123458"))
    assert caught.value.tag == "57" and caught.value.offset == 18
    assert SPEC_PAN not in str(caught.value)


def test_non_bcd_pan_is_named_without_showing_it():
    with pytest.raises(CpmError) as caught:
        decode_cpm(b64("85 05 4350563031 61 13 4F 07 A0000000555555 5A 08 12345678901234AB"))
    assert caught.value.tag == "5A" and caught.value.offset == 18
    assert "1234567890" not in str(caught.value)


@pytest.mark.parametrize(
    "kwargs, tag",
    [
        ({"pan": "12345"}, "57"),
        ({"expiry": "2913"}, "57"),
        ({"aid": "A000"}, "4F"),
        ({"label": "Ünïcode"}, "50"),
        ({"chip_data": b"\x9f\x26\x08\x01"}, "63"),
    ],
)
def test_encode_refuses_bad_parameters(kwargs, tag):
    arguments = {"aid": "A0000000555555", "pan": "4761739001010010", "expiry": "2712", **kwargs}
    with pytest.raises(CpmError) as caught:
        encode_cpm(**arguments)
    assert caught.value.tag == tag
    assert "4761739001010010" not in str(caught.value)


def test_repr_and_str_hide_pan_and_track2():
    payload = decode_cpm(EXAMPLE_1)
    for text in (repr(payload), str(payload)):
        assert SPEC_PAN not in text
        assert "D1912" not in text
    assert payload.masked_pan() == "123456******3458"
    assert "CPV01" in repr(payload)  # the repr still says what it is


def test_no_pan_means_no_authorization():
    payload = decode_cpm(b64("85 05 4350563031 61 09 4F 07 A0000000555555"))
    with pytest.raises(CpmError):
        authorization_fields(payload)
