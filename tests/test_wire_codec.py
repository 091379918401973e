"""The codec: exact round trips for every built-in dialect, and errors that
say which field, which byte and what was expected."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_strategies import DATA_FIELDS, messages

from possim.wire.codec import Codec, CodecError
from possim.wire.dialect import builtin_names, load_dialect
from possim.wire.message import Message

DIALECTS = ["iso87ascii", "iso87binary", "cup"]
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIDE_PROPERTY = settings(PROPERTY, max_examples=75)
"""Fewer examples where the round trip above already covers the field space."""

PAN = "6228480010000000017"
PURCHASE = Message("0200", {2: PAN, 3: "000000", 11: "000123", 41: "TID00001"})


def codec(name: str) -> Codec:
    return Codec(load_dialect(name))


def test_every_builtin_dialect_is_covered():
    assert sorted(DIALECTS) == builtin_names()


# --- round trips -------------------------------------------------------------


@pytest.mark.parametrize("name", DIALECTS)
@PROPERTY
@given(data=st.data())
def test_decode_inverts_encode(name, data):
    c = codec(name)
    message = data.draw(messages(c.dialect))
    encoded = c.encode(message)
    assert c.decode(encoded) == message
    assert c.encode(c.decode(encoded)) == encoded


@pytest.mark.parametrize("name", DIALECTS)
def test_every_field_at_its_maximum_length_round_trips(name):
    """One message carrying all 126 data fields, each as long as the dialect allows."""
    c = codec(name)
    fields = {}
    for n in DATA_FIELDS:
        entry = c.dialect.spec[str(n)]
        size = entry["max_len"]
        fields[n] = {
            "b": "AB" * size,
            "n": "7" * size,
            "z": ("9" * (size - 1) + "D")[-size:],
            "xn": "D" + "1" * (size - 1),
        }.get(entry.get("type"), "中" * (size // 2) if entry["data_enc"] == "gbk" else "x" * size)
    message = Message("0320", fields)
    assert c.decode(c.encode(message)) == message


def test_cup_packs_what_the_unionpay_layout_says():
    """BCD MTI, binary bitmap, left-aligned BCD n3 (22), ASCII 49, BCD LLVAR PAN counted in digits,
    BCD LLLVAR 60 counted in digits, GBK 43."""
    c = codec("cup")
    name = "测试商户" + " " * 32
    message = Message("0200", {2: PAN, 22: "021", 43: name, 49: "156", 60: "22000001000"})
    data = c.encode(message)
    assert data[:2] == bytes.fromhex("0200")
    bitmap = int.from_bytes(data[2:10], "big")
    assert [n for n in range(1, 65) if bitmap >> (64 - n) & 1] == [2, 22, 43, 49, 60]
    at = 10
    assert data[at : at + 11] == bytes.fromhex("19" + PAN + "0")  # LL = 19 digits, padded right
    at += 11
    assert data[at : at + 2] == bytes.fromhex("0210")  # n3 left-aligned, trailing 0
    at += 2
    assert data[at : at + 40] == name.encode("gbk")
    at += 40
    assert data[at : at + 3] == b"156"
    at += 3
    assert data[at:] == bytes.fromhex("0011" + "22000001000" + "0")  # LLL = 11 digits
    assert c.decode(data) == message


def test_iso87binary_pads_odd_fixed_numerics_on_the_left():
    data = codec("iso87binary").encode(Message("0200", {22: "021"}))
    assert data[-2:] == bytes.fromhex("0021")


# --- encode errors -----------------------------------------------------------


@pytest.mark.parametrize(
    "message, field, words",
    [
        (Message("200", {}), "t", "4 digits"),
        (Message("02X0", {}), "t", "4 digits"),
        (Message("0200", {3: "00000A"}), "3", "digits"),
        (Message("0200", {3: "0000"}), "3", "expecting 6"),
        (Message("0200", {2: "1" * 20}), "2", "maximum 19"),
        (Message("0200", {28: "X00000100"}), "28", "C or D"),
        (Message("0200", {65: "00" * 8}), "65", "other than 65"),
        (Message("0200", {1: "00" * 8}), "1", "2..128"),
        (Message("0200", {129: "00"}), "129", "2..128"),
        (Message("0200", {11: 123}), "11", "text"),
        (Message("0200", {52: "ABC"}), "52", "hex"),
    ],
)
def test_encode_refuses_with_the_field_named(message, field, words):
    with pytest.raises(CodecError) as caught:
        codec("iso87binary").encode(message)
    assert caught.value.field == field
    assert words in caught.value.expected
    assert caught.value.offset is None


def test_packed_track_data_needs_d_as_separator():
    with pytest.raises(CodecError) as caught:
        codec("cup").encode(Message("0200", {35: PAN + "=3012101"}))
    assert caught.value.field == "35"
    assert "D separators" in caught.value.expected
    assert codec("iso87ascii").decode(codec("iso87ascii").encode(Message("0200", {35: PAN + "=3012101"})))


def test_encode_errors_never_quote_the_value():
    bad_pan = "62284800100000X0017"
    with pytest.raises(CodecError) as caught:
        codec("iso87ascii").encode(Message("0200", {2: bad_pan}))
    assert "character 15 of 19" in str(caught.value)
    assert "6228480010" not in str(caught.value)


# --- decode errors: field, offset, expected ----------------------------------
#
# Layouts of PURCHASE (offsets computed by hand from the dialect tables):
#   iso87ascii:  MTI 0..4 · bitmap 4..20 · 2: LL "19" 20..22 + PAN 22..41 · 3: 41..47 · 11: 47..53 · 41: 53..61
#   iso87binary: MTI 0..2 · bitmap 2..10 · 2: LL 10 + 10 BCD bytes 11..21 · 3: 21..24 · 11: 24..27 · 41: 27..35

ASCII_LAYOUT = {"2": 20, "3": 41, "11": 47, "41": 53, "end": 61}
BINARY_LAYOUT = {"2": 10, "3": 21, "11": 24, "41": 27, "end": 35}


def test_layouts_match_the_encoder():
    assert len(codec("iso87ascii").encode(PURCHASE)) == ASCII_LAYOUT["end"]
    assert len(codec("iso87binary").encode(PURCHASE)) == BINARY_LAYOUT["end"]
    assert codec("iso87binary").encode(PURCHASE)[27:35] == b"TID00001"


def decode_error(name_or_codec: str | Codec, data: bytes) -> CodecError:
    c = name_or_codec if isinstance(name_or_codec, Codec) else codec(name_or_codec)
    with pytest.raises(CodecError) as caught:
        c.decode(data)
    return caught.value


def replace(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


def test_non_digit_in_ascii_numeric_names_the_byte():
    data = replace(codec("iso87ascii").encode(PURCHASE), ASCII_LAYOUT["3"] + 2, b"X")
    error = decode_error("iso87ascii", data)
    assert (error.field, error.offset) == ("3", ASCII_LAYOUT["3"] + 2)
    assert "digits" in error.expected and "character 3 of 6" in error.expected


def test_non_digit_nibble_in_bcd_numeric_names_the_byte():
    data = replace(codec("iso87binary").encode(PURCHASE), BINARY_LAYOUT["11"] + 1, b"\x0a")
    error = decode_error("iso87binary", data)
    assert (error.field, error.offset) == ("11", BINARY_LAYOUT["11"] + 1)
    assert "character 4 of 6" in error.expected


def test_non_digit_nibble_in_left_padded_bcd_counts_the_pad():
    # field 22 n3 in iso87binary is 0x0D 0x21: digits "D21" → the D is in the first byte
    good = codec("iso87binary").encode(Message("0200", {22: "021"}))
    error = decode_error("iso87binary", good[:-2] + bytes.fromhex("0D21"))
    assert (error.field, error.offset) == ("22", len(good) - 2)


def test_bad_pad_nibble_is_a_field_error():
    good = codec("cup").encode(Message("0200", {22: "021"}))  # 0x02 0x10
    error = decode_error("cup", good[:-1] + b"\x1f")
    assert error.field == "22"
    assert error.offset == len(good) - 2


def test_bad_ascii_length_digits():
    data = replace(codec("iso87ascii").encode(PURCHASE), ASCII_LAYOUT["2"], b"1X")
    error = decode_error("iso87ascii", data)
    assert (error.field, error.offset) == ("2", ASCII_LAYOUT["2"])
    assert "length" in error.expected


@pytest.mark.parametrize("prefix", [b" 9", b"+9"])
def test_ascii_length_must_be_plain_digits(prefix):
    """int() would read ' 9' and '+9' as 9; a length prefix is digits only."""
    c = codec("iso87ascii")
    good = c.encode(Message("0200", {2: "123456789"}))
    error = decode_error("iso87ascii", replace(good, 20, prefix))
    assert (error.field, error.offset) == ("2", 20)
    assert error.expected == "expected digits in the length prefix"
    assert error.partial == Message("0200", {})


def test_bad_bcd_length_digits():
    data = replace(codec("iso87binary").encode(PURCHASE), BINARY_LAYOUT["2"], b"\x1a")
    error = decode_error("iso87binary", data)
    assert (error.field, error.offset) == ("2", BINARY_LAYOUT["2"])
    assert "BCD" in error.expected


def test_length_above_maximum():
    data = replace(codec("iso87binary").encode(PURCHASE), BINARY_LAYOUT["2"], b"\x20")
    error = decode_error("iso87binary", data)
    assert (error.field, error.offset) == ("2", BINARY_LAYOUT["2"])
    assert "maximum 19" in error.expected


@pytest.mark.parametrize("name, layout", [("iso87ascii", ASCII_LAYOUT), ("iso87binary", BINARY_LAYOUT)])
def test_truncated_in_the_last_field_keeps_mti_and_stan(name, layout):
    data = codec(name).encode(PURCHASE)[:-3]
    error = decode_error(name, data)
    assert (error.field, error.offset) == ("41", layout["41"])
    assert "expecting 8" in error.expected
    assert error.partial.mti == "0200"
    assert error.partial.fields == {2: PAN, 3: "000000", 11: "000123"}
    assert "41" not in error.spans and error.spans["11"] == (layout["11"], layout["41"])


@pytest.mark.parametrize("name", DIALECTS)
@SIDE_PROPERTY
@given(data=st.data())
def test_any_truncation_after_the_stan_recovers_mti_and_stan(name, data):
    c = codec(name)
    message = data.draw(messages(c.dialect, required=(11, 41)))
    encoded = c.encode(message)
    end_of_stan = c.spans(encoded)["11"][1]
    cut = data.draw(st.integers(end_of_stan, len(encoded) - 1))
    with pytest.raises(CodecError) as caught:
        c.decode(encoded[:cut])
    error = caught.value
    assert error.partial.mti == message.mti
    assert error.partial[11] == message[11]
    assert int(error.field) > 11
    assert end_of_stan <= error.offset <= cut
    # what partial holds is what was sent, never the half-read field
    assert all(message[n] == v for n, v in error.partial.fields.items())
    assert int(error.field) not in error.partial


@pytest.mark.parametrize("name, layout", [("iso87ascii", ASCII_LAYOUT), ("iso87binary", BINARY_LAYOUT)])
def test_extra_trailing_bytes(name, layout):
    data = codec(name).encode(PURCHASE) + b"\x00\x01\x02"
    error = decode_error(name, data)
    assert (error.field, error.offset) == ("41", layout["end"])
    assert "3 more bytes" in error.expected
    assert error.partial == PURCHASE


@pytest.mark.parametrize("name, bad", [("iso87ascii", b"02X0"), ("iso87binary", b"\x02\xa0"), ("cup", b"\x02\x0b")])
def test_bad_mti(name, bad):
    good = codec(name).encode(PURCHASE)
    error = decode_error(name, bad + good[len(bad) :])
    assert (error.field, error.offset) == ("t", 0)
    assert error.partial is None
    assert str(error).startswith("MTI at byte offset 0")


def test_bad_mti_is_reported_before_a_later_fault():
    good = codec("iso87binary").encode(PURCHASE)
    error = decode_error("iso87binary", b"\x02\xa0" + good[2:-1])
    assert (error.field, error.offset) == ("t", 0)


@pytest.mark.parametrize("name", DIALECTS)
def test_message_shorter_than_an_mti(name):
    error = decode_error(name, b"\x02")
    assert (error.field, error.offset) == ("t", 0)


def test_truncated_bitmap():
    error = decode_error("iso87ascii", b"02007020")
    assert (error.field, error.offset) == ("p", 4)
    assert error.partial == Message("0200", {})


def test_ascii_bitmap_must_be_hex():
    error = decode_error("iso87ascii", b"0200" + b"70 0000000000000" + b"0" * 20)
    assert error.field == "p"


def test_non_ascii_byte_in_text_field_names_that_byte():
    data = replace(codec("iso87binary").encode(PURCHASE), BINARY_LAYOUT["41"] + 5, b"\xff")
    error = decode_error("iso87binary", data)
    assert (error.field, error.offset) == ("41", BINARY_LAYOUT["41"] + 5)
    assert error.partial.fields == {2: PAN, 3: "000000", 11: "000123"}


def test_bad_field_is_dropped_from_partial_but_later_fields_kept():
    data = replace(codec("iso87ascii").encode(PURCHASE), ASCII_LAYOUT["3"], b"A")
    error = decode_error("iso87ascii", data)
    assert error.field == "3"
    assert error.partial.fields == {2: PAN, 11: "000123", 41: "TID00001"}
    assert "3" not in error.spans


def test_bad_stan_is_not_offered_as_partial():
    data = replace(codec("iso87ascii").encode(PURCHASE), ASCII_LAYOUT["11"] + 5, b"?")
    error = decode_error("iso87ascii", data)
    assert (error.field, error.offset) == ("11", ASCII_LAYOUT["11"] + 5)
    assert 11 not in error.partial


@pytest.mark.parametrize("name", ["iso87ascii", "iso87binary"])
def test_bit_65_is_refused_not_read_as_a_tertiary_bitmap(name):
    """pyiso8583 reads bit 65 as 'a third bitmap follows' and then looks up fields 129..192."""
    c = codec(name)
    good = c.encode(Message("0200", {3: "000000", 70: "301", 11: "000001"}))
    mti_size, bitmap_size = (4, 16) if name == "iso87ascii" else (2, 8)
    secondary = mti_size + bitmap_size
    if name == "iso87ascii":
        flagged = replace(good, secondary, b"C")  # first hex digit of the secondary bitmap: 0x4 -> 0xC
    else:
        flagged = replace(good, secondary, bytes([good[secondary] | 0x80]))
    error = decode_error(name, flagged)
    assert (error.field, error.offset) == ("65", secondary)
    assert error.partial == Message("0200", {})


def test_bit_for_a_field_the_dialect_does_not_define(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\n"
        "fields:\n"
        "  h: {data_enc: ascii, len_enc: ascii, len_type: 0, max_len: 0}\n"
        "  t: {data_enc: ascii, len_enc: ascii, len_type: 0, max_len: 4}\n"
        "  p: {data_enc: ascii, len_enc: ascii, len_type: 0, max_len: 16}\n"
        "  '3': {type: n, data_enc: ascii, len_enc: ascii, len_type: 0, max_len: 6}\n"
        "  '11': {type: n, data_enc: ascii, len_enc: ascii, len_type: 0, max_len: 6}\n",
        encoding="utf-8",
    )
    c = Codec(load_dialect(str(path)))
    good = c.encode(Message("0200", {3: "000000", 11: "000042"}))
    assert good == b"0200" + b"2020000000000000" + b"000000000042"
    bit_4 = replace(good, 4, b"3")  # 0x3 = bits 3 and 4
    error = decode_error(c, bit_4)
    assert (error.field, error.offset) == ("4", 26)
    assert "dialect tiny defines" in error.expected
    with pytest.raises(CodecError) as caught:
        c.encode(Message("0200", {4: "000000000100"}))
    assert caught.value.field == "4"


@pytest.mark.parametrize("name", DIALECTS)
@SIDE_PROPERTY
@given(data=st.data())
def test_damaged_messages_fail_only_with_codec_errors(name, data):
    """Flip, cut or add bytes anywhere: the result is a Message or a CodecError pointing inside the data."""
    c = codec(name)
    encoded = bytearray(c.encode(data.draw(messages(c.dialect, max_fields=6))))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(encoded) - 1))
        encoded[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        encoded = encoded[: data.draw(st.integers(0, len(encoded)))]
    try:
        c.decode(bytes(encoded))
    except CodecError as error:
        assert error.offset is not None and 0 <= error.offset <= len(encoded)
        assert error.field in {"t", "p", "1"} or 2 <= int(error.field) <= 192


@pytest.mark.parametrize("name", DIALECTS)
@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=120))
def test_random_bytes_fail_only_with_codec_errors(name, raw):
    try:
        codec(name).decode(raw)
    except CodecError as error:
        assert error.offset is not None and 0 <= error.offset <= len(raw)
