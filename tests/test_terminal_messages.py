"""The terminal's requests, encoded with the real codec and read back, against docs/messages.md."""

from datetime import datetime

import pytest

from possim.terminal.cards import resolve_card
from possim.terminal.messages import (
    answer_problem,
    build_purchase,
    build_reversal,
    build_sign_on,
    entry_mode,
    reversal_original,
)
from possim.wire.codec import Codec
from possim.wire.dialect import load_dialect
from possim.wire.message import Message

DIALECTS = ["cup", "iso87ascii", "iso87binary"]
NOW = datetime(2025, 3, 14, 9, 26, 53)
TID, MID = "10000001", "898310048160001"


def round_trip(dialect_name: str, message: Message) -> Message:
    codec = Codec(load_dialect(dialect_name))
    decoded = codec.decode(codec.encode(message))
    assert decoded == message
    return decoded


def purchase(dialect_name: str, manual: bool = False, pin_pad: bool = True) -> Message:
    return build_purchase(
        load_dialect(dialect_name), tid=TID, mid=MID, stan="000042", now=NOW, amount=1250, currency="156",
        card=resolve_card("approve"), manual=manual, pin_pad=pin_pad, batch_number=3,
    )


@pytest.mark.parametrize("name", DIALECTS)
def test_sign_on_fields(name):
    dialect = load_dialect(name)
    message = round_trip(name, build_sign_on(dialect, tid=TID, mid=MID, stan="000001", now=NOW, batch_number=3))
    assert message.mti == "0800"
    assert message[11] == "000001"
    assert (message[41], message[42]) == (TID, MID)
    assert dialect.get_role(message, "network_code") == ("003" if name == "cup" else "001")  # cup: double-length keys
    if name == "cup":
        assert message[60] == "00" + "000003" + "003"
        assert message[63] == "001"
        assert 7 not in message and 70 not in message
    else:
        assert message[70] == "001"
        assert message[7] == "0314092653"
        assert 60 not in message and 63 not in message


@pytest.mark.parametrize("name", DIALECTS)
def test_magstripe_purchase_carries_track_2_and_no_pan(name):
    message = round_trip(name, purchase(name))
    assert message.mti == "0200"
    assert message[3] == "000000"
    assert message[4] == "000000001250"
    assert message[11] == "000042"
    assert (message[12], message[13]) == ("092653", "0314")
    assert message[22] == ("022" if name == "cup" else "021")  # cup: no PIN in it; iso87: PIN pad present
    assert message[25] == "00"
    assert message[35] == "6228480010000000017D3012101" + "00000"
    assert 2 not in message and 14 not in message
    assert (message[41], message[42], message[49]) == (TID, MID, "156")
    if name == "cup":
        assert message[60] == "22" + "000003" + "000"
        assert 7 not in message
    else:
        assert message[7] == "0314092653"
        assert 60 not in message


@pytest.mark.parametrize("name", DIALECTS)
def test_manual_purchase_carries_pan_and_expiry_and_no_track(name):
    message = round_trip(name, purchase(name, manual=True, pin_pad=False))
    assert message[2] == "6228480010000000017"
    assert message[14] == "3012"
    assert message[22] == "012"
    assert 35 not in message


def test_entry_modes_say_pin_capability_in_iso87_and_pin_presence_in_cup():
    iso, cup = load_dialect("iso87ascii"), load_dialect("cup")
    assert [entry_mode(iso, m, p, False) for m in ("swipe", "manual") for p in (True, False)] == ["021", "022", "011", "012"]
    assert [entry_mode(cup, m, True, sent) for m in ("swipe", "manual") for sent in (True, False)] == ["021", "022", "011", "012"]
    assert [entry_mode(cup, m, True, True) for m in ("chip", "contactless")] == ["051", "071"]
    assert [entry_mode(iso, m, False, True) for m in ("chip", "contactless")] == ["052", "072"]
    with pytest.raises(ValueError, match="entry 'tap'"):
        entry_mode(cup, "tap", True, True)


@pytest.mark.parametrize("amount", [-1, 10**12, 12.5, True])
def test_purchase_refuses_amounts_that_do_not_fit_field_4(amount):
    with pytest.raises(ValueError, match="amount"):
        build_purchase(
            load_dialect("cup"), tid=TID, mid=MID, stan="000001", now=NOW, amount=amount, currency="156",
            card=resolve_card("approve"), manual=False, pin_pad=True, batch_number=1,
        )


def test_reversal_keeps_no_card_data():
    original = reversal_original(purchase("iso87ascii", manual=True))
    assert not {2, 14, 35, 52, 55} & set(original.fields)
    assert original.mti == "0200" and original[11] == "000042"


def test_iso87_reversal_has_new_stan_and_field_90():
    dialect = load_dialect("iso87ascii")
    original = reversal_original(purchase("iso87ascii"))
    later = datetime(2025, 3, 14, 9, 27, 5)
    message = round_trip(
        "iso87ascii", build_reversal(dialect, original, stan="000043", now=later, reason="98", repeat=False)
    )
    assert message.mti == "0400"
    assert message[11] == "000043"
    assert message[7] == "0314092705"
    assert message[39] == "98"
    assert message[90] == "0200" + "000042" + "0314092653" + "0" * 22
    for number, value in {3: "000000", 4: "000000001250", 22: "021", 25: "00", 41: TID, 42: MID, 49: "156"}.items():
        assert message[number] == value
    assert not {2, 14, 35, 12, 13} & set(message.fields)


def test_iso87binary_reversal_round_trips_field_90():
    dialect = load_dialect("iso87binary")
    original = reversal_original(purchase("iso87binary"))
    message = round_trip("iso87binary", build_reversal(dialect, original, stan="000050", now=NOW, reason="96", repeat=True))
    assert message.mti == "0401"
    assert message[39] == "96"
    assert message[90].startswith("0200000042")


def test_cup_reversal_reuses_stan_and_carries_60_1_and_60_2():
    dialect = load_dialect("cup")
    original = reversal_original(purchase("cup"))
    message = round_trip("cup", build_reversal(dialect, original, stan="000042", now=NOW, reason="98", repeat=True))
    assert message.mti == "0401"
    assert message[11] == "000042"
    assert dialect.get_role(message, "transaction_type") == "22"
    assert dialect.get_role(message, "batch_number") == "000003"
    assert 90 not in message and 7 not in message


def test_answer_matching():
    request = purchase("cup")
    good = Message("0210", {11: "000042", 39: "00", 41: TID})
    assert answer_problem(request, good) is None
    assert "STAN" in answer_problem(request, Message("0210", {11: "000041", 39: "00", 41: TID}))
    assert "MTI" in answer_problem(request, Message("0810", {11: "000042", 39: "00"}))
    assert "terminal" in answer_problem(request, Message("0210", {11: "000042", 39: "00", 41: "99999999"}))
    assert "39" in answer_problem(request, Message("0210", {11: "000042", 41: TID}))
