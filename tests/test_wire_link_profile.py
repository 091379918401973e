"""Serial link profiles are data: built-ins, user YAML files built on them,
and clear errors naming file, key and line for bad files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from possim.wire.link_profile import LinkProfile, LinkProfileError, builtin_link_profiles, load_link_profile
from possim.wire.serial_frames import FrameReader, Frame, encode_frame


def write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_builtins_are_listed_and_named_after_their_files():
    assert builtin_link_profiles() == ["ecr-7e1", "stx-etx-lrc", "stx-len-etx-lrc"]
    for name in builtin_link_profiles():
        assert load_link_profile(name).name == name


def test_builtin_settings_follow_the_shared_api():
    plain = load_link_profile("stx-etx-lrc")
    assert (plain.length, plain.lrc_covers, plain.lrc_start) == ("none", "after_stx", 0x00)
    assert (plain.baud, plain.bytesize, plain.parity, plain.stopbits) == (9600, 8, "N", 1)
    assert plain.iso_length_header is True and plain.use_enq is False
    bcd = load_link_profile("stx-len-etx-lrc")
    assert (bcd.length, bcd.lrc_covers, bcd.lrc_start) == ("bcd2", "after_stx", 0x00)
    assert (bcd.baud, bcd.bytesize, bcd.parity, bcd.stopbits) == (115200, 8, "N", 1)
    assert bcd.iso_length_header is False
    ecr = load_link_profile("ecr-7e1")
    assert (ecr.length, ecr.lrc_covers, ecr.lrc_start) == ("ascii4", "all", 0x7F)
    assert (ecr.baud, ecr.bytesize, ecr.parity, ecr.stopbits) == (9600, 7, "E", 1)
    assert ecr.use_enq is True and ecr.iso_length_header is False
    for profile in (plain, bcd, ecr):
        assert (profile.stx, profile.etx, profile.ack, profile.nak, profile.eot, profile.enq) == (
            0x02, 0x03, 0x06, 0x15, 0x04, 0x05)


def test_builtins_are_cached_and_files_are_read_again(tmp_path):
    assert load_link_profile("ecr-7e1") is load_link_profile("ecr-7e1")
    path = write(tmp_path, "mine.yaml", "name: mine\nbaud: 19200\n")
    assert load_link_profile(path).baud == 19200
    write(tmp_path, "mine.yaml", "name: mine\nbaud: 38400\n")
    assert load_link_profile(path).baud == 38400


def test_user_profile_based_on_a_builtin_overrides_lrc_start(tmp_path):
    path = write(tmp_path, "vendor.yaml", "name: vendor\nbase: stx-etx-lrc\nlrc_start: 0x7F\n")
    vendor = load_link_profile(path)
    assert vendor == replace(load_link_profile("stx-etx-lrc"), name="vendor", lrc_start=0x7F)
    # Hand-computed: LRC over 'A', 'B', ETX from 0x7F = 0x7F ^ 0x41 ^ 0x42 ^ 0x03 = 0x7F ^ 0x00 = 0x7F.
    assert encode_frame(vendor, b"AB") == bytes([0x02, 0x41, 0x42, 0x03, 0x7F])
    # The built-in it is based on starts from 0x00: the same frame has check byte 0x00 there.
    assert encode_frame(load_link_profile("stx-etx-lrc"), b"AB") == bytes([0x02, 0x41, 0x42, 0x03, 0x00])
    assert FrameReader(vendor).feed(bytes([0x02, 0x41, 0x42, 0x03, 0x7F])) == [Frame(b"AB")]


def test_base_may_be_a_file_next_to_the_profile(tmp_path):
    write(tmp_path, "site.yaml", "name: site\nbase: stx-len-etx-lrc\nbaud: 38400\n")
    path = write(tmp_path, "till.yaml", "name: till\nbase: site.yaml\nretries: 2\n")
    till = load_link_profile(path)
    assert (till.name, till.baud, till.retries, till.length) == ("till", 38400, 2, "bcd2")


# --- errors ------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "broken.yaml", "name: broken\nbaud: 9600\nparity: [N\n")
    with pytest.raises(LinkProfileError) as caught:
        load_link_profile(path)
    text = str(caught.value)
    assert path in text and "line" in text and "not valid YAML" in text


@pytest.mark.parametrize(
    "body, key, line, words",
    [
        ("name: x\nbaud: 9600\nspeed: 9600\n", "speed", 3, "unknown key"),
        ("name: x\nlrc_covers: middle\n", "lrc_covers", 2, "after_stx, all, data"),
        ("name: x\nbaud: 9600\nstx: 300\n", "stx", 3, "byte value"),
        ("name: x\nlength: bcd3\n", "length", 2, "none, binary2, bcd2, ascii4"),
        ("name: x\n\nparity: X\n", "parity", 3, "N, E or O"),
        ("name: x\nstopbits: 3\n", "stopbits", 2, "1, 1.5 or 2"),
        ("name: x\nack_timeout: 0\n", "ack_timeout", 2, "above 0"),
        ("name: x\nretries: -1\n", "retries", 2, "0 or more"),
        ("name: x\nuse_enq: maybe\n", "use_enq", 2, "true or false"),
        ("name: x\nbytesize: 7\nlength: binary2\n", "length", 3, "7-bit"),
        ("name: x\nbytesize: 7\nlrc_start: 0x80\n", "lrc_start", 3, "7-bit"),
        ("name: x\nbaud: 9600\nnak: 0x06\n", "nak", 3, "same byte as ack"),
        ("name: x\nbase: no-such-profile\n", "base", 2, "not a built-in"),
    ],
)
def test_bad_values_name_file_key_and_line(tmp_path, body, key, line, words):
    path = write(tmp_path, "bad.yaml", body)
    with pytest.raises(LinkProfileError) as caught:
        load_link_profile(path)
    text = str(caught.value)
    assert f"{path} line {line}:" in text
    assert key in text and words in text
    assert caught.value.key == key


def test_missing_name_and_non_mapping_files(tmp_path):
    with pytest.raises(LinkProfileError, match="name is missing"):
        load_link_profile(write(tmp_path, "a.yaml", "baud: 9600\n"))
    with pytest.raises(LinkProfileError, match="must be a mapping"):
        load_link_profile(write(tmp_path, "b.yaml", "- name\n- baud\n"))
    with pytest.raises(LinkProfileError, match="no link profile 'nowhere.yaml'"):
        load_link_profile("nowhere.yaml")


def test_a_base_that_leads_back_to_itself(tmp_path):
    write(tmp_path, "one.yaml", "name: one\nbase: two.yaml\n")
    path = write(tmp_path, "two.yaml", "name: two\nbase: one.yaml\n")
    with pytest.raises(LinkProfileError, match="leads back to itself"):
        load_link_profile(path)


def test_an_error_from_an_inherited_setting_names_the_file(tmp_path):
    """The 7-bit conflict comes from bytesize here and length from the base: no line to point at for length."""
    path = write(tmp_path, "seven.yaml", "name: seven\nbase: stx-len-etx-lrc\nbytesize: 7\n")
    with pytest.raises(LinkProfileError) as caught:
        load_link_profile(path)
    assert str(caught.value).startswith(f"{path}: length bcd2")


def test_profiles_built_in_code_are_checked_too():
    with pytest.raises(LinkProfileError, match="parity 'X'"):
        LinkProfile(name="x", parity="X")
    with pytest.raises(LinkProfileError, match="eot 0x06 is the same byte as ack"):
        LinkProfile(name="x", eot=0x06)
    with pytest.raises(LinkProfileError, match="bytesize True"):
        LinkProfile(name="x", bytesize=True)  # type: ignore[arg-type]
