"""The message MAC both ends use, and the sign-on key block: checked against the primitives directly.

The expected MACs are computed here over bytes this file slices itself, with
`retail_mac` / `cup_ecb_mac` (checked against published vectors in
test_hsm_mac.py); the key block against TDES and KCVs from hsm_mock.cipher /
hsm_mock.kcv (published vectors in test_hsm_kcv.py)."""

from __future__ import annotations

import random

import pytest

from possim.hsm_mock.cipher import require_odd_parity, tdes_ecb_decrypt
from possim.hsm_mock.kcv import tdes_kcv
from possim.hsm_mock.key_download import (
    BLOCK_LENGTH, BLOCK_LENGTH_WITH_TRACK_KEY, KeyDownloadError, generate_working_keys, pack,
    parse_tmk, unpack,
)
from possim.hsm_mock.mac import cup_ecb_mac, retail_mac
from possim.hsm_mock.message_mac import MessageMac
from possim.wire.codec import Codec
from possim.wire.dialect import load_dialect
from possim.wire.message import Message

KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TMK = bytes.fromhex("7AD5D57F456ECEC2A2D910736110E579")
OTHER_TMK = bytes.fromhex("1ACDCEA797762F6116C7E9C82C98BF34")
FIELD_90 = "0200000042" + "0615100000" + "0" * 22
MACS = {
    "cup": lambda key, mab: cup_ecb_mac(key, mab).field64,
    "iso87ascii": retail_mac,
    "iso87binary": retail_mac,
}


def purchase() -> Message:
    return Message("0200", {3: "000000", 4: "000000001250", 11: "000042", 41: "10000001",
                            42: "898310048160001", 49: "156"})


@pytest.mark.parametrize("dialect", sorted(MACS))
def test_field_64_is_the_dialects_mac_of_the_bytes_before_it(dialect):
    codec = Codec(load_dialect(dialect))
    message = purchase()
    body = MessageMac(codec).sign(message, KEY)
    assert body[-8:] == MACS[dialect](KEY, body[:-8]) and message[64] == body[-8:].hex().upper()
    assert 128 not in message and MessageMac(codec).field_for(message) == 64
    assert codec.decode(body) == message
    assert MessageMac(codec).verify(body, KEY) is None


def reversal() -> Message:
    return Message("0400", {**purchase().fields, 90: FIELD_90})


@pytest.mark.parametrize("dialect", sorted(MACS))
def test_a_message_with_a_secondary_bitmap_carries_its_mac_in_field_128(dialect):
    # ISO 8583:1987: with a secondary bitmap the MAC is field 128, the last 8 bytes, and 64 is absent.
    assert "128" in load_dialect(dialect).spec  # cup inherits it from iso87binary
    codec = Codec(load_dialect(dialect))
    message = reversal()
    message[64] = "11" * 8  # a stale MAC in the wrong place is dropped
    body = MessageMac(codec).sign(message, KEY)
    assert 64 not in message and message[128] == body[-8:].hex().upper()
    assert body[-8:] == MACS[dialect](KEY, body[:-8])  # these dialects' bodies start at the MTI
    decoded = codec.decode(body)
    assert decoded == message and 64 not in decoded and decoded[90] == FIELD_90
    assert MessageMac(codec).field_for(message) == 128
    assert MessageMac(codec).verify(body, KEY) is None


def test_a_changed_field_90_fails_the_field_128_mac():
    codec = Codec(load_dialect("iso87ascii"))
    mac = MessageMac(codec)
    body = mac.sign(reversal(), KEY)
    for at in (-9, -9 - 41):  # last and first digit of field 90, which sits just before the MAC
        changed = bytearray(body)
        changed[at] ^= 0x01
        assert mac.verify(bytes(changed), KEY) == "MAC (field 128) does not verify", at
    assert mac.verify(codec.encode(reversal()), KEY) == "no MAC (field 128)"


def _old_style(codec: Codec, message: Message) -> bytes:
    """The MAC in field 64 over everything but its own bytes, as this module used to do with field 90 present."""
    body = codec.encode(Message(message.mti, {**message.fields, 64: "00" * 8}))
    start, end = codec.spans(body)["64"]
    return body[:start] + retail_mac(KEY, body[:start] + body[end:]) + body[end:]


def test_a_mac_in_field_64_of_a_message_with_a_secondary_bitmap_is_refused():
    codec = Codec(load_dialect("iso87ascii"))
    mac = MessageMac(codec)
    why = mac.verify(_old_style(codec, reversal()), KEY)
    assert why is not None and "no MAC (field 128)" in why and "not field 64" in why
    signed = reversal()
    body = mac.sign(signed, KEY)
    both = codec.encode(Message("0400", {**signed.fields, 64: "22" * 8}))  # ISO 8583:1987 wants 64 absent
    assert "field 64 is present too" in mac.verify(both, KEY)
    assert mac.verify(body, KEY) is None


def test_re_signing_without_the_secondary_fields_moves_the_mac_back_to_64():
    codec = Codec(load_dialect("iso87ascii"))
    mac = MessageMac(codec)
    message = reversal()
    mac.sign(message, KEY)
    del message.fields[90]
    body = mac.sign(message, KEY)
    assert 128 not in message and 64 in message and body[-8:] == retail_mac(KEY, body[:-8])


