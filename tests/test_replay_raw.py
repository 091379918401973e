"""Raw frame replay (docs/replay.md "Raw frames") against real hosts on loopback ports.

A session of whole frames is recorded from a real host, written as a .hex
file with card data redacted, read back and replayed against a fresh host;
the redaction itself is checked per dialect on the terminal's own requests.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest
import yaml

from host_support import START, TID, purchase, running_host, sign_on
from settlement_support import lab_fixtures
from possim.terminal.cards import fixture_cards, resolve_card
from possim.terminal.emv import ChipRead, chip_data
from possim.terminal.messages import build_request
from possim.terminal.pin_pad import EncryptedPin
from possim.terminal.replay.raw import (
    DEFAULT_IGNORE, FieldDiff, RawFileError, RawFrame, read_hex, redact_frame, render, replay_raw, restore_body,
    restore_message, write_hex,
)
from possim.wire import tlv
from possim.wire.codec import Codec, CodecError
from possim.wire.dialect import load_dialect
from possim.wire.frame_redaction import RedactionError, redact_body, redact_message
from possim.wire.framing import encode_length
from possim.wire.message import Message
from possim.wire.qr_data import decode_qr_data, encode_qr_data

DIALECT = "iso87ascii"
CARDS = fixture_cards()
PIN_BLOCK = "0123456789ABCDEF"
HOLDER = b"ZHANG/SAN"


def keyless_fixtures(folder: Path, rules: bool = False) -> Path:
    """The built-in fixtures with terminal 10000001's master key removed: no keys at sign-on, so no MAC, and a
    recorded frame is accepted again as it was. Without `rules` the host misbehaves on no amount."""
    lab_fixtures(folder)
    terminals = yaml.safe_load((folder / "terminals.yaml").read_text())
    for entry in terminals["terminals"]:
        if entry["tid"] == TID:
            del entry["tmk"]
    (folder / "terminals.yaml").write_text(yaml.safe_dump(terminals))
    if not rules:
        (folder / "host_rules.yaml").write_text("rules: []\n")
    return folder


def record(host, messages: list[Message]) -> list[tuple[bytes, bytes]]:
    """Whole request and answer frames of a session, as a recording proxy sees them."""
    framing = host.dialect.framing
    exchanges = []
    with host.terminal() as pos:
        for message in messages:
            request = pos.framed(message)
            pos.send_raw(request)
            payload = pos.receive_payload()
            exchanges.append((request, encode_length(framing, len(payload)) + payload))
    return exchanges


def chip_sale(dialect_name: str, card_name: str = "approve2", stan: str = "000005", extra_tags: bool = True) -> Message:
    """A chip sale as the terminal builds it, field 55 carrying the card-identifying tags a real card adds."""
    dialect, card = load_dialect(dialect_name), resolve_card(card_name)
    read = ChipRead(amount=2500, currency="156", day=date(2026, 6, 15), transaction_type="00",
                    unpredictable_number=bytes.fromhex("A1B2C3D4"), atc=7, pin=False, pin_pad=False)
    chip = chip_data(card, read)
    if extra_tags:
        pan = card.pan + "F" * (len(card.pan) % 2)
        track = card.track2 + "F" * (len(card.track2) % 2)
        chip += tlv.encode([("5A", bytes.fromhex(pan)), ("57", bytes.fromhex(track)), ("5F20", HOLDER)])
    return build_request(dialect, "sale", tid=TID, mid="898310048160001", stan=stan, now=START, amount=2500,
                         currency="156", card=card, entry="chip", pin_pad=False, batch_number=1, chip=chip)


def swipe_sale_with_pin(dialect_name: str) -> Message:
    return build_request(load_dialect(dialect_name), "sale", tid=TID, mid="898310048160001", stan="000006", now=START,
                         amount=1250, currency="156", card=resolve_card("approve"), entry="swipe", pin_pad=True,
                         batch_number=1, pin=EncryptedPin(PIN_BLOCK))


def keyed_sale(dialect_name: str) -> Message:
    return build_request(load_dialect(dialect_name), "sale", tid=TID, mid="898310048160001", stan="000007", now=START,
                         amount=1250, currency="156", card=resolve_card("approve"), entry="manual", pin_pad=True,
                         batch_number=1)


def card_data_in(text: str) -> list[str]:
    """Which fixture cards' PANs or tracks a .hex file shows, in packed BCD or ASCII, whatever the spacing."""
    compact = "".join(text.split()).upper()
    found = []
    for card in CARDS.values():
        tail = f"D{card.expiry}{card.service_code}"  # what follows the PAN on track 2
        for form in (card.pan, card.pan.encode().hex(), tail, tail.encode().hex(), card.track2.encode().hex()):
            if form.upper() in compact:
                found.append(f"{card.name}: {form}")
    return found


