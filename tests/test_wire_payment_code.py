"""Wallet payment codes: HOTP/TOTP against the RFCs' published vectors, every
edge of the scheme table, errors that name the offset without quoting the
code, and codes that verify only within their window and only with their
account's secret."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest

from possim.wire import payment_code as pc
from possim.wire.emv_cpm import encode_cpm
from possim.wire.tlv import encode as tlv

RFC_SECRET = b"12345678901234567890"
"""The ASCII secret of RFC 4226 Appendix D and RFC 6238 Appendix B (SHA1)."""

# RFC 4226 Appendix D: count -> truncated decimal value (the 31-bit value) and 6-digit HOTP.
RFC4226 = [
    (0, 1284755224, "755224"),
    (1, 1094287082, "287082"),
    (2, 137359152, "359152"),
    (3, 1726969429, "969429"),
    (4, 1640338314, "338314"),
    (5, 868254676, "254676"),
    (6, 1918287922, "287922"),
    (7, 82162583, "162583"),
    (8, 673399871, "399871"),
    (9, 645520489, "520489"),
]
# RFC 6238 Appendix B, the SHA1 rows: Unix time -> 8-digit TOTP.
RFC6238_SHA1 = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]
SECRET = bytes.fromhex("F8B4E535D597EBC4E7759AA4E2CCC3C0376845A1")
OTHER_SECRET = bytes.fromhex("756C8E09408D9680FA1C21D595F27DF2FEF9E6A3")
STEP_START = datetime(2024, 5, 1, 12, 0, 0)
"""A step boundary: 1714564800 is a multiple of 30."""


def unix(seconds: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(seconds=seconds)


def digits(prefix: str, length: int) -> str:
    return (prefix + "0123456789" * 3)[:length]


@pytest.mark.parametrize(("counter", "value", "six"), RFC4226)
def test_hotp_rfc4226_appendix_d(counter, value, six):
    assert pc.hotp(RFC_SECRET, counter, 6) == six
    assert pc.hotp(RFC_SECRET, counter, 10) == f"{value:010d}"


@pytest.mark.parametrize(("seconds", "expected"), RFC6238_SHA1)
def test_totp_rfc6238_appendix_b_sha1(seconds, expected):
    assert pc.totp(RFC_SECRET, unix(seconds), 8) == expected


def test_totp_reads_an_aware_time_in_utc_and_a_naive_one_as_utc():
    aware = datetime(2009, 2, 14, 7, 31, 30, tzinfo=timezone(timedelta(hours=8)))  # 1234567890 in Beijing
    assert pc.totp(RFC_SECRET, aware, 8) == "89005924"
    assert pc.time_step(unix(1234567890)) == 0x273EF07  # RFC 6238's T for that row


@pytest.mark.parametrize("bad", [5, 11])
def test_hotp_refuses_digit_counts_the_31_bit_value_cannot_serve(bad):
    with pytest.raises(ValueError, match="digits must be 6 to 10"):
        pc.hotp(RFC_SECRET, 0, bad)


def test_time_before_the_epoch_is_refused():
    with pytest.raises(ValueError, match="before the Unix epoch"):
        pc.time_step(datetime(1969, 12, 31, 23, 59, 59))


@pytest.mark.parametrize(
    ("code", "channel"),
    [
        (digits("10", 18), "wechat"),
        (digits("13", 18), "wechat"),
        (digits("15", 18), "wechat"),
        (digits("25", 16), "alipay"),
        (digits("25", 24), "alipay"),
        (digits("28", 18), "alipay"),
        (digits("30", 16), "alipay"),
        (digits("30", 24), "alipay"),
        (digits("62", 19), "unionpay"),
    ],
)
def test_classify_accepts_every_scheme_edge(code, channel):
    assert pc.classify(code) == channel


@pytest.mark.parametrize(
    ("code", "offset", "words"),
    [
        (digits("09", 18), 0, "prefix 09 belongs to no wallet scheme"),
        (digits("16", 18), 0, "prefix 16 belongs to no wallet scheme"),
        (digits("24", 18), 0, "prefix 24 belongs to no wallet scheme"),
        (digits("31", 18), 0, "prefix 31 belongs to no wallet scheme"),
        (digits("61", 19), 0, "prefix 61 belongs to no wallet scheme"),
        (digits("25", 15), 15, "15 digits; payment codes have 16 to 24"),
        (digits("30", 25), 24, "25 digits; payment codes have 16 to 24"),
        ("", 0, "0 digits"),
        (digits("13", 17), 17, "a wechat code (prefix 13) has 18 digits, this one 17"),
        (digits("13", 19), 18, "a wechat code (prefix 13) has 18 digits, this one 19"),
        (digits("62", 18), 18, "a unionpay code (prefix 62) has 19 digits, this one 18"),
        (digits("62", 20), 19, "a unionpay code (prefix 62) has 19 digits, this one 20"),
    ],
)
def test_classify_names_the_length_or_prefix_at_fault(code, offset, words):
    with pytest.raises(pc.PaymentCodeError) as caught:
        pc.classify(code)
    assert caught.value.offset == offset
    assert words in str(caught.value)
    if len(code) > 2:
        assert code not in str(caught.value) and code[2:10] not in str(caught.value)


@pytest.mark.parametrize("at", [0, 7, 17])
def test_classify_names_the_offset_of_a_non_digit(at):
    code = digits("13", 18)
    code = code[:at] + "x" + code[at + 1 :]
    with pytest.raises(pc.PaymentCodeError, match=f"at offset {at}: not a digit") as caught:
        pc.classify(code)
    assert caught.value.offset == at
    assert isinstance(caught.value, ValueError)


def test_classify_refuses_non_ascii_digits():
    with pytest.raises(pc.PaymentCodeError) as caught:
        pc.classify("13" + "٣" + "1" * 15)  # Arabic-Indic three: str.isdigit() says yes
    assert caught.value.offset == 2


@pytest.mark.parametrize(("channel", "prefix", "length"), [("wechat", "13", 18), ("alipay", "28", 18), ("unionpay", "62", 19)])
def test_generate_lays_out_prefix_account_totp(channel, prefix, length):
    code = pc.generate(channel, "100001", RFC_SECRET, unix(59))
    assert len(code) == length and code.startswith(prefix + "100001")
    assert code[8:18] == pc.hotp(RFC_SECRET, 1, 10) == "1094287082"  # T = 1 at 59 s
    assert pc.classify(code) == channel
    parts = pc.read(code)
    assert (parts.channel, parts.account_number, parts.otp) == (channel, "100001", "1094287082")
    assert "1094287082" not in repr(parts)


def test_unionpay_code_ends_with_its_luhn_digit():
    code = pc.generate("unionpay", "300003", SECRET, STEP_START)
    assert pc.luhn_digit(code[:-1]) == code[-1]
    assert pc.luhn_digit("7992739871") == "3"  # the textbook Luhn example


def test_a_unionpay_code_with_a_bad_luhn_digit_is_refused():
    code = pc.generate("unionpay", "300003", SECRET, STEP_START)
    bad = code[:-1] + str((int(code[-1]) + 1) % 10)
    assert pc.classify(bad) == "unionpay"  # the shape is a scheme's; only reading checks the digit
    for call in (lambda: pc.read(bad), lambda: pc.verify(bad, SECRET, STEP_START)):
        with pytest.raises(pc.PaymentCodeError, match="Luhn") as caught:
            call()
        assert caught.value.offset == 18


def test_read_refuses_an_alipay_length_this_labs_wallets_do_not_make():
    with pytest.raises(pc.PaymentCodeError, match="alipay codes of this lab's wallets have 18") as caught:
        pc.read(digits("28", 20))
    assert caught.value.offset == 18


@pytest.mark.parametrize("channel", pc.CHANNELS)
def test_a_code_verifies_within_one_step_either_side_and_not_beyond(channel):
    at = STEP_START + timedelta(seconds=10)
    code = pc.generate(channel, "200002", SECRET, at)
    assert pc.verify(code, SECRET, at)
    assert pc.verify(code, SECRET, STEP_START)  # the first second of its step
    assert pc.verify(code, SECRET, STEP_START + timedelta(seconds=59, microseconds=999999))  # last of the next step
    assert not pc.verify(code, SECRET, STEP_START + timedelta(seconds=60))  # two steps on: expired
    assert pc.verify(code, SECRET, STEP_START - timedelta(seconds=30))  # the wallet's clock runs a step ahead
    assert not pc.verify(code, SECRET, STEP_START - timedelta(microseconds=1) - timedelta(seconds=30))
    assert pc.verify(code, SECRET, STEP_START + timedelta(seconds=60), window=2)
    assert not pc.verify(code, SECRET, STEP_START + timedelta(seconds=30), window=0)


def test_a_code_does_not_verify_with_another_secret():
    code = pc.generate("wechat", "100001", SECRET, STEP_START)
    assert not pc.verify(code, OTHER_SECRET, STEP_START)


def test_a_code_whose_digits_were_altered_does_not_verify():
    code = pc.generate("alipay", "200002", SECRET, STEP_START)
    altered = code[:-1] + str((int(code[-1]) + 1) % 10)
    assert not pc.verify(altered, SECRET, STEP_START)


@pytest.mark.parametrize(
    ("channel", "account", "secret", "words"),
    [
        ("paypal", "100001", SECRET, "channel 'paypal' is not one of wechat, alipay, unionpay"),
        ("wechat", "10001", SECRET, "account_number must be 6 digits"),
        ("wechat", "10000a", SECRET, "account_number must be 6 digits"),
        ("wechat", "100001", b"", "secret must not be empty"),
    ],
)
def test_generate_refuses_what_it_cannot_lay_out(channel, account, secret, words):
    with pytest.raises(ValueError, match=words):
        pc.generate(channel, account, secret, STEP_START)


def test_emv_cpm_is_told_apart_from_wallet_digits():
    cpm = encode_cpm(aid="A0000003330101", pan="6228480010000000017", expiry="3012")
    assert pc.looks_like_emv_cpm(cpm)
    assert pc.looks_like_emv_cpm(f"  {cpm}\n")
    assert pc.looks_like_emv_cpm("hQVDUFYwMWEaTwegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF8=")  # EMVCo CPM example 1
    assert not pc.looks_like_emv_cpm(digits("28", 16))  # 16 digits are valid base64 too
    assert not pc.looks_like_emv_cpm(digits("28", 24))
    assert not pc.looks_like_emv_cpm(base64.b64encode(tlv([("61", b"\x4f\x01\xa0")])).decode())  # no 85 first
    assert not pc.looks_like_emv_cpm(base64.b64encode(b"\x85\x05CPV").decode())  # TLV runs short
    assert not pc.looks_like_emv_cpm("not base64!")
    assert not pc.looks_like_emv_cpm("二维码")
    assert not pc.looks_like_emv_cpm("")