def test_without_field_128_the_mac_stays_in_64_and_covers_the_fields_after_it(tmp_path):
    # A dialect cannot drop an inherited field, so build one from scratch with the fields used here.
    spec = load_dialect("iso87ascii").spec
    lines = ["name: no128", "mac: x9.19", "roles:", '  mac: "64"', "fields:"]
    for key in ("h", "t", "p", "1", "3", "4", "11", "41", "42", "49", "64", "90"):
        entry = ", ".join(f"{k}: {v!r}" for k, v in spec[key].items() if k != "desc")
        lines.append(f'  "{key}": {{{entry}}}')
    path = tmp_path / "no128.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    codec = Codec(load_dialect(str(path)))
    assert "128" not in codec.dialect.spec
    mac = MessageMac(codec)
    message = reversal()
    body = mac.sign(message, KEY)
    assert 128 not in message and mac.field_for(message) == 64
    start = 4 + 16 + 16 + 6 + 12 + 6 + 8 + 15 + 3  # MTI, bitmaps, 3, 4, 11, 41, 42, 49 in ASCII
    assert body[start : start + 8] == retail_mac(KEY, body[:start] + body[start + 8 :])
    assert body[start + 8 :] == FIELD_90.encode()
    assert mac.verify(body, KEY) is None
    changed = bytearray(body)
    changed[-1] ^= 0x01
    assert mac.verify(bytes(changed), KEY) == "MAC (field 64) does not verify"


def test_any_changed_byte_or_key_fails_verification():
    codec = Codec(load_dialect("iso87ascii"))
    mac = MessageMac(codec)
    body = mac.sign(purchase(), KEY)
    for at in range(len(body)):
        changed = bytearray(body)
        changed[at] ^= 0x01
        assert mac.verify(bytes(changed), KEY) is not None, at
    assert "does not verify" in mac.verify(body, bytes.fromhex("FEDCBA98765432100123456789ABCDEF"))
    assert mac.verify(codec.encode(purchase()), KEY) == "no MAC (field 64)"


@pytest.mark.parametrize(("code", "length"), [("003", 40), ("004", 60)])
def test_working_keys_round_trip_with_odd_parity(code, length):
    # which sign-on code asks for a track key is the dialect's (cup: 004)
    keys = generate_working_keys(random.Random(7), with_data_key=code == load_dialect("cup").convention("sign_on_track_key_code"))
    present = [keys.pin_key, keys.mac_key] + ([keys.data_key] if code == "004" else [])
    assert (keys.data_key is None) == (code == "003")
    for key in present:
        require_odd_parity(key)
    block = pack(TMK, keys)
    assert len(block) == length == {"003": BLOCK_LENGTH, "004": BLOCK_LENGTH_WITH_TRACK_KEY}[code]
    for index, key in enumerate(present):  # each key under the TMK, then the first 4 bytes of its KCV
        entry = block[20 * index : 20 * index + 20]
        assert tdes_ecb_decrypt(TMK, entry[:16]) == key and entry[16:] == tdes_kcv(key, 4)
    cryptograms, clear = unpack(TMK, block)
    assert (clear.pin_key, clear.mac_key, clear.data_key) == (keys.pin_key, keys.mac_key, keys.data_key)
    assert cryptograms.mac_key == block[20:36]
    assert cryptograms.data_key == (block[40:56] if code == "004" else None)
    for key in present:
        assert key not in block and key.hex() not in repr(keys).lower()  # clear keys never show in a repr


def test_a_track_key_comes_after_the_same_pin_and_mac_keys():
    without, with_track = generate_working_keys(random.Random(7)), generate_working_keys(random.Random(7), True)
    assert (without.pin_key, without.mac_key) == (with_track.pin_key, with_track.mac_key)
    assert with_track.data_key not in (with_track.pin_key, with_track.mac_key)


@pytest.mark.parametrize("with_track", [False, True])
def test_a_damaged_block_names_the_key_not_its_value(with_track):
    keys = generate_working_keys(random.Random(7), with_track)
    block = bytearray(pack(TMK, keys))
    block[30] ^= 0x10
    with pytest.raises(KeyDownloadError, match="MAC key's check value does not match") as caught:
        unpack(TMK, bytes(block))
    assert keys.mac_key.hex() not in str(caught.value).lower()
    with pytest.raises(KeyDownloadError, match="PIN key's check value does not match"):
        unpack(OTHER_TMK, pack(TMK, keys))  # the wrong TMK fails the first key already
    with pytest.raises(KeyDownloadError, match=r"39 bytes; expected 40 .* or 60"):
        unpack(TMK, bytes(block[:39]))


def test_a_damaged_track_key_check_value_is_named():
    keys = generate_working_keys(random.Random(7), with_data_key=True)
    block = bytearray(pack(TMK, keys))
    block[58] ^= 0x01  # inside the track key's KCV
    with pytest.raises(KeyDownloadError, match="track key's check value does not match") as caught:
        unpack(TMK, bytes(block))
    assert keys.data_key.hex() not in str(caught.value).lower()
    with pytest.raises(KeyDownloadError, match=r"50 bytes; expected 40 \(PIN key 16 \+ KCV 4, MAC key 16 \+ KCV 4\) or 60"):
        unpack(TMK, bytes(block[:50]))


@pytest.mark.parametrize(("text", "why"), [
    ("ZZ", "not hex"), ("0101010101010101", "8 bytes"), ("7AD5D57F456ECEC2A2D910736110E578", "parity"),
])
def test_bad_tmk_is_refused_without_showing_it(text, why):
    with pytest.raises(KeyDownloadError, match=why) as caught:
        parse_tmk(text, "terminal 'T1'")
    assert text not in str(caught.value) and "terminal 'T1'" in str(caught.value)