def session(dialect) -> list[Message]:
    return [
        sign_on(dialect, "000001"),
        purchase(dialect, "000002", card="approve"),
        purchase(dialect, "000003", card="insufficient", keyed=True, amount=7751),
        purchase(dialect, "000004", card="approve2", keyed=True, amount=3300),
        chip_sale(DIALECT, extra_tags=False),
    ]


@pytest.fixture
def recorded(tmp_path) -> tuple[Path, Path, list[tuple[bytes, bytes]]]:
    """A session recorded from a host on a loopback port and written as session.hex."""
    fixtures = keyless_fixtures(tmp_path / "fixtures")
    with running_host(tmp_path, DIALECT, fixtures, db_name="recorded.sqlite") as host:
        exchanges = record(host, session(host.dialect))
    codec = Codec(load_dialect(DIALECT))
    codes = [codec.decode(answer[2:])[39] for _, answer in exchanges]
    assert codes == ["00", "00", "51", "00", "00"]
    path = tmp_path / "session.hex"
    write_hex(path, exchanges, load_dialect(DIALECT), comment="recorded by test_replay_raw")
    return path, fixtures, exchanges


def replay(tmp_path: Path, fixtures: Path, frames: list[RawFrame], db_name: str, timeout: float = 5.0,
           cards_from: Path | None = None):
    """Replay against a fresh host of `fixtures`; the replay restores cards from `cards_from` (default the same)."""
    with running_host(tmp_path, DIALECT, fixtures, db_name=db_name) as host:
        report = asyncio.run(replay_raw(frames, ("127.0.0.1", host.port), host.dialect, ignore=DEFAULT_IGNORE,
                                        timeout=timeout, fixtures_dir=cards_from or fixtures))
        journal = host.journal()
        try:
            return report, journal.transactions()
        finally:
            journal.close()


# ---- recording, reading back, replaying ----


def test_the_written_file_holds_no_card_data_but_every_frame(recorded):
    path, _, exchanges = recorded
    text = path.read_text()
    assert card_data_in(text) == []
    assert "card data is redacted" in text.lower() and "# recorded by test_replay_raw" in text
    assert "restores" in text and "cards.yaml" in text
    frames = read_hex(path)
    assert [f.line for f in frames] == [f.recorded_line - 1 for f in frames]
    assert len(frames) == len(exchanges)
    for frame, (request, answer) in zip(frames, exchanges):
        assert len(frame.request) == len(request) and frame.request[:2] == request[:2]  # length header as it was
        assert frame.recorded == answer  # the host's answers carry no card data: written as they came
    # the swiped sale's track and the keyed sale's PAN are still there, blanked: first 6, zeros, last 4
    approve, insufficient = CARDS["approve"], CARDS["insufficient"]
    blanked_track = approve.pan[:6] + "0" * 9 + approve.pan[-4:] + "D" + "0" * 12
    assert blanked_track.encode().hex().upper() in text.replace(" ", "")
    assert (insufficient.pan[:6] + "0" * 9 + insufficient.pan[-4:]).encode().hex().upper() in text.replace(" ", "")
    # the card sequence, the cryptogram and every other chip tag are kept: only card-identifying tags are blanked
    assert chip_sale(DIALECT, extra_tags=False)[55] in text.replace(" ", "")


def test_replay_against_a_fresh_host_gives_the_recorded_answers(recorded, tmp_path):
    path, fixtures, _ = recorded
    report, journal = replay(tmp_path, fixtures, read_hex(path), "fresh.sqlite")
    assert report.passed, render(report)
    assert [(r.mti, r.stan, r.verdict) for r in report.results] == [
        ("0800", "000001", "same"), ("0200", "000002", "same"), ("0200", "000003", "same"),
        ("0200", "000004", "same"), ("0200", "000005", "same"),
    ]
    # the cards were restored from cards.yaml: a blanked PAN is no card of the issuer, yet the host approved
    rows = sorted((row.pan_masked, row.response_code, row.amount) for row in journal)
    assert rows == sorted([("622848*********0017", "00", 1250), ("622848*********0025", "51", 7751),
                           ("622848*********0082", "00", 3300), ("622848*********0082", "00", 2500)])
    shown = render(report)
    assert "line 10 0200 STAN 000002: same" in shown
    assert shown.splitlines()[-1] == "5 frames: 5 same, 0 differ, 0 errors: passed"
    assert report.to_json()["passed"] is True and report.to_json()["same"] == 5


