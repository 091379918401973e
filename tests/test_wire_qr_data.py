"""The private QR data field: values survive a round trip in tag order, bad
text is refused naming the offset and tag, and a trace never shows a whole
payment code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from possim.wire.qr_data import NAMES, TAGS, QrDataError, decode_qr_data, encode_qr_data, masked

CODE = "134567890123456789"


def test_values_are_emitted_in_tag_order_with_3_digit_lengths():
    text = encode_qr_data({"paid": "1250", "channel": "wechat", "payment_code": CODE})
    assert text == "01018" + CODE + "05006wechat" + "090041250"
    assert decode_qr_data(text) == {"payment_code": CODE, "channel": "wechat", "paid": "1250"}


def test_every_tag_has_its_name():
    assert TAGS == {
        "01": "payment_code", "02": "order_no", "03": "status", "04": "wallet_txn_id", "05": "channel",
        "06": "payload", "07": "expires_at", "08": "refunded", "09": "paid", "10": "reason",
        "11": "pay_code", "12": "agency_code", "13": "agency_name", "14": "payer_name", "15": "amount_due",
        "16": "due_date", "17": "notice_status", "18": "confirm_no", "19": "items",
    }  # fmt: skip
    everything = {name: f"v{tag}" for tag, name in TAGS.items()}
    text = encode_qr_data(everything)
    assert text.startswith("01003v01") and text.endswith("19003v19")
    assert decode_qr_data(text) == everything


def test_lengths_count_characters_not_bytes():
    text = encode_qr_data({"reason": "余额不足"})
    assert text == "10004余额不足"
    assert decode_qr_data(text) == {"reason": "余额不足"}


def test_empty_text_and_empty_values():
    assert encode_qr_data({}) == "" and decode_qr_data("") == {}
    assert decode_qr_data(encode_qr_data({"status": ""})) == {"status": ""}


def test_decode_reads_tags_in_any_order():
    assert decode_qr_data("05006alipay02003A01") == {"channel": "alipay", "order_no": "A01"}


def test_encode_refuses_an_unknown_key():
    with pytest.raises(ValueError, match="unknown key 'amount'"):
        encode_qr_data({"amount": "1"})


def test_encode_refuses_a_value_a_3_digit_length_cannot_count():
    assert decode_qr_data(encode_qr_data({"payload": "x" * 999})) == {"payload": "x" * 999}
    with pytest.raises(ValueError, match="payload is 1000 characters") as caught:
        encode_qr_data({"payload": "x" * 1000})
    assert "xxxx" not in str(caught.value)


def test_encode_refuses_a_value_that_is_not_text():
    with pytest.raises(ValueError, match="paid must be text, got int"):
        encode_qr_data({"paid": 1250})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("text", "offset", "tag", "words"),
    [
        ("0100", 0, None, "4 characters left; an ID and length need 5"),
        ("05006wechat01", 11, None, "2 characters left"),
        ("x1003abc", 0, None, "ID must be 2 digits"),
        ("05006wechat1a003abc", 11, None, "ID must be 2 digits"),
        ("0100a" + CODE, 2, "01", "length must be 3 digits"),
        ("01-18" + CODE, 2, "01", "length must be 3 digits"),
        ("01019" + CODE, 2, "01", "length 19 runs past the end (18 characters left)"),
        ("99003abc", 0, "99", "unknown ID"),
        ("00003abc", 0, "00", "unknown ID"),
        ("02003A0102003B02", 8, "02", "order_no repeated (first at offset 0)"),
    ],
)
def test_decode_names_offset_and_tag(text, offset, tag, words):
    with pytest.raises(QrDataError) as caught:
        decode_qr_data(text)
    assert (caught.value.offset, caught.value.tag) == (offset, tag)
    assert words in str(caught.value)
    assert CODE not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_masked_shows_a_payment_code_first_6_last_4():
    text = encode_qr_data({"payment_code": CODE, "order_no": "ORD-1", "paid": "1250"})
    shown = masked(text)
    assert shown == "01018134567********6789" + "02005ORD-1" + "090041250"
    assert len(shown) == len(text)
    assert CODE not in shown


def test_masked_keeps_the_place_of_a_payment_code_that_is_not_first():
    text = "02005ORD-101018" + CODE
    assert masked(text) == "02005ORD-101018134567********6789"


def test_masked_leaves_text_without_a_payment_code_alone():
    text = encode_qr_data({"status": "paying", "wallet_txn_id": "4200202405010000000001"})
    assert masked(text) == text


@pytest.mark.parametrize("text", ["01019" + CODE, CODE, "01018" + CODE + "01018" + CODE, "0101"])
def test_masked_stars_all_of_text_that_does_not_decode(text):
    assert masked(text) == "*" * len(text)


_values = st.dictionaries(st.sampled_from(sorted(NAMES)), st.text(max_size=1200), max_size=len(NAMES))


@given(_values)
def test_round_trip(values):
    if any(len(v) > 999 for v in values.values()):
        with pytest.raises(ValueError):
            encode_qr_data(values)
        return
    text = encode_qr_data(values)
    assert decode_qr_data(text) == values
    assert list(decode_qr_data(text)) == [name for name in TAGS.values() if name in values]
    assert len(masked(text)) == len(text)


@given(st.text(alphabet="0123456789ab", max_size=40))
def test_decode_either_reads_or_raises_qr_data_error(text):
    try:
        decode_qr_data(text)
    except QrDataError as error:
        assert 0 <= error.offset <= len(text)
        assert masked(text) == "*" * len(text)
