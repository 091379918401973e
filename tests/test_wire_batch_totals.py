"""Batch-close totals and upload records: exact layouts written out by hand
from docs/transactions.md, round trips, the real codec of each dialect, and
errors that name field, record and offset."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from possim.wire.batch_totals import (
    BatchTotals,
    Totals,
    TotalsError,
    UploadRecord,
    decode_cup48,
    encode_cup48,
    end_of_upload_48,
    pack_cup_upload,
    read_end_of_upload_48,
    read_iso_totals,
    set_iso_totals,
    unpack_cup_upload,
)
from possim.wire.codec import Codec
from possim.wire.dialect import load_dialect
from possim.wire.message import Message

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DOMESTIC = Totals(debit_count=3, debit_amount=12345, credit_count=1, credit_amount=500)
FOREIGN = Totals(debit_count=2, debit_amount=100000)
BATCH = BatchTotals(DOMESTIC, FOREIGN)
BATCH_48 = (
    # debit amount   count  credit amount  count result
    "000000012345" "003" "000000000500" "001" "0"   # domestic
    "000000100000" "002" "000000000000" "000" "0"   # foreign
)
PAN = "622848*********0017"
RECORD = UploadRecord("00", "000123", PAN, 1250)
RECORD_40 = "00" "000123" "06228480000000000017" "000000001250"


def totals(max_count: int = 999, max_amount: int = 10**12 - 1) -> st.SearchStrategy[Totals]:
    count, amount = st.integers(0, max_count), st.integers(0, max_amount)
    return st.builds(Totals, count, amount, count, amount)


def upload_records() -> st.SearchStrategy[UploadRecord]:
    masked = st.tuples(
        st.sampled_from("123456789"),
        st.text("0123456789*", min_size=0, max_size=19),
    ).map("".join)
    return st.builds(
        UploadRecord,
        st.sampled_from(["00", "01"]),
        st.text("0123456789", min_size=6, max_size=6),
        masked,
        st.integers(0, 10**12 - 1),
    )


def iso_message() -> Message:
    return Message("0500", {11: "000042", 41: "TID00001", 42: "MERCHANT0000001"})


# --- Totals ----------------------------------------------------------------------


def test_add_counts_one_and_sums_the_amount_on_its_side():
    t = Totals().add("debit", 1000).add("debit", 250).add("credit", 1000)
    assert t == Totals(debit_count=2, debit_amount=1250, credit_count=1, credit_amount=1000)
    assert t.net == 250
    assert Totals().add("credit", 70).net == -70


def test_combined_adds_domestic_and_foreign():
    assert BATCH.combined == Totals(debit_count=5, debit_amount=112345, credit_count=1, credit_amount=500)
    assert BatchTotals().combined == Totals()


@pytest.mark.parametrize(
    "side, amount, named", [("refund", 1, "side"), ("debit", -1, "amount"), ("credit", 1.5, "amount")]
)
def test_add_refuses_unknown_side_or_bad_amount(side, amount, named):
    with pytest.raises(TotalsError, match=f"^{named}: "):
        Totals().add(side, amount)


@pytest.mark.parametrize("name", ["debit_count", "debit_amount", "credit_count", "credit_amount"])
def test_totals_refuse_negative_or_non_integer_values(name):
    for bad in (-1, 2.0, True):
        with pytest.raises(TotalsError, match=f"^{name}: "):
            Totals(**{name: bad})


# --- cup field 48: totals -------------------------------------------------------


def test_cup48_request_layout_is_exact():
    assert encode_cup48(BATCH) == BATCH_48
    assert len(BATCH_48) == 62


def test_cup48_answer_carries_the_result_in_both_blocks():
    encoded = encode_cup48(BATCH, "2")
    assert encoded == BATCH_48[:30] + "2" + BATCH_48[31:61] + "2"
    assert decode_cup48(encoded) == (BATCH, "2")


def test_cup48_empty_batch_is_all_zeros():
    assert encode_cup48(BatchTotals(), "1") == "0" * 30 + "1" + "0" * 30 + "1"


def test_cup48_decodes_the_hand_written_layout():
    assert decode_cup48(BATCH_48) == (BATCH, "0")


@PROPERTY
@given(domestic=totals(), foreign=totals(), result=st.sampled_from("0123"))
def test_cup48_round_trip(domestic, foreign, result):
    batch = BatchTotals(domestic, foreign)
    text = encode_cup48(batch, result)
    assert len(text) == 62 and text.isdigit()
    assert decode_cup48(text) == (batch, result)


@pytest.mark.parametrize(
    "batch, offset, named",
    [
        (BatchTotals(Totals(debit_amount=10**12)), 0, "domestic debit amount"),
        (BatchTotals(Totals(debit_count=1000)), 12, "domestic debit count"),
        (BatchTotals(Totals(credit_amount=10**12)), 15, "domestic credit amount"),
        (BatchTotals(Totals(credit_count=1000)), 27, "domestic credit count"),
        (BatchTotals(foreign=Totals(debit_amount=10**12)), 31, "foreign debit amount"),
        (BatchTotals(foreign=Totals(debit_count=1000)), 43, "foreign debit count"),
        (BatchTotals(foreign=Totals(credit_amount=10**12)), 46, "foreign credit amount"),
        (BatchTotals(foreign=Totals(credit_count=1000)), 58, "foreign credit count"),
    ],
)
def test_cup48_overflow_names_offset_and_part(batch, offset, named):
    with pytest.raises(TotalsError, match=f"^field 48 offset {offset}: {named} must fit"):
        encode_cup48(batch)


def test_cup48_largest_values_fit():
    full = Totals(999, 10**12 - 1, 999, 10**12 - 1)
    assert encode_cup48(BatchTotals(full, full)) == ("9" * 30 + "0") * 2


@pytest.mark.parametrize("result", ["4", "", "00", "a"])
def test_cup48_refuses_unknown_result(result):
    with pytest.raises(TotalsError, match="^field 48 offset 30: result must be one of"):
        encode_cup48(BATCH, result)


@pytest.mark.parametrize("length, offset", [(0, 0), (61, 61), (63, 62), (31, 31)])
def test_cup48_decode_refuses_wrong_length(length, offset):
    text = (BATCH_48 + "0")[:length] if length <= 63 else ""
    with pytest.raises(TotalsError, match=f"^field 48 offset {offset}: expected 62 digits .*found {length}$"):
        decode_cup48(text)


@pytest.mark.parametrize(
    "offset, named",
    [(0, "domestic debit amount"), (11, "domestic debit amount"), (13, "domestic debit count"),
     (20, "domestic credit amount"), (29, "domestic credit count"), (31, "foreign debit amount"),
     (45, "foreign debit count"), (57, "foreign credit amount"), (58, "foreign credit count")],
)
def test_cup48_decode_names_the_offset_of_a_non_digit(offset, named):
    text = BATCH_48[:offset] + "A" + BATCH_48[offset + 1:]
    with pytest.raises(TotalsError, match=f"^field 48 offset {offset}: {named} must be"):
        decode_cup48(text)


@pytest.mark.parametrize("offset, named", [(30, "domestic result"), (61, "foreign result")])
def test_cup48_decode_refuses_unknown_result(offset, named):
    for bad in "4X":
        text = BATCH_48[:offset] + bad + BATCH_48[offset + 1:]
        with pytest.raises(TotalsError, match=f"^field 48 offset {offset}: {named} must be one of 0, 1, 2, 3"):
            decode_cup48(text)


def test_cup48_decode_refuses_blocks_with_different_results():
    text = BATCH_48[:30] + "1" + BATCH_48[31:61] + "2"
    with pytest.raises(TotalsError, match="^field 48 offset 61: foreign result must equal the domestic result"):
        decode_cup48(text)


def test_cup48_through_the_cup_codec():
    codec = Codec(load_dialect("cup"))
    request = Message("0500", {11: "000042", 41: "TID00001", 42: "MERCHANT0000001",
                               48: encode_cup48(BATCH), 60: "00000001201"})
    data = codec.encode(request)
    # n LLLVAR BCD counted in digits: length 0062 as two BCD bytes, then the 62 digits packed two a byte.
    assert bytes.fromhex("0062" + BATCH_48) in data
    decoded = codec.decode(data)
    assert decoded == request
    assert decode_cup48(decoded[48]) == (BATCH, "0")


# --- iso87: fields 74-89, 97, 15 ----------------------------------------------------


def test_iso_totals_exact_fields():
    message = iso_message()
    set_iso_totals(message, BATCH, "1231")
    assert message.fields == {
        11: "000042", 41: "TID00001", 42: "MERCHANT0000001",
        15: "1231",
        74: "0000000001", 75: "0000000000", 76: "0000000005", 77: "0000000000",
        86: "0000000000000500", 87: "0000000000000000", 88: "0000000000112345", 89: "0000000000000000",
        # credits 500 - debits 112345 = -111845: debits exceed credits, D.
        97: "D0000000000111845",
    }


@pytest.mark.parametrize(
    "batch, net",
    [
        (BatchTotals(Totals(credit_count=2, credit_amount=900, debit_count=1, debit_amount=100)), "C0000000000000800"),
        (BatchTotals(), "C0000000000000000"),
        (BatchTotals(Totals(1, 700, 1, 700)), "C0000000000000000"),
        (BatchTotals(Totals(1, 1), Totals(1, 2)), "D0000000000000003"),
    ],
)
def test_iso_net_settlement_sign(batch, net):
    message = iso_message()
    set_iso_totals(message, batch, "0101")
    assert message[97] == net


@PROPERTY
@given(domestic=totals((10**10 - 1) // 2, (10**16 - 1) // 2), foreign=totals((10**10 - 1) // 2, (10**16 - 1) // 2))
def test_iso_round_trip_reads_the_combined_totals_as_domestic(domestic, foreign):
    message = iso_message()
    set_iso_totals(message, BatchTotals(domestic, foreign), "0615")
    assert read_iso_totals(message) == BatchTotals(domestic=BatchTotals(domestic, foreign).combined)


@pytest.mark.parametrize("dialect", ["iso87ascii", "iso87binary"])
@settings(PROPERTY, max_examples=40)
@given(combined=totals(10**10 - 1, 10**16 - 1))
def test_iso_totals_through_the_codec(dialect, combined):
    codec = Codec(load_dialect(dialect))
    message = iso_message()
    set_iso_totals(message, BatchTotals(combined), "0229")
    decoded = codec.decode(codec.encode(message))
    assert decoded == message
    assert read_iso_totals(decoded) == BatchTotals(combined)


def test_iso_ascii_wire_bytes_carry_the_fields_in_order():
    message = iso_message()
    set_iso_totals(message, BATCH, "1231")
    data = Codec(load_dialect("iso87ascii")).encode(message)
    tail = ("0000000001" "0000000000" "0000000005" "0000000000"
            "0000000000000500" "0000000000000000" "0000000000112345" "0000000000000000"
            "D0000000000111845").encode()
    assert data.endswith(tail)


@pytest.mark.parametrize(
    "batch, field",
    [
        (BatchTotals(Totals(debit_count=10**10)), 76),
        (BatchTotals(Totals(credit_count=10**10)), 74),
        (BatchTotals(Totals(debit_amount=10**16)), 88),
        (BatchTotals(Totals(credit_amount=10**16 - 1), Totals(credit_amount=1)), 86),
    ],
)
def test_iso_overflow_names_the_field(batch, field):
    message = iso_message()
    with pytest.raises(TotalsError, match=f"^field {field}: .* must fit {10 if field < 80 else 16} digits"):
        set_iso_totals(message, batch, "1231")
    assert 97 not in message and field not in message


@pytest.mark.parametrize(
    "date, offset, what",
    [("123", 3, "must be MMDD"), ("12311", 4, "must be MMDD"), ("1A31", 1, "settlement month must be 2 digits"),
     ("123X", 3, "settlement day must be 2 digits"), ("1331", 0, "month must be 01 to 12"),
     ("0031", 0, "month must be 01 to 12"), ("1232", 2, "day must be 01 to 31"), ("1200", 2, "day must be 01 to 31")],
)
def test_iso_settlement_date_errors_name_field_15(date, offset, what):
    with pytest.raises(TotalsError, match=f"^field 15 offset {offset}: .*{what}"):
        set_iso_totals(iso_message(), BATCH, date)


def totals_message() -> Message:
    message = iso_message()
    set_iso_totals(message, BATCH, "1231")
    return message


@pytest.mark.parametrize("field", [74, 76, 86, 88, 97])
def test_read_iso_totals_missing_field(field):
    message = totals_message()
    del message.fields[field]
    with pytest.raises(TotalsError, match=f"^field {field}: .* is missing$"):
        read_iso_totals(message)


@pytest.mark.parametrize("field", [75, 77, 87, 89])
def test_read_iso_totals_without_reversal_fields(field):
    message = totals_message()
    del message.fields[field]
    assert read_iso_totals(message) == BatchTotals(BATCH.combined)


@pytest.mark.parametrize("field, offset", [(74, 9), (76, 0), (86, 5), (88, 15), (75, 3), (89, 0), (97, 16)])
def test_read_iso_totals_non_digit_names_field_and_offset(field, offset):
    message = totals_message()
    value = message[field]
    message[field] = value[:offset] + " " + value[offset + 1:]
    with pytest.raises(TotalsError, match=f"^field {field} offset {offset}: "):
        read_iso_totals(message)


@pytest.mark.parametrize(
    "field, value, offset",
    [(74, "0" * 9, 9), (88, "0" * 17, 16), (77, "0" * 11, 10), (97, "C" + "0" * 15, 16), (97, "", 0)],
)
def test_read_iso_totals_wrong_length(field, value, offset):
    message = totals_message()
    message[field] = value
    with pytest.raises(TotalsError, match=f"^field {field} offset {offset}: .*found {len(value)} characters$"):
        read_iso_totals(message)


@pytest.mark.parametrize("field", [75, 77, 87, 89])
def test_read_iso_totals_refuses_reversals(field):
    message = totals_message()
    message[field] = message[field][:-1] + "1"
    with pytest.raises(TotalsError, match=f"^field {field}: .* must be 0"):
        read_iso_totals(message)


@pytest.mark.parametrize("net", ["C0000000000111845", "D0000000000111844", "D0000000000111846", "X0000000000111845"])
def test_read_iso_totals_refuses_net_settlement_inconsistent_with_86_and_88(net):
    message = totals_message()
    message[97] = net
    with pytest.raises(TotalsError, match="^field 97"):
        read_iso_totals(message)


def test_read_iso_totals_takes_zero_net_with_either_sign():
    message = iso_message()
    even = BatchTotals(Totals(1, 700, 1, 700))
    set_iso_totals(message, even, "1231")
    message[97] = "D" + "0" * 16
    assert read_iso_totals(message) == even


# --- cup field 48: upload records ---------------------------------------------


def test_upload_record_layout_is_exact():
    assert pack_cup_upload([RECORD]) == ["01" + RECORD_40]
    assert len(RECORD_40) == 40


def test_upload_splits_eight_records_a_message():
    records = [replace(RECORD, stan=f"{n:06d}", card_org="01" if n % 2 else "00") for n in range(1, 10)]
    fields = pack_cup_upload(records)
    assert [f[:2] for f in fields] == ["08", "01"]
    assert [len(f) for f in fields] == [2 + 8 * 40, 2 + 40]
    assert fields[1] == "01" + "01" + "000009" + "06228480000000000017" + "000000001250"
    assert fields[0][2 + 40:2 + 48] == "00" + "000002"


def test_upload_of_nothing_is_no_message():
    assert pack_cup_upload([]) == []


def test_unpack_gives_zeros_for_hidden_digits():
    assert unpack_cup_upload("01" + RECORD_40) == [replace(RECORD, masked_pan="6228480000000000017")]


@PROPERTY
@given(records=st.lists(upload_records(), max_size=20))
def test_upload_round_trip(records):
    unpacked = [r for field in pack_cup_upload(records) for r in unpack_cup_upload(field)]
    assert unpacked == [replace(r, masked_pan=r.masked_pan.replace("*", "0")) for r in records]


def test_cup_upload_field_48_fits_the_cup_dialect():
    dialect = load_dialect("cup")
    assert dialect.spec["48"]["max_len"] >= 2 + 8 * 40
    codec = Codec(dialect)
    records = [replace(RECORD, stan=f"{n:06d}", amount=n * 1111) for n in range(8)]
    (field,) = pack_cup_upload(records)
    upload = Message("0320", {11: "000050", 41: "TID00001", 42: "MERCHANT0000001", 48: field, 60: "00000001201"})
    data = codec.encode(upload)
    assert bytes.fromhex("0322" + field) in data
    decoded = codec.decode(data)
    assert decoded == upload
    assert unpack_cup_upload(decoded[48]) == [replace(r, masked_pan="6228480000000000017") for r in records]

    end = Message("0320", {11: "000051", 41: "TID00001", 42: "MERCHANT0000001",
                           48: end_of_upload_48(8), 60: "00000001202"})
    assert read_end_of_upload_48(codec.decode(codec.encode(end))[48]) == 8


@pytest.mark.parametrize(
    "change, offset, what",
    [
        ({"card_org": "02"}, 2, "card organisation must be 00 .* or 01"),
        ({"stan": "12345"}, 4, "STAN must be 6 digits"),
        ({"stan": "12345X"}, 4, "STAN must be 6 digits"),
        ({"masked_pan": "6" * 21}, 10, "masked PAN must be 1 to 20 characters"),
        ({"masked_pan": ""}, 10, "masked PAN must be 1 to 20 characters"),
        ({"masked_pan": "622848****X****0017"}, 10 + 1 + 10, "masked PAN character 11 must be a digit or \\*"),
        ({"masked_pan": "*22848*********0017"}, 11, "masked PAN must start with a digit 1-9"),
        ({"masked_pan": "0228480000000000017"}, 11, "masked PAN must start with a digit 1-9"),
        ({"amount": 10**12}, 30, "amount must fit 12 digits"),
        ({"amount": -1}, 30, "amount must be a whole number"),
    ],
)
def test_pack_errors_name_record_and_offset(change, offset, what):
    with pytest.raises(TotalsError, match=f"^field 48 record 1 offset {offset}: {what}") as caught:
        pack_cup_upload([replace(RECORD, **change)])
    assert "0017" not in str(caught.value)


def test_pack_error_in_a_later_message_names_its_place_in_the_list():
    records = [RECORD] * 9 + [replace(RECORD, stan="1")]
    # Record 10 is the second of the second message: offset 2 + 40, STAN 2 further.
    with pytest.raises(TotalsError, match="^field 48 record 10 offset 44: STAN"):
        pack_cup_upload(records)


def _upload_field(*records: str) -> str:
    return f"{len(records):02d}" + "".join(records)


@pytest.mark.parametrize(
    "text, record, offset, what",
    [
        ("", None, 0, "expected a 2-digit record count"),
        ("1", None, 1, "expected a 2-digit record count"),
        ("A1" + RECORD_40, None, 0, "record count must be 2 digits"),
        ("09" + RECORD_40 * 9, None, 0, "record count must be at most 8"),
        ("02" + RECORD_40 + RECORD_40[:39], 2, 81, "expected 40 digits, found 39"),
        ("01", 1, 2, "expected 40 digits, found 0"),
        (_upload_field(RECORD_40, "02" + RECORD_40[2:]), 2, 42, "card organisation must be 00"),
        (_upload_field(RECORD_40[:5] + "x" + RECORD_40[6:]), 1, 7, "STAN must be 6 digits"),
        (_upload_field(RECORD_40[:20] + "=" + RECORD_40[21:]), 1, 22, "PAN must be 20 digits"),
        (_upload_field(RECORD_40[:8] + "0" * 20 + RECORD_40[28:]), 1, 10, "PAN is all zeros"),
        (_upload_field(RECORD_40[:39] + "D"), 1, 41, "amount must be 12 digits"),
        (_upload_field(RECORD_40) + "0", None, 42, "expected the end after 1 records, found 1 more"),
    ],
)
def test_unpack_errors_name_record_and_offset(text, record, offset, what):
    where = f"record {record} offset {offset}" if record else f"offset {offset}"
    with pytest.raises(TotalsError, match=f"^field 48 {where}: {what}") as caught:
        unpack_cup_upload(text)
    assert "6228480000000000017" not in str(caught.value)


def test_end_of_upload_is_four_digits():
    assert end_of_upload_48(0) == "0000"
    assert end_of_upload_48(17) == "0017"
    assert end_of_upload_48(9999) == "9999"
    assert read_end_of_upload_48("0017") == 17


@pytest.mark.parametrize(
    "count, what", [(10000, "must fit 4 digits"), (-1, "must be a whole number"), (1.0, "must be a whole number")]
)
def test_end_of_upload_refuses_what_does_not_fit(count, what):
    with pytest.raises(TotalsError, match=f"^field 48 offset 0: record total {what}"):
        end_of_upload_48(count)


@pytest.mark.parametrize("text, offset", [("017", 3), ("00170", 4), ("00x7", 2)])
def test_read_end_of_upload_errors_name_the_offset(text, offset):
    with pytest.raises(TotalsError, match=f"^field 48 offset {offset}: record total"):
        read_end_of_upload_48(text)


def test_error_texts_follow_one_form():
    """Every message starts with the field (and record) and offset it is about, as the host logs them."""
    calls = (lambda: decode_cup48("1"), lambda: unpack_cup_upload("0"), lambda: read_iso_totals(Message("0500")))
    for call in calls:
        with pytest.raises(TotalsError) as caught:
            call()
        assert re.match(r"field \d+( record \d+)?( offset \d+)?: ", str(caught.value))