def test_a_card_missing_from_cards_yaml_is_sent_redacted_and_the_result_says_so(recorded, tmp_path):
    path, fixtures, _ = recorded
    fewer = keyless_fixtures(tmp_path / "fewer")
    cards = yaml.safe_load((fewer / "cards.yaml").read_text())
    cards["cards"] = [card for card in cards["cards"] if card["name"] != "approve"]
    (fewer / "cards.yaml").write_text(yaml.safe_dump(cards))
    report, _ = replay(tmp_path, fixtures, read_hex(path), "fresh.sqlite", cards_from=fewer)
    assert [r.verdict for r in report.results] == ["same", "differs", "same", "same", "same"]
    swiped = report.results[1]
    assert swiped.note == (
        "PAN 622848*********0017 matches no card of cards.yaml: sent redacted, the host will decline it")
    [declined] = swiped.differences
    assert (declined.field, declined.recorded) == ("39", "00") and declined.actual != "00"
    assert "  note: PAN 622848*********0017 matches no card" in render(report)


def test_a_changed_recorded_answer_fails_naming_the_field_and_both_values(recorded, tmp_path):
    path, fixtures, _ = recorded
    frames = read_hex(path)
    codec = Codec(load_dialect(DIALECT))
    target = frames[1]
    answer = codec.decode(target.recorded[2:])
    answer[39] = "05"
    body = codec.encode(answer)
    lines = path.read_text().split("\n")
    lines[target.recorded_line - 1] = "< " + (encode_length(codec.dialect.framing, len(body)) + body).hex()
    path.write_text("\n".join(lines))

    report, _ = replay(tmp_path, fixtures, read_hex(path), "again.sqlite")
    assert not report.passed
    assert [r.verdict for r in report.results] == ["same", "differs", "same", "same", "same"]
    assert report.results[1].differences == [FieldDiff("39", "05", "00")]
    shown = render(report)
    assert (f"line {target.line} 0200 STAN 000002: 1 field differs\n"
            "  field 39: recorded '05', got '00' (approved)") in shown
    assert shown.endswith("5 frames: 4 same, 1 differ, 0 errors: FAILED")
    assert report.to_json()["results"][1]["differences"] == [{"field": "39", "recorded": "05", "actual": "00"}]


def test_no_answer_in_time_is_an_error_and_the_next_frame_is_still_replayed(tmp_path):
    quiet = keyless_fixtures(tmp_path / "quiet")
    with running_host(tmp_path, DIALECT, quiet, db_name="recorded.sqlite") as host:
        exchanges = record(host, [sign_on(host.dialect, "000001"), purchase(host.dialect, "000002", amount=6802),
                                  purchase(host.dialect, "000003", amount=1250)])
    path = tmp_path / "drop.hex"
    write_hex(path, exchanges, load_dialect(DIALECT))
    # the built-in rules drop the answer to an amount of 6802
    report, _ = replay(tmp_path, keyless_fixtures(tmp_path / "rules", rules=True), read_hex(path), "fresh.sqlite",
                       timeout=0.5)
    assert [r.verdict for r in report.results] == ["same", "error", "same"]
    assert "no answer within 0.5 s" in report.results[1].error
    assert "error: host 127.0.0.1:" in render(report)


def test_an_answer_that_does_not_decode_is_an_error_with_the_codec_message(tmp_path):
    dialect = load_dialect(DIALECT)
    request = Codec(dialect).encode(sign_on(dialect, "000001"))
    frames = [RawFrame(1, encode_length(dialect.framing, len(request)) + request, None, None),
              RawFrame(3, encode_length(dialect.framing, len(request)) + request, b"\x00\x04" + b"0810", 4)]
    garbage = b"0810ZZZZZZZZZZZZZZZZ"

    async def main():
        async def answer(reader, writer):
            try:
                while await reader.readexactly(2 + len(request)):
                    writer.write(encode_length(dialect.framing, len(garbage)) + garbage)
                    await writer.drain()
            except asyncio.IncompleteReadError:
                writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await replay_raw(frames, ("127.0.0.1", port), dialect, ignore=DEFAULT_IGNORE, timeout=2.0)

    report = asyncio.run(main())
    first, second = report.results
    assert first.passed and first.note == "no answer was recorded: this one is not compared"
    with pytest.raises(CodecError) as caught:
        Codec(dialect).decode(garbage)
    assert second.error == f"answer does not decode: {caught.value}"
    assert second.error.startswith("answer does not decode: primary bitmap at byte offset 4")
    assert not report.passed and report.count("error") == 1


