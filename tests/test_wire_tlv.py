"""BER-TLV as EMV field 55 carries it: exact round trips and malformed data
reported with the byte offset where it goes wrong."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from possim.wire.tlv import TlvError, encode, parse


ONE_BYTE_TAGS = st.integers(0x01, 0xFE).filter(lambda b: b & 0x1F != 0x1F).map(lambda b: f"{b:02X}")
TWO_BYTE_TAGS = st.tuples(st.integers(0, 0xFF).map(lambda b: b | 0x1F), st.integers(0x01, 0x7F)).filter(
    lambda t: t[0] != 0xFF
).map(lambda t: f"{t[0]:02X}{t[1]:02X}")
THREE_BYTE_TAGS = st.tuples(st.sampled_from([0x1F, 0x5F, 0x9F, 0xDF]), st.integers(0x81, 0xFF), st.integers(0, 0x7F)).map(
    lambda t: bytes(t).hex().upper()
)
TAGS = st.one_of(ONE_BYTE_TAGS, TWO_BYTE_TAGS, THREE_BYTE_TAGS)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.tuples(TAGS, st.one_of(st.binary(max_size=20), st.binary(min_size=120, max_size=300))), max_size=8))
def test_parse_inverts_encode(items):
    assert parse(encode(items)) == items


def test_known_encoding():
    data = encode([("9F26", bytes.fromhex("1122334455667788")), ("5A", bytes.fromhex("6228480010000000017F"))])
    assert data.hex().upper() == "9F26081122334455667788" + "5A0A6228480010000000017F"


@pytest.mark.parametrize("size, length_bytes", [(0x7F, "7F"), (0x80, "8180"), (0xFF, "81FF"), (0x100, "820100")])
def test_long_lengths(size, length_bytes):
    data = encode([("71", b"\x00" * size)])
    assert data[1 : 1 + len(length_bytes) // 2].hex().upper() == length_bytes
    assert parse(data) == [("71", b"\x00" * size)]


def test_padding_between_objects_is_skipped():
    assert parse(bytes.fromhex("00" "5A0112" "FF" "9F360200 01".replace(" ", "") + "00")) == [
        ("5A", b"\x12"),
        ("9F36", b"\x00\x01"),
    ]


@pytest.mark.parametrize(
    "hexdata, offset, words",
    [
        ("9F", 0, "tag 9F has no length"),
        ("5A", 0, "tag 5A has no length"),
        ("9F26", 0, "tag 9F26 has no length"),
        ("5A0501", 0, "tag 5A wants 5 bytes, 1 left"),
        ("5A8400000001", 1, "bad length"),
        ("5A80", 1, "bad length"),
        ("5A81", 1, "bad length"),
        ("5A0111" "570900", 3, "tag 57 wants 9 bytes, 1 left"),
        ("5A0111" "9F", 3, "tag 9F has no length"),
    ],
)
def test_malformed(hexdata, offset, words):
    with pytest.raises(TlvError) as caught:
        parse(bytes.fromhex(hexdata))
    assert caught.value.offset == offset
    assert words in str(caught.value)
    assert f"at byte offset {offset}" in str(caught.value)


@pytest.mark.parametrize("tag", ["", "9F", "5A5A", "00", "FF", "ZZ", "9F80", "9F0102"])
def test_encode_refuses_tags_parse_would_read_differently(tag):
    with pytest.raises(TlvError) as caught:
        encode([("5A", b"\x01"), (tag, b"\x02")])
    assert caught.value.offset == 3
