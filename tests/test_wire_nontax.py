"""The non-tax collection message set: every message type survives a round
trip, the MAC covers exactly the bytes from <head> through </body>, and each
way a message can be wrong is refused with the result code to answer and
the element or offset at fault."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from possim.wire import nontax
from possim.wire.nontax import FrameReader, NontaxError, NontaxMessage, decode, encode, frame

KEY = bytes(range(32))
NOW = datetime(2025, 6, 1, 10, 30, 0)
CODE = "31010157462740291971"

BODIES = {
    nontax.MSG_NOTICE_QUERY: {"payCode": CODE},
    nontax.MSG_PAYMENT_CONFIRM: {"payCode": CODE, "amount": "200.00", "currency": "CNY", "confirmTime": "20250601103000",
                                 "channel": "POS", "channelTradeNo": "B20250601000001", "terminalId": "10000001"},
    nontax.MSG_STATUS_QUERY: {"payCode": CODE},
    nontax.MSG_DAILY_LIST: {"date": "20250601"},
    nontax.MSG_CONFIRM_CANCEL: {"payCode": CODE, "channelTradeNo": "B20250601000001", "reason": "card reversed"},
    nontax.MSG_DAY_RECONCILED: {"date": "20250601", "count": "1", "total": "200.00", "currency": "CNY"},
    nontax.MSG_ERROR_RESPONSE: {"result": "9002", "message": "not well-formed"},
    nontax.MSG_NOTICE_QUERY_RESPONSE: {
        "result": "0000", "message": "payable", "payCode": CODE, "agencyCode": "310101001",
        "agencyName": "黄浦区交通管理支队", "payerName": "张三 & <Co>", "amount": "210.00", "currency": "CNY",
        "dueDate": "20301231", "status": "UNPAID",
        "items": [{"code": "103050101", "name": "罚没收入", "amount": "200.00"},
                  {"code": "103050102", "name": "工本费", "amount": "10.00"}],
    },
    nontax.MSG_PAYMENT_CONFIRM_RESPONSE: {"result": "0000", "message": "ok", "payCode": CODE,
                                          "channelTradeNo": "B20250601000001", "confirmNo": "202506010000000001"},
    nontax.MSG_STATUS_QUERY_RESPONSE: {"result": "0000", "payCode": CODE, "status": "PAID",
                                       "channelTradeNo": "B20250601000001", "confirmNo": "202506010000000001",
                                       "confirmTime": "20250601103000"},
    nontax.MSG_DAILY_LIST_RESPONSE: {
        "result": "0000", "date": "20250601", "count": "1", "total": "200.00", "currency": "CNY",
        "confirmations": [{"payCode": CODE, "agencyCode": "310101001", "amount": "200.00", "channel": "POS",
                           "channelTradeNo": "B20250601000001", "confirmNo": "202506010000000001",
                           "confirmTime": "20250601103000"}],
    },
    nontax.MSG_CONFIRM_CANCEL_RESPONSE: {"result": "0000", "message": "cancelled", "payCode": CODE},
    nontax.MSG_DAY_RECONCILED_RESPONSE: {"result": "0000", "message": "day reconciled", "date": "20250601"},
}


def message(msg_type: str, body: dict | None = None) -> NontaxMessage:
    return NontaxMessage(msg_type, "20250601103000123456", "BANK01", "FINANCE", "20250601103000",
                         BODIES[msg_type] if body is None else body)


def signed(head_body: str, mac: str | None = None) -> bytes:
    """A document built by hand, signed with the hmac module (not the code under test)."""
    raw = head_body.encode("utf-8")
    mac = mac or hmac.new(KEY, raw, hashlib.sha256).hexdigest().upper()
    return b'<?xml version="1.0" encoding="UTF-8"?><message>' + raw + f"<mac>{mac}</mac></message>".encode()


def head(msg_type: str = "1001") -> str:
    return (f"<head><version>1.0</version><msgType>{msg_type}</msgType><msgId>M1</msgId><sender>BANK01</sender>"
            "<receiver>FINANCE</receiver><sendTime>20250601103000</sendTime></head>")


def refused(xml: bytes, code: str, fragment: str) -> NontaxError:
    with pytest.raises(NontaxError) as caught:
        decode(xml, KEY)
    assert caught.value.code == code
    assert fragment in str(caught.value)
    return caught.value


@pytest.mark.parametrize("msg_type", sorted(BODIES))
def test_every_message_type_round_trips(msg_type):
    sent = message(msg_type)
    assert decode(encode(sent, KEY), KEY) == sent


def test_an_answer_names_the_request_it_answers():
    request = nontax.make_message(nontax.MSG_STATUS_QUERY, {"payCode": CODE}, "BANK01", "FINANCE", NOW, random.Random(1))
    answer = nontax.reply(request, {"result": "1003", "message": "no such notice", "payCode": CODE}, "FINANCE", NOW,
                          random.Random(2))
    back = decode(encode(answer, KEY), KEY)
    assert (back.msg_type, back.receiver, back.ref_msg_id) == ("2003", "BANK01", request.msg_id)
    assert b"<refMsgId>" + request.msg_id.encode() + b"</refMsgId>" in encode(answer, KEY)
    assert b"refMsgId" not in encode(request, KEY)


TEXT = st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",), blacklist_characters="\ufffe\uffff"),
               min_size=1, max_size=40)
TOKEN = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)


@settings(max_examples=150, deadline=None)
@given(trade=TOKEN, terminal=TOKEN, minor=st.integers(0, 10**12), code=st.text("0123456789", min_size=1, max_size=32))
def test_confirmations_round_trip(trade, terminal, minor, code):
    body = BODIES[nontax.MSG_PAYMENT_CONFIRM] | {"payCode": code, "channelTradeNo": trade, "terminalId": terminal,
                                                  "amount": nontax.amount_text(minor, "156")}
    sent = message(nontax.MSG_PAYMENT_CONFIRM, body)
    back = decode(encode(sent, KEY), KEY)
    assert back == sent
    assert nontax.parse_amount(back.body["amount"], back.body["currency"], "body/amount") == minor


@settings(max_examples=150, deadline=None)
@given(names=st.lists(TEXT, min_size=0, max_size=4), payer=TEXT, reason=st.one_of(st.just(""), TEXT))
def test_free_text_round_trips(names, payer, reason):
    items = [{"code": str(n), "name": name, "amount": "1.00"} for n, name in enumerate(names)]
    body = BODIES[nontax.MSG_NOTICE_QUERY_RESPONSE] | {"payerName": payer, "items": items}
    assert decode(encode(message("2001", body), KEY), KEY).body == body
    cancel = BODIES[nontax.MSG_CONFIRM_CANCEL] | {"reason": reason}
    assert decode(encode(message("1005", cancel), KEY), KEY).body == cancel


# ---- the MAC ----

def test_mac_known_answer_is_hmac_sha256_over_head_through_body():
    xml = encode(message(nontax.MSG_STATUS_QUERY), KEY)
    start, end = xml.index(b"<head>"), xml.index(b"</body>") + len(b"</body>")
    expected = hmac.new(KEY, xml[start:end], hashlib.sha256).hexdigest().upper()
    assert re.search(rb"<mac>([0-9A-F]{64})</mac></message>\Z", xml).group(1).decode() == expected


def test_a_hand_signed_document_is_accepted_as_sent():
    xml = signed(head("1003") + "\n  <body>\n <payCode>" + CODE + "</payCode></body>")
    assert decode(xml, KEY).body == {"payCode": CODE}


def test_one_tampered_body_byte_is_a_mac_error():
    xml = encode(message(nontax.MSG_PAYMENT_CONFIRM), KEY)
    tampered = xml.replace(b"<amount>200.00", b"<amount>100.00")
    assert tampered != xml
    refused(tampered, nontax.RESULT_MAC_ERROR, "mac: does not verify")


def test_wrong_key_missing_or_malformed_mac_are_mac_errors():
    xml = encode(message(nontax.MSG_NOTICE_QUERY), KEY)
    with pytest.raises(NontaxError) as caught:
        decode(xml, b"another key")
    assert caught.value.code == nontax.RESULT_MAC_ERROR
    refused(re.sub(rb"<mac>.*</mac>", b"", xml), nontax.RESULT_MAC_ERROR, "mac: is missing")
    lower = re.sub(rb"<mac>(.*)</mac>", lambda m: b"<mac>" + m.group(1).lower() + b"</mac>", xml)
    refused(lower, nontax.RESULT_MAC_ERROR, "upper-case hex")


def test_a_refusal_carries_what_could_be_read_for_the_answer():
    xml = encode(message(nontax.MSG_PAYMENT_CONFIRM), KEY).replace(b"<amount>200.00", b"<amount>100.00")
    error = refused(xml, nontax.RESULT_MAC_ERROR, "mac")
    assert (error.msg_type, error.msg_id, error.sender) == ("1002", "20250601103000123456", "BANK01")
    assert error.echo["payCode"] == CODE and error.echo["channelTradeNo"] == "B20250601000001"


# ---- malformed documents ----

def test_a_document_type_declaration_is_refused_before_parsing():
    bomb = b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaa">]><message/>'
    error = refused(bomb, nontax.RESULT_MALFORMED, "<!DOCTYPE is not allowed")
    assert error.offset == bomb.index(b"<!DOCTYPE")
    refused(b"<message><!ENTITY x 'y'></message>", nontax.RESULT_MALFORMED, "<!ENTITY is not allowed (at byte offset 9)")


def test_not_well_formed_xml_is_malformed():
    refused(b"<message><head></message>", nontax.RESULT_MALFORMED, "not well-formed XML at line 1")
    refused(b"<other/>", nontax.RESULT_MALFORMED, "not <message>")


def test_an_unknown_message_type_is_malformed_even_with_a_good_mac():
    error = refused(signed(head("1009") + "<body><payCode>1</payCode></body>"), nontax.RESULT_MALFORMED, "head/msgType")
    assert error.msg_type == "1009"


def test_a_wrong_version_is_malformed():
    xml = signed(head().replace("<version>1.0", "<version>2.0") + f"<body><payCode>{CODE}</payCode></body>")
    refused(xml, nontax.RESULT_MALFORMED, "head/version")


def test_an_attribute_on_the_envelope_is_refused():
    xml = encode(message("1001"), KEY).replace(b"<message>", b'<message id="1">')
    refused(xml, nontax.RESULT_MALFORMED, "the document must be")


@pytest.mark.parametrize("name", ["version", "msgType", "msgId", "sender", "receiver", "sendTime"])
def test_every_missing_head_element_is_named(name):
    xml = signed(re.sub(f"<{name}>[^<]*</{name}>", "", head()) + f"<body><payCode>{CODE}</payCode></body>")
    refused(xml, nontax.RESULT_MALFORMED, f"head/{name}: is missing")


def _required_paths() -> list[tuple[str, str]]:
    """(msg_type, element) for each element the sample body of each type must have."""
    cases = []
    for msg_type, layout in nontax.LAYOUTS.items():
        for element in layout:
            if element.name in BODIES[msg_type] and element.when != nontax.OPTIONAL:
                cases.append((msg_type, element.name))
    return cases


@pytest.mark.parametrize("msg_type, name", _required_paths())
def test_every_missing_required_body_element_is_named(msg_type, name):
    xml = encode(message(msg_type), KEY).decode()
    document = re.search("<head>.*</body>", xml).group(0)
    stripped = re.sub(f"<{name}>.*?</{name}>", "", document, count=1)
    assert stripped != document
    error = refused(signed(stripped), nontax.RESULT_MALFORMED, f"body/{name}: is missing")
    assert error.msg_type == msg_type


def test_a_missing_field_inside_a_list_entry_is_named():
    xml = encode(message("2001"), KEY).decode()
    document = re.search("<head>.*</body>", xml).group(0).replace("<name>工本费</name>", "")
    refused(signed(document), nontax.RESULT_MALFORMED, "body/items/item[2]/name: is missing")


@pytest.mark.parametrize("name, value, fragment", [
    ("amount", "200.0", "exactly 2 decimals for CNY"),
    ("amount", "1e3", "not an amount"),
    ("currency", "156", "alphabetic"),
    ("currency", "XYZ", "unknown currency"),
    ("confirmTime", "20250231103000", "not a real time"),
    ("payCode", "3101A", "not 1 to 32 digits"),
    ("channelTradeNo", "has space", "printable ASCII"),
])
def test_malformed_values_are_named(name, value, fragment):
    body = dict(BODIES["1002"]) | {name: value}
    elements = "".join(f"<{k}>{v}</{k}>" for k, v in body.items())
    refused(signed(head("1002") + f"<body>{elements}</body>"), nontax.RESULT_MALFORMED, f"body/{name}")
    with pytest.raises(NontaxError, match=fragment):
        decode(signed(head("1002") + f"<body>{elements}</body>"), KEY)


def test_conditional_elements_follow_the_result():
    not_found = {"result": "1003", "message": "no such notice", "payCode": CODE}
    assert decode(encode(message("2001", not_found), KEY), KEY).body == not_found
    with pytest.raises(NontaxError, match="body/paidTradeNo: is missing"):
        encode(message("2002", {"result": "1001", "message": "paid", "payCode": CODE, "channelTradeNo": "T1"}), KEY)
    refusal = {"result": "9002", "message": "unreadable"}
    assert decode(encode(message("2002", refusal), KEY), KEY).body == refusal
    with pytest.raises(NontaxError, match="body/channelTradeNo: is missing"):
        encode(message("2003", {"result": "0000", "payCode": CODE, "status": "PAID"}), KEY)


def test_a_count_that_disagrees_with_the_list_is_malformed():
    with pytest.raises(NontaxError, match="body/count: says 2 but 1"):
        encode(message("2004", BODIES["2004"] | {"count": "2"}), KEY)


def test_encode_refuses_what_decode_would():
    with pytest.raises(NontaxError, match="body/extra: is not part"):
        encode(message("1001", {"payCode": CODE, "extra": "x"}), KEY)
    with pytest.raises(NontaxError, match=r"body/payerName: character 3 \(U\+000D\)") as caught:
        encode(message("2001", BODIES["2001"] | {"payerName": "张三\r"}), KEY)
    assert "张三" not in str(caught.value)
    with pytest.raises(NontaxError, match="head/msgType"):
        encode(message("3001", {}), KEY)


def test_unknown_elements_are_ignored_but_covered_by_the_mac():
    xml = signed(head("1001") + f"<body><payCode>{CODE}</payCode><note>later version</note></body>")
    assert decode(xml, KEY).body == {"payCode": CODE}


# ---- amounts, ids, framing ----

def test_amounts_take_exactly_the_currency_decimals():
    assert nontax.amount_text(12345, "156") == "123.45"
    assert nontax.amount_text(500, "392") == "500"
    assert nontax.amount_text(1, "048") == "0.001"
    assert nontax.parse_amount("123.45", "CNY", "body/amount") == 12345
    assert nontax.parse_amount("500", "JPY", "body/amount") == 500
    with pytest.raises(NontaxError, match="body/total: '500.00' is not an amount with no decimals for JPY"):
        nontax.parse_amount("500.00", "JPY", "body/total")
    with pytest.raises(NontaxError, match="body/amount: '-1.00'"):
        nontax.parse_amount("-1.00", "CNY", "body/amount")


def test_message_ids_are_20_characters_and_differ():
    rng = random.Random(7)
    ids = {nontax.new_msg_id(rng, NOW) for _ in range(50)}
    assert len(ids) > 45
    assert all(len(i) == 20 and i.startswith("20250601103000") and i.isdigit() for i in ids)


def test_frames_split_byte_by_byte_and_coalesced():
    one, two = encode(message("1001"), KEY), encode(message("1004"), KEY)
    stream = frame(one) + frame(two)
    assert stream[:6] == f"{len(one):06d}".encode()
    reader = FrameReader()
    got = []
    for byte in stream:
        got += reader.feed(bytes([byte]))
    assert got == [one, two]
    assert FrameReader().feed(stream) == [one, two]


def test_a_partial_frame_is_kept_until_complete():
    doc = encode(message("1003"), KEY)
    reader = FrameReader()
    assert reader.feed(frame(doc)[:40]) == []
    assert reader.pending == 40
    assert reader.feed(frame(doc)[40:]) == [doc]
    assert reader.pending == 0


def test_garbage_length_is_refused_naming_its_offset():
    doc = encode(message("1001"), KEY)
    reader = FrameReader()
    with pytest.raises(NontaxError, match=f"at byte offset {6 + len(doc)}"):
        reader.feed(frame(doc) + b"00x123<message/>")
    with pytest.raises(NontaxError, match="empty message"):
        FrameReader().feed(b"000000")
    with pytest.raises(NontaxError, match="does not fit"):
        frame(b"x" * 1_000_000)
