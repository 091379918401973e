"""Terminal profiles and cards from fixtures, and the errors a user sees when they are wrong."""

import pytest

from possim.terminal.cards import DEFAULT_EXPIRY, CardError, resolve_card
from possim.terminal.profile import ProfileError, load_profile


def test_default_profile_is_the_first_terminal():
    profile = load_profile()
    assert profile.tid == "10000001"
    assert profile.mid == "898310048160001"
    assert profile.dialect == "cup"
    assert profile.address == ("127.0.0.1", 8583)
    assert profile.currency == "156"
    assert profile.framing.tpdu is not None


def test_profile_by_tid_with_overrides_ignoring_none():
    profile = load_profile("10000002", dialect="iso87binary", host="127.0.0.1:9000", timeout=None, currency="USD")
    assert profile.mid == "898310048160002"
    assert profile.dialect == "iso87binary"
    assert profile.address == ("127.0.0.1", 9000)
    assert profile.timeout == 10.0
    assert profile.currency == "840"


def test_profile_from_a_user_fixtures_folder(tmp_path):
    (tmp_path / "terminals.yaml").write_text(
        "terminals:\n  - {tid: T0000009, mid: M00000000000009, dialect: iso87ascii, host: '10.0.0.1:7000', timeout: 2}\n"
    )
    profile = load_profile("T0000009", tmp_path)
    assert (profile.dialect, profile.address, profile.timeout) == ("iso87ascii", ("10.0.0.1", 7000), 2)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: load_profile("99999999"), ["99999999", "10000001"]),
        (lambda: load_profile(host="localhost"), ["10000001", "ip:port"]),
        (lambda: load_profile(dialect="martian"), ["martian"]),
        (lambda: load_profile(timeout=0), ["timeout"]),
        (lambda: load_profile(currency="XXX"), ["XXX"]),
        (lambda: load_profile(colour="red"), ["colour"]),
    ],
)
def test_profile_errors_name_what_is_wrong(call, words):
    with pytest.raises(ProfileError) as info:
        call()
    for word in words:
        assert word in str(info.value)


def test_card_by_name_and_track_2():
    card = resolve_card("approve")
    assert card.track2 == "6228480010000000017D3012101" + "00000"
    assert card.masked_pan == "622848*********0017"
    assert "6228480010000000017" not in repr(card)


def test_raw_pan_gets_fixture_card_or_default_expiry():
    assert resolve_card("6228480010000000025").name == "insufficient"
    card = resolve_card("4111 1111 1111 1111")
    assert (card.pan, card.expiry) == ("4111111111111111", DEFAULT_EXPIRY)
    assert resolve_card("4111111111111111", expiry="2701").expiry == "2701"
    assert resolve_card("approve", expiry="2212").expiry == "2212"


@pytest.mark.parametrize("text, word", [("nosuch", "nosuch"), ("12345", "5 digits"), ("41111111111111111111", "20 digits")])
def test_card_errors(text, word):
    with pytest.raises(CardError, match=word):
        resolve_card(text)


def test_bad_expiry_is_refused():
    with pytest.raises(CardError, match="1399"):
        resolve_card("4111111111111111", expiry="1399")
