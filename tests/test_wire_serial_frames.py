"""Serial frames: STX · (length) · data · ETX · LRC read by state machine, so a
check byte equal to ETX, ACK or STX, binary data holding STX/ETX, split and
coalesced reads, noise and bad frames all come out right."""

from __future__ import annotations

import random
from dataclasses import replace
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from possim.wire.link_profile import LinkProfile, LinkProfileError, builtin_link_profiles, load_link_profile
from possim.wire.serial_frames import (
    BadFrame,
    Control,
    Frame,
    FrameReader,
    Noise,
    check_payload_fits,
    encode_frame,
)

STX, ETX, EOT, ENQ, ACK, NAK = 0x02, 0x03, 0x04, 0x05, 0x06, 0x15
PLAIN = load_link_profile("stx-etx-lrc")
BCD = load_link_profile("stx-len-etx-lrc")
ECR = load_link_profile("ecr-7e1")


def inner_length(data: bytes) -> int | None:
    """The ISO frame's 2-byte binary length header says how long the data is."""
    return 2 + int.from_bytes(data[:2], "big") if len(data) >= 2 else None


def with_header(body: bytes) -> bytes:
    return len(body).to_bytes(2, "big") + body


def xor(data: bytes, start: int = 0) -> int:
    """The test's own LRC, kept apart from the code under test."""
    return reduce(lambda a, b: a ^ b, data, start)


def reader_for(profile: LinkProfile, **kwargs) -> FrameReader:
    return FrameReader(profile, inner_length if profile.iso_length_header else None, **kwargs)


def payload_for(profile: LinkProfile, raw: bytes) -> bytes:
    """Data each built-in can carry: ISO frames with their 2-byte header, binary, or 7-bit text."""
    if profile.iso_length_header:
        return with_header(raw)
    if profile.bytesize == 7:
        return bytes(b & 0x7F for b in raw)
    return raw


def feed_bytewise(reader: FrameReader, stream: bytes) -> list:
    events = []
    for i in range(len(stream)):
        events += reader.feed(stream[i : i + 1])
    return merge_noise(events)


def merge_noise(events: list) -> list:
    """Noise is counted per chunk; join neighbouring Noise events to compare streams fed differently."""
    merged: list = []
    for event in events:
        if isinstance(event, Noise) and merged and isinstance(merged[-1], Noise):
            merged[-1] = Noise(merged[-1].count + event.count)
        else:
            merged.append(event)
    return merged


# --- hand-computed frames ----------------------------------------------------


def test_hand_computed_frames():
    # stx-etx-lrc: LRC over 'A', 'B', ETX from 0x00 = 0x41 ^ 0x42 ^ 0x03 = 0x00.
    assert encode_frame(PLAIN, b"AB") == bytes([STX, 0x41, 0x42, ETX, 0x00])
    # stx-len-etx-lrc: BCD length 00 02; LRC over 00 02 'A' 'B' ETX = 0x00^0x02^0x41^0x42^0x03 = 0x02 (= STX).
    assert encode_frame(BCD, b"AB") == bytes([STX, 0x00, 0x02, 0x41, 0x42, ETX, 0x02])
    # ecr-7e1: ASCII length "0002"; LRC over STX '0' '0' '0' '2' 'A' 'B' ETX from 0x7F
    # = 0x7F ^ 0x02 ^ (0x30^0x30) ^ (0x30^0x32) ^ (0x41^0x42^0x03) = 0x7F ^ 0x02 ^ 0x00 ^ 0x02 ^ 0x00 = 0x7F.
    assert encode_frame(ECR, b"AB") == bytes([STX]) + b"0002AB" + bytes([ETX, 0x7F])
    # lrc_covers data: 'A' ^ 'B' = 0x03 (= ETX), with no ETX in the sum.
    data_only = LinkProfile(name="data-only", lrc_covers="data")
    assert encode_frame(data_only, b"AB") == bytes([STX, 0x41, 0x42, ETX, 0x03])
    for profile, frame in ((PLAIN, b"\x02AB\x03\x00"), (BCD, b"\x02\x00\x02AB\x03\x02"),
                           (ECR, b"\x020002AB\x03\x7f"), (data_only, b"\x02AB\x03\x03")):
        assert FrameReader(profile).feed(frame) == [Frame(b"AB")]


# --- round trips -------------------------------------------------------------


@pytest.mark.parametrize("name", builtin_link_profiles())
def test_round_trip_every_size_up_to_300(name):
    profile = load_link_profile(name)
    rng = random.Random(name)
    header = 2 if profile.iso_length_header else 0  # an ISO frame always has its 2-byte header
    for size in range(header, 301):
        data = payload_for(profile, bytes(rng.randrange(256) for _ in range(size - header)))
        assert len(data) == size
        wire = encode_frame(profile, data)
        assert wire[0] == STX and wire[-2] == ETX
        assert xor(wire[1:-1], profile.lrc_start) ^ (STX if profile.lrc_covers == "all" else 0) == wire[-1]
        assert reader_for(profile).feed(wire) == [Frame(data)], size
        assert feed_bytewise(reader_for(profile), wire) == [Frame(data)], size


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(builtin_link_profiles()), raws=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
       cut=st.integers(min_value=0))
