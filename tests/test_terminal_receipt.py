"""Receipts: exact text, the printer's width, and never a whole PAN."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from types import SimpleNamespace

import pytest

from possim.terminal.receipt import KIND_NAMES, customer_receipt, merchant_receipt, settlement_slip
from possim.terminal.terminal import ReversalOutcome, TransactionResult

PAN = "6228480010000000017"  # the `approve` test card of cards.yaml
WHEN = datetime(2024, 5, 1, 14, 3, 22)
MERCHANT = ("CITY NON-TAX REVENUE HALL", "898310048160001")

SALE = TransactionResult(
    operation="sale", tid="10000001", request_mti="0200", mti="0210", stan="000002", response_code="00",
    approved=True, rrn="412200000001", auth_code="123456", amount=1250, currency="156",
    masked_pan="622848*********0017", message="approved", timed_out=False, sent=True,
)
DECLINE = replace(
    SALE, operation="purchase", stan="000003", response_code="51", approved=False, rrn="412200000002",
    auth_code=None, amount=7751, message="insufficient funds",
)
NO_ANSWER = replace(
    SALE, mti=None, response_code=None, approved=False, rrn=None, auth_code=None, timed_out=True,
    message="no answer in time",
    reversal=ReversalOutcome("000002", "000003", "98", True, 1, "0400", "00", False, "reversal acknowledged"),
)


def test_an_approved_sale_customer_copy():
    expected = (
        "   CITY NON-TAX REVENUE HALL\n"
        "MERCHANT ID      898310048160001\n"
        "TERMINAL ID             10000001\n"
        "BATCH                     000001\n"
        "STAN                      000002\n"
        "DATE/TIME    2024-05-01 14:03:22\n"
        "--------------------------------\n"
        "SALE\n"
        "CARD         622848*********0017\n"
        "AMOUNT                 CNY 12.50\n"
        "AUTH CODE                 123456\n"
        "RRN                 412200000001\n"
        "--------------------------------\n"
        "APPROVED\n"
        "--------------------------------\n"
        "         CUSTOMER COPY\n"
    )
    assert customer_receipt(SALE, *MERCHANT, WHEN, 1) == expected


def test_a_declined_purchase_customer_copy_40_columns():
    expected = (
        "        VEHICLE LICENSING OFFICE\n"
        "MERCHANT ID              898310048160002\n"
        "TERMINAL ID                     10000001\n"
        "BATCH                             000007\n"
        "STAN                              000003\n"
        "DATE/TIME            2024-05-01 14:03:22\n"
        "----------------------------------------\n"
        "SALE\n"
        "CARD                 622848*********0017\n"
        "AMOUNT                         CNY 77.51\n"
        "RRN                         412200000002\n"
        "----------------------------------------\n"
        "DECLINED 51 INSUFFICIENT FUNDS\n"
        "----------------------------------------\n"
        "             CUSTOMER COPY\n"
    )
    assert customer_receipt(DECLINE, "VEHICLE LICENSING OFFICE", "898310048160002", WHEN, 7, width=40) == expected


def test_the_merchant_copy_of_an_approved_sale_has_a_signature_line():
    copy = merchant_receipt(SALE, *MERCHANT, WHEN, 1)
    customer = customer_receipt(SALE, *MERCHANT, WHEN, 1)
    body = customer.removesuffix("--------------------------------\n         CUSTOMER COPY\n")
    assert copy == body + (
        "\n"
        "\n"
        "________________________________\n"
        "CARDHOLDER SIGNATURE\n"
        "--------------------------------\n"
        "         MERCHANT COPY\n"
    )


@pytest.mark.parametrize("result", [
    DECLINE,
    replace(SALE, operation="refund"),
    replace(SALE, operation="balance"),
    replace(SALE, operation="sale_void"),
])
def test_no_signature_line_but_under_an_approved_sale_or_completion(result):
    assert "SIGNATURE" not in merchant_receipt(result, *MERCHANT, WHEN, 1)


@pytest.mark.parametrize("operation", ["sale", "purchase", "offline", "completion"])
def test_approved_sales_and_completions_are_signed(operation):
    assert "CARDHOLDER SIGNATURE" in merchant_receipt(replace(SALE, operation=operation), *MERCHANT, WHEN, 1)


@pytest.mark.parametrize(("operation", "name"), [
    ("sale", "SALE"), ("purchase", "SALE"), ("sale_void", "VOID"), ("refund", "REFUND"), ("preauth", "PRE-AUTH"),
    ("preauth_void", "PRE-AUTH CANCEL"), ("completion", "COMPLETION"), ("completion_void", "COMPLETION VOID"),
    ("balance", "BALANCE"), ("offline", "OFFLINE SALE"), ("reversal", "REVERSAL"), ("new_thing", "NEW THING"),
])
def test_the_kind_is_printed_in_capitals(operation, name):
    lines = customer_receipt(replace(SALE, operation=operation), *MERCHANT, WHEN, 1).splitlines()
    assert lines[lines.index("-" * 32) + 1] == name


def test_an_unanswered_request_is_not_completed_and_says_what_became_of_it():
    lines = customer_receipt(NO_ANSWER, *MERCHANT, WHEN, 1).splitlines()
    assert lines[-6:] == ["-" * 32, "NOT COMPLETED", "NO ANSWER IN TIME", "REVERSED", "-" * 32, "         CUSTOMER COPY"]
    assert not any(line.startswith(("AUTH CODE", "RRN")) for line in lines)
    pending = replace(NO_ANSWER, reversal=replace(NO_ANSWER.reversal, acknowledged=False))
    assert "REVERSAL PENDING" in customer_receipt(pending, *MERCHANT, WHEN, 1).splitlines()


@pytest.mark.parametrize("width", [32, 40])
@pytest.mark.parametrize("result", [SALE, DECLINE, NO_ANSWER, replace(DECLINE, response_code="57"),
                                    replace(SALE, operation="completion_void", amount=123_456_789_012)])
def test_every_line_fits_the_width(result, width):
    long_name = "THE VERY LONG NAME OF A MERCHANT THAT DOES NOT FIT ON ONE LINE AT ALL"
    for text in (customer_receipt(result, long_name, "898310048160001", WHEN, 999_999, width),
                 merchant_receipt(result, long_name, "898310048160001", WHEN, 999_999, width)):
        lines = text.splitlines()
        assert all(len(line) <= width for line in lines), [line for line in lines if len(line) > width]
        name_lines = lines[:next(i for i, line in enumerate(lines) if line.startswith("MERCHANT ID"))]
        assert " ".join(line.strip() for line in name_lines) == long_name  # wrapped, not cut


def test_a_long_decline_text_wraps_inside_the_width():
    lines = customer_receipt(replace(DECLINE, response_code="57"), *MERCHANT, WHEN, 1).splitlines()
    start = lines.index("DECLINED 57 TRANSACTION NOT")
    assert lines[start:start + 2] == ["DECLINED 57 TRANSACTION NOT", "PERMITTED TO CARDHOLDER"]


@pytest.mark.parametrize("shown", ["622848*********0017", PAN, "62284800100****0017"])
def test_no_receipt_ever_shows_the_whole_pan(shown):
    result = replace(SALE, masked_pan=shown)
    for text in (customer_receipt(result, *MERCHANT, WHEN, 1), merchant_receipt(result, *MERCHANT, WHEN, 1, 40)):
        assert PAN not in text
        assert "62284800100" not in text  # never more than the first 6 digits
        assert "0017" in text


def test_amounts_use_the_currency_exponent():
    yen = customer_receipt(replace(SALE, amount=1250, currency="392"), *MERCHANT, WHEN, 1)
    dinar = customer_receipt(replace(SALE, amount=1250, currency="BHD"), *MERCHANT, WHEN, 1)
    assert "AMOUNT                  JPY 1250" in yen.splitlines()
    assert "AMOUNT                 BHD 1.250" in dinar.splitlines()


@pytest.mark.parametrize("width", [0, 23, 32.0])
def test_a_width_too_narrow_is_refused(width):
    with pytest.raises(ValueError, match="width"):
        customer_receipt(SALE, *MERCHANT, WHEN, 1, width)


# ---- settlement ----

TOTALS = {"156": {"debit_count": 3, "debit_amount": 4500, "credit_count": 1, "credit_amount": 500}}


def test_a_balanced_settlement_slip():
    expected = (
        "   CITY NON-TAX REVENUE HALL\n"
        "TERMINAL ID             10000001\n"
        "BATCH                     000001\n"
        "DATE/TIME    2024-05-01 23:00:00\n"
        "--------------------------------\n"
        "SETTLEMENT\n"
        "TOTALS CNY\n"
        "DEBITS     3           CNY 45.00\n"
        "CREDITS    1            CNY 5.00\n"
        "NET                    CNY 40.00\n"
        "--------------------------------\n"
        "         BATCH BALANCED\n"
    )
    assert settlement_slip("10000001", MERCHANT[0], 1, datetime(2024, 5, 1, 23), TOTALS, True) == expected


@pytest.mark.parametrize(("balanced", "verdict"), [
    (False, "BATCH OUT OF BALANCE"), (None, "HOST TOTALS NOT CONFIRMED"), (True, "BATCH BALANCED"),
])
def test_the_slip_ends_with_the_hosts_verdict(balanced, verdict):
    lines = settlement_slip("10000001", MERCHANT[0], 1, WHEN, TOTALS, balanced).splitlines()
    assert lines[-1].strip() == verdict
    assert sum("BALANCE" in line or "CONFIRMED" in line for line in lines) == 1


def test_a_slip_lists_each_currency_and_takes_totals_objects():
    totals = {
        "CNY": SimpleNamespace(debit_count=2, debit_amount=300, credit_count=3, credit_amount=1000),
        "392": {"debit_count": 1, "debit_amount": 5000, "credit_count": 0, "credit_amount": 0},
    }
    lines = settlement_slip("10000001", MERCHANT[0], 12, WHEN, totals, False, width=40).splitlines()
    assert all(len(line) <= 40 for line in lines)
    start = lines.index("TOTALS CNY")
    assert lines[start:start + 8] == [
        "TOTALS CNY",
        "DEBITS     2                    CNY 3.00",
        "CREDITS    3                   CNY 10.00",
        "NET                            CNY -7.00",
        "TOTALS JPY",
        "DEBITS     1                    JPY 5000",
        "CREDITS    0                       JPY 0",
        "NET                             JPY 5000",
    ]


def test_an_empty_batch_says_so():
    assert "NO TRANSACTIONS" in settlement_slip("10000001", MERCHANT[0], 1, WHEN, {}, True).splitlines()


@pytest.mark.parametrize(("group", "expected"), [
    ({"debit_count": 1, "debit_amount": -5, "credit_count": 0, "credit_amount": 0}, r"totals\['156'\]\.debit_amount"),
    ({"debit_count": 1, "debit_amount": 5, "credit_count": 0, "credit_amount": 1.5}, r"totals\['156'\]\.credit_amount"),
])
def test_bad_totals_are_named(group, expected):
    with pytest.raises(ValueError, match=expected):
        settlement_slip("10000001", MERCHANT[0], 1, WHEN, {"156": group}, True)


def test_every_listed_kind_has_a_name():
    assert {"sale", "sale_void", "refund", "preauth", "preauth_void", "completion", "completion_void",
            "balance", "offline", "purchase"} <= set(KIND_NAMES)
