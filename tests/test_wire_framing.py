"""Framing: every length header kind, TPDU and header envelopes, and stream
reassembly that survives partial and coalesced reads but never trusts a
length it cannot honour."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from possim.wire.framing import (
    LENGTH_KINDS,
    Envelope,
    FrameReader,
    Framing,
    FramingError,
    decode_length,
    encode_length,
    frame,
    split_envelope,
)

TPDU = bytes.fromhex("6000120034")
HEADER = bytes.fromhex("603100000000")
BODY = bytes(range(1, 45)) * 7  # 308 bytes = 0x134


@pytest.mark.parametrize(
    "kind, includes, expected",
    [
        ("binary2", False, b"\x01\x34"),
        ("binary2", True, b"\x01\x36"),
        ("bcd2", False, b"\x03\x08"),
        ("bcd2", True, b"\x03\x10"),
        ("ascii4", False, b"0308"),
        ("ascii4", True, b"0312"),
        ("hex4", False, b"0134"),
        ("hex4", True, b"0138"),
    ],
)
def test_length_headers(kind, includes, expected):
    framing = Framing(kind, includes)
    assert encode_length(framing, len(BODY)) == expected
    assert decode_length(framing, expected) == len(BODY)
    assert frame(framing, BODY) == expected + BODY
    assert FrameReader(framing).feed(expected + BODY) == [BODY]


def test_lengths_that_do_not_fit():
    with pytest.raises(FramingError):
        encode_length(Framing("bcd2"), 10_000)
    with pytest.raises(FramingError):
        encode_length(Framing("binary2", True), 0xFFFE)
    assert encode_length(Framing("binary2"), 0xFFFF) == b"\xff\xff"


def test_tpdu_and_header_are_framed_and_split():
    framing = Framing("binary2", tpdu=TPDU, header=HEADER)
    data = frame(framing, BODY)
    assert data == (len(BODY) + 11).to_bytes(2, "big") + TPDU + HEADER + BODY
    [payload] = FrameReader(framing).feed(data)
    envelope, body = split_envelope(framing, payload)
    assert envelope == Envelope(TPDU, HEADER)
    assert body == BODY


def test_explicit_envelope_wins_over_the_default():
    framing = Framing("binary2", tpdu=TPDU, header=HEADER)
    other = Envelope(bytes.fromhex("6000990088"), bytes.fromhex("600000000000"))
    [payload] = FrameReader(framing).feed(frame(framing, b"\x02\x00", other))
    assert split_envelope(framing, payload) == (other, b"\x02\x00")


def test_no_tpdu():
    framing = Framing("binary2")
    assert framing.envelope_size == 0
    assert frame(framing, b"\x08\x00") == b"\x00\x02\x08\x00"
    assert split_envelope(framing, b"\x08\x00") == (Envelope(None, b""), b"\x08\x00")


def test_reply_swaps_tpdu_destination_and_source():
    request = Envelope(bytes.fromhex("6000120034"), HEADER)
    reply = request.reply()
    assert reply.tpdu == bytes.fromhex("6000340012")
    assert reply.header == HEADER
    assert reply.reply() == request
    assert Envelope(None, HEADER).reply() == Envelope(None, HEADER)


def test_payload_shorter_than_its_envelope():
    framing = Framing("binary2", tpdu=TPDU, header=HEADER)
    with pytest.raises(FramingError) as caught:
        split_envelope(framing, TPDU + HEADER[:3])
    assert "11 bytes" in str(caught.value)


def test_tpdu_must_start_with_60():
    with pytest.raises(ValueError):
        Framing(tpdu=bytes.fromhex("7000000000"))
    with pytest.raises(ValueError):
        Framing(tpdu=bytes.fromhex("60000000"))
    with pytest.raises(ValueError):
        Framing("binary4")  # type: ignore[arg-type]


# --- stream reassembly -------------------------------------------------------


@pytest.mark.parametrize("kind", LENGTH_KINDS)
def test_byte_by_byte(kind):
    framing = Framing(kind, tpdu=TPDU)
    data = frame(framing, BODY)
    reader = FrameReader(framing)
    got = []
    for i in range(len(data)):
        got += reader.feed(data[i : i + 1])
        assert reader.pending == (0 if i == len(data) - 1 else i + 1)
    assert got == [TPDU + BODY]


def test_several_frames_in_one_feed_and_a_frame_split_across_feeds():
    framing = Framing("binary2")
    stream = frame(framing, b"one") + frame(framing, b"two") + frame(framing, b"three")
    reader = FrameReader(framing)
    assert reader.feed(stream[:12]) == [b"one", b"two"]
    assert reader.pending == 2
    assert reader.feed(stream[12:14]) == []
    assert reader.feed(stream[14:]) == [b"three"]
    assert reader.pending == 0


def test_empty_feed_returns_nothing():
    assert FrameReader(Framing()).feed(b"") == []


def test_oversize_length_is_refused_before_waiting_for_it():
    framing = Framing("binary2")
    reader = FrameReader(framing)
    assert reader.feed(frame(framing, b"ok")) == [b"ok"]
    with pytest.raises(FramingError) as caught:
        reader.feed(b"\xff\xff" + b"x" * 10)
    assert caught.value.offset == 4
    assert "65535" in str(caught.value) and "8192" in str(caught.value)


def test_max_frame_is_a_setting():
    framing = Framing("binary2", max_frame=16)
    assert FrameReader(framing).feed(frame(framing, b"x" * 16)) == [b"x" * 16]
    with pytest.raises(FramingError) as caught:
        FrameReader(framing).feed(b"\x00\x11")
    assert caught.value.offset == 0


def test_zero_length_frame_is_refused():
    framing = Framing("binary2")
    reader = FrameReader(framing)
    reader.feed(frame(framing, b"abc"))
    with pytest.raises(FramingError) as caught:
        reader.feed(b"\x00\x00")
    assert caught.value.offset == 5
    assert "empty" in str(caught.value)


def test_length_counting_the_header_smaller_than_the_header():
    with pytest.raises(FramingError) as caught:
        FrameReader(Framing("binary2", True)).feed(b"\x00\x01")
    assert "shorter than the header" in str(caught.value)
    with pytest.raises(FramingError):
        FrameReader(Framing("ascii4", True)).feed(b"0004")  # counts only itself: an empty frame


@pytest.mark.parametrize(
    "kind, header",
    [
        ("ascii4", b"00A1"),
        ("ascii4", b" 123"),
        ("ascii4", b"+123"),
        ("ascii4", b"1_23"),
        ("ascii4", b"\xd9\xa1\xd9\xa2"),  # Arabic-Indic digits are not ASCII digits
        ("bcd2", b"\x0a\x12"),
        ("bcd2", b"\x00\xf1"),
        ("hex4", b"00G1"),
        ("hex4", b"0x1F"),
        ("hex4", b"+0FF"),
        ("hex4", b" 0FF"),
    ],
)
def test_non_digit_length_headers(kind, header):
    framing = Framing(kind)
    reader = FrameReader(framing)
    good = frame(framing, b"hello")
    assert reader.feed(good) == [b"hello"]
    with pytest.raises(FramingError) as caught:
        reader.feed(header + b"x" * 300)
    assert caught.value.offset == len(good)
    assert kind in str(caught.value)
    assert f"at byte offset {len(good)}" in str(caught.value)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(LENGTH_KINDS),
    includes=st.booleans(),
    with_tpdu=st.booleans(),
    payloads=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    cuts=st.lists(st.integers(1, 64), min_size=1, max_size=40),
)
def test_any_stream_comes_back_exactly(kind, includes, with_tpdu, payloads, cuts):
    """Frame payloads, concatenate, feed in arbitrary chunk sizes: the same payloads, in order."""
    framing = Framing(kind, includes, TPDU if with_tpdu else None, HEADER if with_tpdu else b"")
    stream = b"".join(frame(framing, body) for body in payloads)
    reader = FrameReader(framing)
    got, at, i = [], 0, 0
    while at < len(stream):
        size = cuts[i % len(cuts)]
        got += reader.feed(stream[at : at + size])
        at += size
        i += 1
    assert [split_envelope(framing, p)[1] for p in got] == payloads
    assert reader.pending == 0