def test_round_trip_split_and_coalesced(name, raws, cut):
    profile = load_link_profile(name)
    datas = [payload_for(profile, raw) for raw in raws]
    stream = b"".join(encode_frame(profile, data) for data in datas)
    expected = [Frame(data) for data in datas]
    assert reader_for(profile).feed(stream) == expected
    at = cut % (len(stream) + 1)
    reader = reader_for(profile)
    assert reader.feed(stream[:at]) + reader.feed(stream[at:]) == expected


def test_text_round_trip_without_inner_length():
    """With no inner_length, a no-length profile ends the data at the first ETX: fine for text."""
    for size in range(301):
        data = bytes(0x20 + i % 0x5F for i in range(size))
        assert FrameReader(PLAIN).feed(encode_frame(PLAIN, data)) == [Frame(data)]


# --- check bytes that look like control bytes --------------------------------


def test_check_byte_equal_to_etx_and_ack_without_length():
    # 'A' ^ 'A' ^ ETX = 0x03: the check byte is ETX.
    assert encode_frame(PLAIN, b"AA") == bytes([STX, 0x41, 0x41, ETX, ETX])
    # 'A' ^ 'D' ^ ETX = 0x41 ^ 0x44 ^ 0x03 = 0x06: the check byte is ACK.
    assert encode_frame(PLAIN, b"AD") == bytes([STX, 0x41, 0x44, ETX, ACK])
    stream = encode_frame(PLAIN, b"AA") + encode_frame(PLAIN, b"AD") + bytes([ACK])
    expected = [Frame(b"AA"), Frame(b"AD"), Control("ACK")]
    assert FrameReader(PLAIN).feed(stream) == expected
    assert feed_bytewise(FrameReader(PLAIN), stream) == expected


@pytest.mark.parametrize("name", builtin_link_profiles())
@pytest.mark.parametrize("target", [ETX, ACK, STX, NAK, EOT, ENQ])
def test_check_byte_equal_to_a_control_byte_found_by_search(name, target):
    profile = load_link_profile(name)
    found = None
    for a in range(0x20, 0x7F):
        for b in range(0x20, 0x7F):
            body = bytes([a, b])
            data = with_header(body) if profile.iso_length_header else body
            length = {"none": b"", "bcd2": bytes.fromhex(f"{len(data):04d}"), "ascii4": b"%04d" % len(data)}
            covered = length[profile.length] + data + bytes([ETX])
            if profile.lrc_covers == "all":
                covered = bytes([STX]) + covered
            if xor(covered, profile.lrc_start) == target:
                found = data
                break
        if found:
            break
    assert found is not None
    wire = encode_frame(profile, found)
    assert wire[-1] == target
    other = payload_for(profile, b"\x00\x03zz")
    stream = wire + encode_frame(profile, other)
    assert reader_for(profile).feed(stream) == [Frame(found), Frame(other)]
    assert feed_bytewise(reader_for(profile), stream) == [Frame(found), Frame(other)]


def test_binary_iso_data_holding_stx_and_etx():
    body = bytes([0x02, 0x03, 0x03, 0x06, 0x15, 0x04, 0x05, 0x02, 0xFF, 0x00, 0x03])
    data = with_header(body)
    wire = encode_frame(PLAIN, data)
    assert ETX in wire[1:-2] and STX in wire[1:-2]  # a reader scanning to the first ETX would cut it short
    for stream in (wire + wire, bytes([ACK]) + wire):
        reader = FrameReader(PLAIN, inner_length)
        events = reader.feed(stream)
        assert [e for e in events if isinstance(e, Frame)] == [Frame(data)] * stream.count(wire)
        assert feed_bytewise(FrameReader(PLAIN, inner_length), stream) == events
    # A header announcing 0x0300 bytes keeps the reader in the frame past the ETX inside.
    long_body = bytes([0x03]) * 0x300
    long_data = with_header(long_body)
    reader = FrameReader(PLAIN, inner_length)
    assert reader.feed(encode_frame(PLAIN, long_data)[:400]) == []
    assert reader.in_frame


# --- noise, controls and bad frames ------------------------------------------


@pytest.mark.parametrize("byte, kind", [(ACK, "ACK"), (NAK, "NAK"), (EOT, "EOT"), (ENQ, "ENQ")])
def test_lone_control_bytes(byte, kind):
    assert FrameReader(BCD).feed(bytes([byte])) == [Control(kind)]
    assert FrameReader(BCD).feed(b"zz" + bytes([byte]) + b"z") == [Noise(2), Control(kind), Noise(1)]


def test_control_bytes_follow_the_profile():
    odd = LinkProfile(name="odd", ack=0x11, nak=0x12)
    assert FrameReader(odd).feed(bytes([0x11, 0x12, 0x06])) == [Control("ACK"), Control("NAK"), Noise(1)]


