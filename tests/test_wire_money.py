"""Money is integer minor units of an ISO 4217 currency: exact both ways, never floats."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from possim.wire.money import Currency, currency, format_major, parse_major

CNY, JPY, BHD = currency("CNY"), currency("392"), currency("bhd")


def test_currency_lookup_by_numeric_or_alpha():
    assert CNY == Currency("156", "CNY", 2) == currency("156") == currency(" cny ")
    assert JPY == Currency("392", "JPY", 0)
    assert BHD == Currency("048", "BHD", 3)


@pytest.mark.parametrize("code", ["XYZ", "999", "", "15", "CNYY"])
def test_unknown_currency(code):
    with pytest.raises(ValueError) as caught:
        currency(code)
    assert repr(code) in str(caught.value)
    assert "ISO 4217" in str(caught.value)


@pytest.mark.parametrize(
    "text, cur, minor",
    [
        ("12.50", CNY, 1250),
        ("12.5", CNY, 1250),
        ("12", CNY, 1200),
        ("0", CNY, 0),
        ("0.01", CNY, 1),
        (" 7.00 ", CNY, 700),
        ("999999999.99", CNY, 99999999999),
        ("1500", JPY, 1500),
        ("1.500", BHD, 1500),
        ("0.001", BHD, 1),
        ("1.230", CNY, 123),
    ],
)
def test_parse_major(text, cur, minor):
    assert parse_major(text, cur) == minor
    assert isinstance(parse_major(text, cur), int)


@pytest.mark.parametrize(
    "text, cur, words",
    [
        ("1.234", CNY, "more than 2 decimal places for CNY"),
        ("1.5", JPY, "more than 0 decimal places for JPY"),
        ("0.0001", BHD, "more than 3 decimal places for BHD"),
        ("-1.00", CNY, "zero or more"),
        ("-0", CNY, "zero or more"),
        ("abc", CNY, "not a number"),
        ("", CNY, "not a number"),
        ("12,50", CNY, "not a number"),
        ("1e3", CNY, "not a number"),
        ("1_000", CNY, "not a number"),
        ("+5", CNY, "not a number"),
        ("NaN", CNY, "not a number"),
        ("Infinity", CNY, "not a number"),
        (".5", CNY, "not a number"),
        ("5.", CNY, "not a number"),
        ("١٢", CNY, "not a number"),
        ("12.50 CNY", CNY, "not a number"),
    ],
)
def test_parse_major_refuses(text, cur, words):
    with pytest.raises(ValueError) as caught:
        parse_major(text, cur)
    assert words in str(caught.value)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    "minor, cur, text",
    [
        (1250, CNY, "12.50"),
        (5, CNY, "0.05"),
        (0, CNY, "0.00"),
        (-1250, CNY, "-12.50"),
        (1500, JPY, "1500"),
        (0, JPY, "0"),
        (1, BHD, "0.001"),
        (12345, BHD, "12.345"),
    ],
)
def test_format_major(minor, cur, text):
    assert format_major(minor, cur) == text


@settings(max_examples=200, deadline=None)
@given(minor=st.integers(0, 10**15), cur=st.sampled_from([CNY, JPY, BHD, currency("USD"), currency("KWD")]))
def test_format_then_parse_is_exact(minor, cur):
    assert parse_major(format_major(minor, cur), cur) == minor