# ---- the file format ----


@pytest.mark.parametrize(("text", "where", "why"), [
    ("# a session\n> 0004 30 8G 00\n", ":2:12:", "'G' is not a hex digit"),
    ("> 0004 3030\n< 0004303\n", ":2:", "7 hex digits, an odd number"),
    ("\n< 0004 3030 3030\n", ":2:", "an answer ('<') with no request above it"),
    ("> 0004 3030 3030\n< 0004 3030 3030\n# again\n< 0004 3030 3030\n", ":4:",
     "a second answer to the request of line 1 (its answer is on line 2)"),
    ("# nothing but comments\n\n   # and blanks\n", ":1:", "no frames"),
    ("> 0004 30 30 30 30\n>\n", ":2:", "no hex after '>'"),
])
def test_a_bad_file_is_one_error_naming_file_and_line(tmp_path, text, where, why):
    path = tmp_path / "bad.hex"
    path.write_text(text)
    with pytest.raises(RawFileError) as caught:
        read_hex(path)
    assert str(caught.value).startswith(f"{path}{where} ")
    assert why in str(caught.value)


def test_markers_comments_blanks_and_spaces(tmp_path):
    path = tmp_path / "ok.hex"
    path.write_text("# header\n\n0004 3030 3030   # a request without a marker; zz is no hex\n"
                    "  <  00 04 30 31 30 30\n> 0004303130\r\n30\n")
    assert read_hex(path) == [
        RawFrame(3, bytes.fromhex("000430303030"), bytes.fromhex("000430313030"), 4),
        RawFrame(5, bytes.fromhex("0004303130"), None, None),
        RawFrame(6, b"0", None, None),
    ]


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(RawFileError, match=r"missing\.hex: cannot read"):
        read_hex(tmp_path / "missing.hex")


def test_write_hex_leaves_out_an_undecodable_frame_with_a_comment_and_writes_whole(tmp_path):
    dialect = load_dialect(DIALECT)
    codec = Codec(dialect)
    good = codec.encode(keyed_sale(DIALECT))
    start, _ = codec.spans(good)["2"]
    bad = good[:start + 4] + b"X" + good[start + 5:]  # a letter inside the PAN
    framed = [encode_length(dialect.framing, len(b)) + b for b in (bad, good)]
    path = tmp_path / "out.hex"
    path.write_text("old content")
    write_hex(path, [(framed[0], framed[1]), (framed[1], None)], dialect)
    text = path.read_text()
    assert ("# exchange 1: request not written, nor its answer:"
            " cannot redact an undecodable message: field 2 at byte") in text
    assert card_data_in(text) == [] and "old content" not in text
    assert [f.line for f in read_hex(path)] == [len(text.splitlines())]
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


# ---- redaction and restoring, per dialect ----


@pytest.mark.parametrize("name", ["cup", "iso87ascii", "iso87binary"])
@pytest.mark.parametrize("build", [chip_sale, swipe_sale_with_pin, keyed_sale], ids=["chip", "track2", "keyed"])
def test_redact_then_restore_round_trip(name, build):
    codec = Codec(load_dialect(name))
    original = build(name)
    body = codec.encode(original)
    redacted = redact_body(codec, body)
    card = CARDS["approve2" if build is chip_sale else "approve"]
    assert len(redacted) == len(body)
    for form in (card.pan.encode(), bytes.fromhex(card.pan[:18]), HOLDER, bytes.fromhex(PIN_BLOCK)):
        assert form not in redacted
    shown = codec.decode(redacted)
    blanked = card.pan[:6] + "0" * (len(card.pan) - 10) + card.pan[-4:]
    if 2 in original:
        assert shown[2] == blanked
    if 35 in original:
        assert shown[35] == blanked + "D" + "0" * (len(original[35]) - len(card.pan) - 1)
    if 52 in original:
        assert shown[52] == "0" * 16
    if 55 in original:
        tags = dict(tlv.parse(bytes.fromhex(shown[55])))
        before = dict(tlv.parse(bytes.fromhex(original[55])))
        assert {t for t, v in tags.items() if v != before[t]} == {"5A", "57", "5F20"}
        assert all(set(tags[t]) == {0} for t in ("5A", "57", "5F20"))
    untouched = {n: v for n, v in original.fields.items() if n not in (2, 35, 52, 55)}
    assert {n: shown[n] for n in untouched} == untouched

    restored = codec.decode(restore_body(codec, redacted, CARDS.values()))
    assert restored.mti == original.mti
    assert restored.fields == {**shown.fields, **{n: original[n] for n in (2, 35) if n in original}}