def test_garbage_before_and_between_frames():
    one, two = encode_frame(BCD, b"\x01\x02\x03"), encode_frame(BCD, b"hello")
    stream = b"\xff\xfe\x00" + one + b"xy" + two + b"\x80"
    expected = [Noise(3), Frame(b"\x01\x02\x03"), Noise(2), Frame(b"hello"), Noise(1)]
    assert FrameReader(BCD).feed(stream) == expected
    assert feed_bytewise(FrameReader(BCD), stream) == expected


@pytest.mark.parametrize("name", builtin_link_profiles())
def test_every_split_position(name):
    profile = load_link_profile(name)
    datas = [payload_for(profile, raw) for raw in (b"\x00\x05\x03\x02ab\x06", b"xyz", b"\x00\x00")]
    stream = b"#" + bytes([ENQ]) + b"".join(encode_frame(profile, d) + bytes([ACK]) for d in datas) + bytes([EOT])
    expected = reader_for(profile).feed(stream)
    assert expected[:2] == [Noise(1), Control("ENQ")] and expected[-1] == Control("EOT")
    assert [e for e in expected if isinstance(e, Frame)] == [Frame(d) for d in datas]
    for at in range(len(stream) + 1):
        reader = reader_for(profile)
        assert reader.feed(stream[:at]) + reader.feed(stream[at:]) == expected, at
    assert feed_bytewise(reader_for(profile), stream) == expected


@pytest.mark.parametrize("name", builtin_link_profiles())
def test_wrong_check_byte_then_the_next_frame_decodes(name):
    profile = load_link_profile(name)
    data = payload_for(profile, b"\x00\x04ABCD")
    good = encode_frame(profile, data)
    bad = good[:-1] + bytes([good[-1] ^ 0x01])
    events = reader_for(profile).feed(bad + good)
    assert len(events) == 2 and isinstance(events[0], BadFrame) and "check byte" in events[0].reason
    assert events[1] == Frame(data)


def test_missing_etx_and_bad_length_field():
    wire = encode_frame(BCD, b"ABC")
    events = FrameReader(BCD).feed(wire[:-2] + b"X" + encode_frame(BCD, b"ok"))
    assert isinstance(events[0], BadFrame) and "missing ETX" in events[0].reason
    assert events[-1] == Frame(b"ok")
    # A frame whose ETX and check byte never came, then a new frame: its STX where ETX belongs starts it.
    events = FrameReader(BCD).feed(wire[:-2] + encode_frame(BCD, b"ok"))
    assert isinstance(events[0], BadFrame) and events[1:] == [Frame(b"ok")]
    # 0x0A is not a BCD digit pair.
    events = FrameReader(BCD).feed(bytes([STX, 0x0A, 0x00]) + encode_frame(BCD, b"ok"))
    assert isinstance(events[0], BadFrame) and "length field 0A00" in events[0].reason
    assert events[-1] == Frame(b"ok")


def test_oversize_frames_are_refused():
    events = FrameReader(BCD, max_data=10).feed(encode_frame(BCD, b"A" * 11) + encode_frame(BCD, b"B" * 10))
    assert isinstance(events[0], BadFrame) and "oversize" in events[0].reason
    assert events[-1] == Frame(b"B" * 10)
    events = FrameReader(PLAIN, inner_length, max_data=10).feed(encode_frame(PLAIN, with_header(b"A" * 9)))
    assert isinstance(events[0], BadFrame) and "oversize" in events[0].reason
    events = FrameReader(PLAIN, max_data=10).feed(encode_frame(PLAIN, b"A" * 11))
    assert isinstance(events[0], BadFrame) and "10 bytes" in events[0].reason
    assert FrameReader(PLAIN, max_data=10).feed(encode_frame(PLAIN, b"A" * 10)) == [Frame(b"A" * 10)]


def test_in_frame_and_reset():
    reader = FrameReader(BCD)
    wire = encode_frame(BCD, b"ABCD")
    assert not reader.in_frame
    assert reader.feed(wire[:4]) == []
    assert reader.in_frame
    reader.reset()
    assert not reader.in_frame
    # The rest of the dropped frame is noise now; the next frame decodes.
    assert reader.feed(wire[4:] + encode_frame(BCD, b"ok")) == [Noise(len(wire) - 4), Frame(b"ok")]
    assert not reader.in_frame


# --- what a link can carry ---------------------------------------------------


def test_seven_bit_links_carry_text_only():
    check_payload_fits(ECR, bytes(range(0x80)))
    check_payload_fits(BCD, bytes(range(0x100)))
    with pytest.raises(LinkProfileError, match="offset 4"):
        check_payload_fits(ECR, b"0200\x80\xff")
    with pytest.raises(LinkProfileError, match="offset 1"):
        encode_frame(ECR, b"A\xf0")


def test_encode_refuses_what_the_reader_could_not_frame():
    text_only = replace(PLAIN, name="text-only", iso_length_header=False)
    with pytest.raises(ValueError, match="ETX at offset 2"):
        encode_frame(text_only, b"AB\x03")
    with pytest.raises(ValueError, match="10000 bytes does not fit the bcd2"):
        encode_frame(BCD, b"A" * 10_000)
    assert encode_frame(BCD, b"A" * 9999)[1:3] == b"\x99\x99"
