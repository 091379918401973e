"""Traces never carry a full PAN, track data, PIN block or sensitive chip
data — not in the field table, not in the hex dump, not for a message that
cannot even be decoded."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_strategies import luhn_pan, messages

from possim.wire.codec import Codec, CodecError
from possim.wire.dialect import load_dialect
from possim.wire.message import Message
from possim.wire.tlv import encode as tlv
from possim.wire.trace import describe, mask_pan, redacted_fields, trace_record

PAN = "6228480010000000017"
TRACK2 = PAN + "D3012101" + "1234567890"
TRACK1 = "B" + PAN + "^ZHANG/SAN^3012101"
PIN_BLOCK = "0123456789ABCDEF"
ICC = tlv(
    [
        ("9F26", bytes.fromhex("1122334455667788")),
        ("5A", bytes.fromhex(PAN + "F")),
        ("57", bytes.fromhex(TRACK2 + "F")),
        ("5F20", b"ZHANG/SAN"),
        ("9F1F", b"123456"),
        ("5F34", b"\x01"),
    ]
).hex().upper()
SALE = Message(
    "0200",
    {2: PAN, 3: "000000", 4: "000000001250", 11: "000777", 35: TRACK2, 41: "TID00001", 45: TRACK1, 52: PIN_BLOCK, 55: ICC},
)
DIALECTS = ["iso87ascii", "iso87binary", "cup"]
WHEN = datetime(2024, 5, 1, 9, 30, 0, 123000)


def codec(name: str) -> Codec:
    return Codec(load_dialect(name))


# --- masking -----------------------------------------------------------------


@pytest.mark.parametrize(
    "pan, shown",
    [
        (PAN, "622848*********0017"),
        ("4111111111111111", "411111******1111"),
        ("41111111111", "411111*1111"),
        ("4111111111", "******1111"),
        ("12345", "*2345"),
        ("1234", "****"),
        ("", ""),
    ],
)
def test_mask_pan(pan, shown):
    assert mask_pan(pan) == shown
    assert len(mask_pan(pan)) == len(pan)


def test_redacted_fields():
    shown = redacted_fields(Message("0200", {**SALE.fields, 34: "5041234567890123456", 36: "0123456789D", 70: "301"}))
    assert shown["2"] == "622848*********0017"
    assert shown["34"] == "504123*********3456"
    assert shown["35"] == f"[redacted {len(TRACK2)}]"
    assert shown["36"] == "[redacted 11]"
    assert shown["45"] == f"[redacted {len(TRACK1)}]"
    assert shown["52"] == "[redacted 16]"
    assert shown["3"] == "000000" and shown["41"] == "TID00001" and shown["70"] == "301"
    assert list(shown) == sorted(shown, key=int)


def test_chip_data_shows_only_what_is_not_sensitive():
    shown = redacted_fields(Message("0200", {55: ICC}))["55"]
    assert shown == (
        "9F26=1122334455667788 5A=622848*********0017 57=[redacted 19] "
        "5F20=[redacted 9] 9F1F=[redacted 6] 5F34=01"
    )


@pytest.mark.parametrize("tag", ["56", "57", "5F20", "9F0B", "9F1F", "9F20", "9F6B", "99"])
def test_each_sensitive_chip_tag_is_hidden(tag):
    secret = bytes.fromhex("4761739001010010D30121011234")
    shown = redacted_fields(Message("0200", {55: tlv([(tag, secret)]).hex()}))["55"]
    assert shown == f"{tag}=[redacted {len(secret)}]"


def test_chip_data_inside_a_template_is_redacted_too():
    inner = tlv([("57", bytes.fromhex(TRACK2 + "F")), ("5A", bytes.fromhex(PAN + "F")), ("9F36", b"\x00\x01")])
    shown = redacted_fields(Message("0200", {55: tlv([("70", inner)]).hex()}))["55"]
    assert shown == "70=[57=[redacted 19] 5A=622848*********0017 9F36=0001]"


def test_unparsable_chip_data_is_hidden_whole():
    shown = redacted_fields(Message("0200", {55: "5A0A" + PAN[:8]}))["55"]
    assert shown == "[unparsable ICC data redacted 6 bytes]"


# --- hex dumps ---------------------------------------------------------------


def dumped_bytes(lines: list[str]) -> list[int | None]:
    """The bytes a hex dump shows, in order; None where it printed '**'."""
    out: list[int | None] = []
    for line in lines:
        if not line.startswith("  ") or len(line) < 8 or not all(c in "0123456789ABCDEF" for c in line[2:6]):
            continue
        for cell in line[8 : 8 + 47].split():
            out.append(None if cell == "**" else int(cell, 16))
    return out


def contains(haystack: list[int | None], needle: bytes) -> bool:
    n = len(needle)
    return any(haystack[i : i + n] == list(needle) for i in range(len(haystack) - n + 1))


def secrets(name: str, message: Message) -> list[bytes]:
    """How each sensitive value looks on the wire in `name`: ASCII text or packed BCD."""
    packed = load_dialect(name).spec["2"]["data_enc"] == "b"
    out = []
    for number in (2, 35, 36):
        if number in message:
            value = message[number]
            out.append(bytes.fromhex(value[: len(value) // 2 * 2]) if packed else value.encode())
    for number in (45,):
        if number in message:
            out.append(message[number].encode())
    if 52 in message:
        out.append(bytes.fromhex(message[52]))
    if 55 in message:
        out.append(bytes.fromhex(TRACK2 + "F"))
    return [s for s in out if len(s) >= 6]


def assert_clean(text: str, lines: list[str], name: str, message: Message) -> None:
    shown = dumped_bytes(lines)
    for secret in secrets(name, message):
        assert not contains(shown, secret), f"{secret.hex()} visible in the dump"
    for value in (PAN, TRACK2, TRACK1, PIN_BLOCK, "ZHANG/SAN", PAN[:12], PAN[6:]):
        assert value not in text
        assert value not in text.replace(" ", "")


@pytest.mark.parametrize("name", DIALECTS)
def test_dump_of_a_sale_hides_card_data(name):
    c = codec(name)
    body = c.encode(SALE)
    message, lines = describe(c, body)
    assert message == SALE
    text = "\n".join(lines)
    assert_clean(text, lines, name, SALE)
    assert "622848*********0017" in text
    shown = dumped_bytes(lines)
    assert len(shown) == len(body)
    assert shown[:2] == list(body[:2]), "the MTI prints in clear"
    assert contains(shown, b"TID00001"), "non-sensitive fields print in clear"


def test_prefix_prints_in_clear_ahead_of_the_body():
    c = codec("cup")
    body = c.encode(SALE)
    prefix = len(body).to_bytes(2, "big") + bytes.fromhex("6000120034") + bytes.fromhex("603100000000")
    _, lines = describe(c, body, prefix)
    shown = dumped_bytes(lines)
    assert shown[: len(prefix)] == list(prefix)
    assert_clean("\n".join(lines), lines, "cup", SALE)


def test_trace_record_has_a_title_dump_and_table():
    c = codec("iso87ascii")
    body = c.encode(SALE)
    record = trace_record(WHEN, "<-", "127.0.0.1:5555", c, body, b"\x01\x00")
    title, *rest = record.splitlines()
    assert title == f"2024-05-01T09:30:00.123 <- 127.0.0.1:5555 iso87ascii 0200 ({len(body) + 2} bytes)"
    assert "  MTI   0200" in rest
    assert any(line.startswith("  [ 41]") and line.endswith("TID00001") for line in rest)
    assert_clean(record, rest, "iso87ascii", SALE)
    assert record.endswith("\n")


def undecodable_variants(name: str) -> list[tuple[str, bytes]]:
    """Ways a message carrying PAN and track 2 can fail to decode."""
    c = codec(name)
    body = c.encode(SALE)
    spans = c.spans(body)
    pan_start, pan_end = spans["2"]
    track_start, _ = spans["35"]
    packed = name != "iso87ascii"
    bad_digit = b"\xaa" if packed else b"X"
    return [
        ("truncated after the PAN", body[: spans["41"][0] + 3]),
        ("truncated inside the PAN", body[: pan_start + 6]),
        ("truncated inside track 2", body[: track_start + 8]),
        ("non-digit inside the PAN", body[: pan_end - 3] + bad_digit + body[pan_end - 2 :]),
        ("non-digit inside track 2", body[: track_start + 5] + bad_digit + body[track_start + 6 :]),
        ("PAN length too long", body[:pan_start] + (b"\x99" if packed else b"99") + body[pan_start + (1 if packed else 2) :]),
        ("trailing garbage", body + b"\x00\x00"),
        ("bad MTI", (b"\x02\xa0" if packed else b"02A0") + body[2 if packed else 4 :]),
        ("bit 65 set", _with_bit_65(c)),
    ]


def _with_bit_65(c: Codec) -> bytes:
    """SALE plus field 70, so it has a secondary bitmap, with bit 65 switched on."""
    body = c.encode(Message(SALE.mti, {**SALE.fields, 70: "301"}))
    at = c.spans(body)["1"][0]
    first = b"C" if c.dialect.spec["1"]["data_enc"] == "ascii" else bytes([body[at] | 0x80])
    return body[:at] + first + body[at + 1 :]


@pytest.mark.parametrize("name", DIALECTS)
def test_undecodable_messages_never_show_card_data(name):
    c = codec(name)
    for why, data in undecodable_variants(name):
        with pytest.raises(CodecError):
            c.decode(data)
        message, lines = describe(c, data)
        assert message is None, why
        text = "\n".join(lines)
        assert lines[-1].startswith("  undecodable: "), why
        assert_clean(text, lines, name, SALE)
        record = trace_record(WHEN, "->", "peer", c, data)
        assert " ???? " in record.splitlines()[0]
        assert_clean(record, lines, name, SALE)


def test_undecodable_dump_still_shows_the_mti_and_what_was_read_safely():
    c = codec("iso87ascii")
    body = c.encode(SALE)
    _, lines = describe(c, body[:-5])
    shown = dumped_bytes(lines)
    assert shown[:4] == list(b"0200")
    assert shown[-1] is None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(DIALECTS))
def test_no_generated_message_leaks_its_pan_or_tracks(data, name):
    c = codec(name)
    message = data.draw(messages(c.dialect, max_fields=8))
    message[2] = luhn_pan("622848" + data.draw(st.text("0123456789", min_size=6, max_size=12)))
    message[35] = message[2] + "D" + data.draw(st.text("0123456789", min_size=7, max_size=12))
    body = c.encode(message)
    cut = data.draw(st.integers(0, len(body)))
    for candidate in (body, body[:cut]):
        _, lines = describe(c, candidate)
        shown = dumped_bytes(lines)
        text = "\n".join(lines)
        for secret in secrets(name, Message(message.mti, {2: message[2], 35: message[35]})):
            assert not contains(shown, secret)
        assert message[2] not in text.replace(" ", "")