def test_track_1_keeps_format_code_separators_and_the_pan_ends_only():
    dialect = load_dialect("iso87ascii")
    track1 = "B6228480010000000017^DAVID/SAN^3012101000123"
    shown = redact_message(dialect, Message("0200", {45: track1, 36: "996228480010000000017=3012=0099"}))
    assert shown[45] == "B" + "622848" + "0" * 9 + "0017" + "^" + "0" * len("DAVID/SAN") + "^" + "0" * 13
    assert shown[36] == "996228" + "0" * 11 + "0017" + "=0000=0000"  # track 3's format code counts with its PAN


def test_a_payment_code_in_qr_data_keeps_its_ends_and_every_other_value():
    dialect = load_dialect("iso87ascii")
    code = "134567890123456789"
    text = encode_qr_data({"payment_code": code, "order_no": "Q2026061500001", "reason": "a * b"})
    shown = decode_qr_data(redact_message(dialect, Message("0200", {57: text}))[57])
    assert shown == {"payment_code": "134567" + "0" * 8 + "6789", "order_no": "Q2026061500001", "reason": "a * b"}
    assert redact_message(dialect, Message("0200", {59: "not QR data"}))[59] == "0" * 11


@pytest.mark.parametrize("name", ["cup", "iso87ascii"])
def test_working_keys_in_an_answer_are_zeros_a_ksn_in_a_request_is_kept(name):
    dialect = load_dialect(name)
    block = "A1" * 40
    field = int(dialect.roles["working_keys"])
    assert redact_message(dialect, Message("0810", {39: "00", field: block}))[field] == "0" * 80
    ksn = "FFFF9876543210E00001"
    assert redact_message(dialect, Message("0200", {field: ksn}))[field] == ksn


def test_chip_data_that_cannot_be_rewritten_in_place_is_all_zeros():
    dialect = load_dialect("iso87binary")
    padded = (tlv.encode([("9F26", bytes(8))]) + b"\x00" + tlv.encode([("5A", bytes.fromhex("6228480010000000017F"))]))
    assert redact_message(dialect, Message("0200", {55: padded.hex().upper()}))[55] == "00" * len(padded)
    assert redact_message(dialect, Message("0200", {55: "9F2602"}))[55] == "000000"  # unparsable


def test_an_undecodable_body_names_field_and_offset_never_the_bytes():
    codec = Codec(load_dialect("iso87binary"))
    body = codec.encode(keyed_sale("iso87binary"))
    start, _ = codec.spans(body)["2"]
    bad = body[:start + 1] + b"\xAB" + body[start + 2:]
    with pytest.raises(RedactionError) as caught:
        redact_body(codec, bad)
    assert caught.value.field == "2" and caught.value.offset == start + 1
    assert "field 2 at byte offset" in str(caught.value) and "6228" not in str(caught.value)
    with pytest.raises(RedactionError, match="shorter than its length header"):
        redact_frame(codec, b"\x00")


def test_restoring_names_a_pan_no_card_or_several_cards_match():
    fields = {3: "000000", 2: "6228480000000009999"}
    message, note = restore_message(Message("0200", fields), CARDS.values())
    assert message.fields == fields
    assert note == "PAN 622848*********9999 matches no card of cards.yaml: sent redacted, the host will decline it"
    twins = [resolve_card("approve"), resolve_card("approve")]
    _, note = restore_message(Message("0200", {2: "6228480000000000017"}), twins)
    assert note.startswith("PAN 622848*********0017 matches 2 cards (approve, approve)")
    clear = Message("0200", {35: CARDS["approve"].track2})
    assert restore_message(clear, CARDS.values()) == (clear, None)  # a PAN in clear is sent as it is
    assert restore_message(Message("0800", {70: "001"}), CARDS.values())[1] is None
