"""`possim hsm …`: the tester's calculator, checked against published values
through the command line a tester uses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

POSSIM = [sys.executable, "-m", "possim.cli"]
KEY = "0123456789ABCDEFFEDCBA9876543210"


def hsm(*args: str) -> dict:
    result = subprocess.run([*POSSIM, "hsm", *args, "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_kcv_of_the_classic_test_key() -> None:
    assert hsm("kcv", "--key", KEY) == {"kcv": "08D7B4", "algo": "tdes"}


def test_dukpt_matches_x9_24_1_annex_a() -> None:
    # ANSI X9.24-1:2009 Annex A: IPEK, and the first transaction's keys (see tests/test_hsm_dukpt_tdes.py)
    keys = hsm("dukpt", "--bdk", KEY, "--ksn", "FFFF9876543210E00001")
    assert keys["initial_key"] == "6AC292FAA1315B4D858AB3A3D7D5933A"
    assert keys["transaction_key"] == "042666B49184CFA368DE9628D0397BC9"
    assert keys["pin_key"] == "042666B49184CF5C68DE9628D0397B36"
    assert keys["mac_key"] == "042666B4918430A368DE9628D03984C9"


def test_pinblock_format_0_round_trip() -> None:
    # Format 0, PIN 1234, PAN 43219876543210987 -> 0412AC89ABCDEF67 (published BP-Tools example)
    encoded = hsm("pinblock", "encode", "--format", "0", "--pin", "1234", "--pan", "43219876543210987")
    assert encoded["pinblock"] == "0412AC89ABCDEF67"
    decoded = hsm("pinblock", "decode", "--pinblock", "0412AC89ABCDEF67", "--pan", "43219876543210987")
    assert decoded == {"pin": "1234"}


@pytest.mark.parametrize("fmt", ["0", "1", "3"])
def test_enciphered_pinblock_decodes_under_the_same_key(fmt: str) -> None:
    block = hsm("pinblock", "encode", "--format", fmt, "--pin", "987654", "--pan", "4000001000000018", "--key", KEY)
    assert block["enciphered"] is True and block["pinblock"] != "0412AC89ABCDEF67"
    pin = hsm("pinblock", "decode", "--pinblock", block["pinblock"], "--pan", "4000001000000018", "--key", KEY)
    assert pin == {"pin": "987654"}


def test_format_4_needs_and_uses_an_aes_key() -> None:
    aes = "000102030405060708090A0B0C0D0E0F"
    block = hsm("pinblock", "encode", "--format", "4", "--pin", "1234", "--pan", "432198765432109870", "--key", aes)
    assert len(block["pinblock"]) == 32
    pin = hsm("pinblock", "decode", "--format", "4", "--pinblock", block["pinblock"], "--pan", "432198765432109870", "--key", aes)
    assert pin == {"pin": "1234"}


def test_x9_19_mac_matches_botan_vector() -> None:
    data = ("31311C3931383237333634351C1C35383134333237361C1C3B313233343536373839303132333435363D"
            "3939313231303030303F1C30303031323530301C393738363533343132343837363932331C")
    assert hsm("mac", "--algo", "x9.19", "--key", KEY, "--data", data)["mac"] == "C209CCB78EE1B606"


def test_cup_ecb_mac_gives_the_field_64_characters() -> None:
    result = hsm("mac", "--algo", "cup-ecb", "--key", KEY, "--data", "0200702004")
    assert len(result["mac"]) == 16 and result["field64"] == result["mac"][:8]


def test_aes_cmac_matches_nist_sp_800_38b_example_1() -> None:
    # NIST SP 800-38B D.1, Example 1: empty message
    result = hsm("mac", "--algo", "aes-cmac", "--key", "2B7E151628AED2A6ABF7158809CF4F3C", "--data", "")
    assert result["mac"] == "BB1D6929E95937287FA37D129B756746"


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["kcv", "--key", "0123"], "key is 2 bytes"),
        (["kcv", "--key", "zz"], "--key is not hexadecimal"),
        (["dukpt", "--bdk", KEY, "--ksn", "FFFF"], "ksn"),
        (["pinblock", "encode", "--format", "4", "--pin", "1234", "--pan", "4321987654321098"], "--key is required"),
        (["pinblock", "encode", "--format", "0", "--pin", "12", "--pan", "4321987654321098"], "pin"),
    ],
)
def test_bad_input_is_one_line_naming_the_parameter(args: list[str], names: str) -> None:
    result = subprocess.run([*POSSIM, "hsm", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("possim: error: ") and names in line


def test_tr31_unwrap_of_a_published_block_and_a_fresh_wrap() -> None:
    # X9.143 / TR-31 version D example, as quoted in tests/test_hsm_tr31.py (openemv/tr31 test data)
    kbpk = "88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6"
    block = ("D0144P0AE00E00002C77FA3F4A553BED6E88AE5C172A4166E3D4ACA8E2AC71C158A476FAC12C13C3"
             "829DE55D3AB54C48F4C4FEF7AC75E90FC47F1B77E7B19A73ED46E64410082557")
    unwrapped = hsm("tr31", "unwrap", "--kbpk", kbpk, "--keyblock", block)
    assert unwrapped["key"] == "3F419E1CB7079442AA37474C2EFBF8B8"
    assert unwrapped["header"]["key_usage"] == "P0"
    wrapped = hsm("tr31", "wrap", "--kbpk", kbpk, "--key", unwrapped["key"], "--version", "D",
                  "--usage", "P0", "--algorithm", "A", "--mode", "E")
    again = hsm("tr31", "unwrap", "--kbpk", kbpk, "--keyblock", wrapped["keyblock"])
    assert again["key"] == unwrapped["key"] and again["kcv"] == unwrapped["kcv"]
    tampered = wrapped["keyblock"][:-1] + ("0" if wrapped["keyblock"][-1] != "0" else "1")
    result = subprocess.run([*POSSIM, "hsm", "tr31", "unwrap", "--kbpk", kbpk, "--keyblock", tampered],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "MAC" in result.stderr and unwrapped["key"] not in result.stderr


def test_hsm_serve_answers_payshield_commands_from_its_own_process() -> None:
    import signal
    import socket

    process = subprocess.Popen([*POSSIM, "hsm", "serve", "--listen", "127.0.0.1:0", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        host, port = ready["listening"].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            def ask(body: bytes) -> bytes:
                sock.sendall(len(body).to_bytes(2, "big") + body)
                size = int.from_bytes(sock.recv(2), "big")
                reply = b""
                while len(reply) < size:
                    reply += sock.recv(size - len(reply))
                return reply

            assert ask(b"0001XX")[:8] == b"0001XY68"  # unknown command: 68, connection kept
            reply = ask(b"0002NC")
            assert reply[:8] == b"0002ND00"
            assert reply[8:24].decode() == ready["lmk_check"] == "7D22274C5745C5A1"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
