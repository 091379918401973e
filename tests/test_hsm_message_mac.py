"""The message MAC both ends use, and the sign-on key block: checked against the primitives directly."""

from __future__ import annotations

import random

import pytest

from possim.hsm_mock.cipher import require_odd_parity
from possim.hsm_mock.key_download import (
    BLOCK_LENGTH, KeyDownloadError, generate_working_keys, pack, parse_tmk, unpack,
)
from possim.hsm_mock.mac import cup_ecb_mac, retail_mac
from possim.hsm_mock.message_mac import MessageMac
from possim.wire.codec import Codec
from possim.wire.dialect import load_dialect
from possim.wire.message import Message

KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TMK = bytes.fromhex("7AD5D57F456ECEC2A2D910736110E579")


def purchase() -> Message:
    return Message("0200", {3: "000000", 4: "000000001250", 11: "000042", 41: "10000001",
                            42: "898310048160001", 49: "156"})


@pytest.mark.parametrize(("dialect", "mac"), [
    ("cup", lambda key, mab: cup_ecb_mac(key, mab).field64),
    ("iso87ascii", retail_mac),
    ("iso87binary", retail_mac),
])
def test_field_64_is_the_dialects_mac_of_the_bytes_before_it(dialect, mac):
    codec = Codec(load_dialect(dialect))
    message = purchase()
    body = MessageMac(codec).sign(message, KEY)
    assert body[-8:] == mac(KEY, body[:-8]) and message[64] == body[-8:].hex().upper()
    assert codec.decode(body) == message
    assert MessageMac(codec).verify(body, KEY) is None


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


def test_fields_after_64_are_covered_too():
    codec = Codec(load_dialect("iso87ascii"))
    mac = MessageMac(codec)
    message = Message("0400", {**purchase().fields, 90: "0200000042" + "0615100000" + "0" * 22})
    body = mac.sign(message, KEY)
    changed = bytearray(body)
    changed[-1] ^= 0x01  # last digit of field 90
    assert mac.verify(bytes(changed), KEY) is not None


def test_working_keys_round_trip_with_odd_parity():
    keys = generate_working_keys(random.Random(7))
    require_odd_parity(keys.pin_key)
    require_odd_parity(keys.mac_key)
    block = pack(TMK, keys)
    assert len(block) == BLOCK_LENGTH == 40
    cryptograms, clear = unpack(TMK, block)
    assert (clear.pin_key, clear.mac_key) == (keys.pin_key, keys.mac_key)
    assert keys.mac_key not in block and cryptograms.mac_key == block[20:36]
    assert keys.mac_key.hex() not in repr(keys).lower()  # clear keys never show in a repr


def test_a_damaged_block_names_the_key_not_its_value():
    block = bytearray(pack(TMK, generate_working_keys(random.Random(7))))
    block[30] ^= 0x10
    with pytest.raises(KeyDownloadError, match="MAC key's check value does not match"):
        unpack(TMK, bytes(block))
    with pytest.raises(KeyDownloadError, match="40"):
        unpack(TMK, bytes(block[:39]))


@pytest.mark.parametrize(("text", "why"), [
    ("ZZ", "not hex"), ("0101010101010101", "8 bytes"), ("7AD5D57F456ECEC2A2D910736110E578", "parity"),
])
def test_bad_tmk_is_refused_without_showing_it(text, why):
    with pytest.raises(KeyDownloadError, match=why) as caught:
        parse_tmk(text, "terminal 'T1'")
    assert text not in str(caught.value) and "terminal 'T1'" in str(caught.value)
