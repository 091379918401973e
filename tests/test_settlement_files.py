"""Settlement file formats: the fixed-width clearing file and the bank statement CSV.

Round trips through real files, every error the readers and writers must
name (file, line, field), and atomic writing: a failed write leaves neither
a partial file nor a temporary one behind.
"""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import date, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from possim.wire.atomic import atomic_text
from possim.settlement.bank_statement import StatementError, StatementLine, read_bank_statement, write_bank_statement
from possim.settlement.clearing_file import (
    LAYOUT,
    RECORD_LENGTH,
    ClearingFileError,
    ClearingHeader,
    ClearingReader,
    ClearingRecord,
    ClearingTrailer,
    write_clearing_file,
)

PROPERTY = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PRINTABLE = "".join(map(chr, range(0x20, 0x7F)))
DIGITS = "0123456789"
FULL_PAN = "6222021234567890123"
HEADER = ClearingHeader("2024-03-15", "2024-03-16T00:05:09", "48021000", sequence=7)
MERCHANT = "898310048160001"
STATEMENT_HEADER = "account,value_date,direction,amount,currency,reference,description"


def record(**changes: object) -> ClearingRecord:
    base = ClearingRecord(
        business_date="2024-03-15", merchant_id=MERCHANT, terminal_id="10000001", channel="card:unionpay",
        kind="sale", sign="D", stan="000123", rrn="240315000123", masked_pan="622202*********0123",
        amount=125050, currency="156", fee=63, transacted_at="2024-03-15T09:41:07", auth_code="A1B2C3", reference="",
    )
    return replace(base, **changes)


RECORDS = [
    record(),
    record(channel="qr:wechat", kind="qr_sale", stan="2024031500000042", rrn="", masked_pan="", auth_code="",
           reference="4200002024031512345678901234567X", amount=999_999_999_999, fee=9_999_999_999,
           transacted_at="2024-03-14T23:59:59"),
    record(sign="C", kind="refund", amount=0, fee=0, currency="392", merchant_id="M 2", terminal_id="",
           masked_pan="******1234", transacted_at="2024-03-15T00:00:00"),
    record(sign="C", kind="completion", amount=1, fee=2, channel=" lead, 'q' \"x\"", masked_pan="123456*"),
]


def columns(kind: str, name: str) -> str:
    _, start, width, _ = next(f for f in LAYOUT[kind] if f[0] == name)
    return f"field {name} (columns {start}-{start + width - 1})"


def patch(path: Path, number: int, kind: str, name: str, text: str) -> None:
    """Overwrite one field of one line in place, keeping the line's length."""
    _, start, width, _ = next(f for f in LAYOUT[kind] if f[0] == name)
    assert len(text) == width
    lines = path.read_bytes().split(b"\n")
    line = lines[number - 1]
    lines[number - 1] = line[:start - 1] + text.encode("latin-1") + line[start - 1 + width:]
    path.write_bytes(b"\n".join(lines))


def read_all(path: Path, merchants: list[str] | None = None) -> list[ClearingRecord]:
    return [item for _, item in ClearingReader(path, merchants)]


def clearing_error(path: Path, merchants: list[str] | None = None) -> str:
    with pytest.raises(ClearingFileError) as caught:
        read_all(path, merchants)
    return str(caught.value)


@pytest.fixture
def clearing(tmp_path: Path) -> Path:
    path = tmp_path / "clearing.txt"
    write_clearing_file(path, HEADER, RECORDS)
    return path


# --- layout ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["H", "D", "T"])
def test_each_layout_covers_the_record_exactly_once(kind: str) -> None:
    column = 1
    for name, start, width, field_kind in LAYOUT[kind]:
        assert start == column, name
        assert field_kind in ("an", "n")
        column += width
    assert column - 1 == RECORD_LENGTH


def test_the_detail_layout_has_a_column_for_every_record_field() -> None:
    names = [f[0] for f in LAYOUT["D"]]
    assert sorted(names) == sorted([f.name for f in fields(ClearingRecord)] + ["record_type", "filler"])


# --- clearing file round trips --------------------------------------------


def test_records_read_back_equal_with_their_line_numbers(clearing: Path) -> None:
    reader = ClearingReader(clearing)
    assert reader.header == HEADER
    assert reader.trailer is None
    read = list(reader)
    assert [number for number, _ in read] == [2, 3, 4, 5]
    assert [item for _, item in read] == RECORDS
    assert reader.trailer == ClearingTrailer(4, 125050 + 999_999_999_999, 0 + 1, 63 + 9_999_999_999, 0 + 2)


def test_writer_returns_the_trailer_it_wrote_and_lines_are_fixed_width(tmp_path: Path) -> None:
    path = tmp_path / "out" / "clearing.txt"
    trailer = write_clearing_file(path, HEADER, iter(RECORDS))
    reader = ClearingReader(path)
    list(reader)
    assert reader.trailer == trailer
    text = path.read_bytes()
    assert text.endswith(b"\n") and b"\r" not in text
    lines = text.split(b"\n")[:-1]
    assert len(lines) == len(RECORDS) + 2
    assert {len(line) for line in lines} == {RECORD_LENGTH}
    assert lines[0].startswith(b"H2024031520240316000509" b"48021000   " b"CLEARING" b"0007" b"01")
    assert lines[1].startswith(b"D2024031520240315094107" b"000000125050" b"156" b"0000000063" b"D" + MERCHANT.encode())
    assert lines[-1].startswith(b"T000000004")


def test_an_empty_day_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "clearing.txt"
    assert write_clearing_file(path, HEADER, []) == ClearingTrailer(0, 0, 0, 0, 0)
    reader = ClearingReader(path)
    assert list(reader) == []
    assert reader.header == HEADER
    assert reader.trailer == ClearingTrailer(0, 0, 0, 0, 0)


def test_known_merchants_pass_the_merchant_check(clearing: Path) -> None:
    assert read_all(clearing, [MERCHANT, "M 2"]) == RECORDS


def test_a_reader_can_be_iterated_again(clearing: Path) -> None:
    reader = ClearingReader(clearing)
    assert list(reader) == list(reader)


an = {name: width for name, _, width, kind in LAYOUT["D"] if kind == "an"}


def text(width: int) -> st.SearchStrategy[str]:
    return st.text(PRINTABLE, max_size=width).map(str.rstrip)


masked_pans = st.one_of(
    st.just(""),
    st.tuples(st.text(DIGITS, max_size=6), st.integers(1, 9), st.text(DIGITS, max_size=4)).map(
        lambda parts: parts[0] + "*" * parts[1] + parts[2]
    ),
)


def records_for(day: str) -> st.SearchStrategy[ClearingRecord]:
    return st.builds(
        ClearingRecord,
        business_date=st.just(day),
        merchant_id=text(15), terminal_id=text(8), channel=text(16), kind=text(12),
        sign=st.sampled_from("DC"), stan=text(16), rrn=text(12), masked_pan=masked_pans,
        amount=st.integers(0, 10**12 - 1), currency=st.text(DIGITS, min_size=3, max_size=3),
        fee=st.integers(0, 10**10 - 1),
        transacted_at=st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)).map(
            lambda at: at.isoformat(timespec="seconds")),
        auth_code=text(6), reference=text(32),
    )


days = st.dates(date(1, 1, 1), date(9999, 12, 31)).map(date.isoformat)


@PROPERTY
@given(day=days, data=st.data())
def test_any_valid_day_round_trips(tmp_path: Path, day: str, data: st.DataObject) -> None:
    header = ClearingHeader(day, data.draw(st.datetimes().map(lambda at: at.isoformat(timespec="seconds"))),
                            data.draw(text(11)), data.draw(st.integers(0, 9999)))
    records = data.draw(st.lists(records_for(day), max_size=4))
    path = tmp_path / "clearing.txt"
    trailer = write_clearing_file(path, header, records)
    reader = ClearingReader(path)
    assert reader.header == header
    assert [item for _, item in reader] == records
    assert reader.trailer == trailer
    assert trailer.record_count == len(records)
    assert trailer.debit_total == sum(r.amount for r in records if r.sign == "D")
    assert trailer.credit_fee_total == sum(r.fee for r in records if r.sign == "C")


@PROPERTY
@given(data=st.data())
def test_the_fast_and_the_field_by_field_reading_agree(tmp_path: Path, data: st.DataObject) -> None:
    # The reader decodes common lines on a fast path and falls back to a
    # field-by-field one; both must give the same record for the same line.
    records = data.draw(st.lists(records_for(HEADER.business_date), min_size=1, max_size=3))
    path = tmp_path / "clearing.txt"
    write_clearing_file(path, HEADER, records)
    reader = ClearingReader(path)
    lines = path.read_text(encoding="ascii").split("\n")
    for number, fast in reader:
        slow = reader._detail(lines[number - 1], number)
        assert slow == fast
        assert type(slow) is type(fast) is ClearingRecord


# --- clearing file reader errors ------------------------------------------


def test_an_error_names_file_line_field_and_columns(clearing: Path) -> None:
    patch(clearing, 3, "D", "amount", "x00000001250")
    assert clearing_error(clearing) == (
        f"{clearing} line 3, field amount (columns 24-35): 'x00000001250' is not digits"
    )


@pytest.mark.parametrize(
    ("number", "kind", "name", "value", "what"),
    [
        (4, "D", "fee", "00000000-1", "'00000000-1' is not digits"),
        (4, "D", "currency", "1 6", "'1 6' is not digits"),
        (2, "D", "sign", "X", "'X' is not a sign"),
        (3, "D", "transacted_at", "20240230120000", "'20240230120000' is not a date and time"),
        (3, "D", "transacted_at", "20240315240000", "'20240315240000' is not a date and time"),
        (3, "D", "business_date", "20240316", "'2024-03-16' is not the header's '2024-03-15'"),
        (4, "D", "filler", "x" + " " * 14, "must be spaces"),
        (1, "H", "business_date", "20241301", "'20241301' is not a date YYYYMMDD"),
        (1, "H", "created_at", "2024031600056a", "is not a date and time"),
        (1, "H", "file_kind", "SETTLEMT", "'SETTLEMT' is not 'CLEARING'"),
        (1, "H", "layout_version", "02", "'02' is not '01'"),
        (1, "H", "sequence", "00a7", "'00a7' is not digits"),
        (6, "T", "record_count", "00000000x", "'00000000x' is not digits"),
    ],
)
def test_bad_fields_are_named(clearing: Path, number: int, kind: str, name: str, value: str, what: str) -> None:
    patch(clearing, number, kind, name, value)
    message = clearing_error(clearing)
    assert message.startswith(f"{clearing} line {number}, {columns(kind, name)}: ")
    assert what in message


def test_a_bad_record_type_is_named(clearing: Path) -> None:
    patch(clearing, 4, "D", "record_type", "X")
    assert clearing_error(clearing) == (
        f"{clearing} line 4, field record_type (columns 1-1): unknown record type 'X' (expected H, D or T)"
    )


def test_a_second_header_is_refused(clearing: Path) -> None:
    header = clearing.read_bytes().split(b"\n")[0]
    lines = clearing.read_bytes().split(b"\n")
    clearing.write_bytes(b"\n".join(lines[:3] + [header] + lines[3:]))
    assert f"{clearing} line 4, field record_type (columns 1-1): a second header" in clearing_error(clearing)


def test_a_detail_before_the_header_is_refused(clearing: Path) -> None:
    lines = clearing.read_bytes().split(b"\n")
    clearing.write_bytes(b"\n".join([lines[1]] + lines))
    with pytest.raises(ClearingFileError) as caught:
        ClearingReader(clearing)
    assert str(caught.value) == (
        f"{clearing} line 1, field record_type (columns 1-1): a 'D' record before the header ('H') record"
    )


def test_a_detail_after_the_trailer_is_refused(clearing: Path) -> None:
    lines = clearing.read_bytes().split(b"\n")
    clearing.write_bytes(b"\n".join(lines[:-1] + [lines[1], b""]))
    assert clearing_error(clearing) == (
        f"{clearing} line 7, field record_type (columns 1-1): a record after the trailer (line 6)"
    )


@pytest.mark.parametrize(
    ("change", "what"),
    [
        (lambda line: line[:-1], "record length 199, expected 200"),
        (lambda line: line + b" ", "record length 201, expected 200"),
        (lambda line: line + b"\r", "the line ends in CR LF"),
    ],
)
def test_a_line_of_the_wrong_shape_is_refused(clearing: Path, change, what: str) -> None:
    lines = clearing.read_bytes().split(b"\n")
    lines[2] = change(lines[2])
    clearing.write_bytes(b"\n".join(lines))
    message = clearing_error(clearing)
    assert message.startswith(f"{clearing} line 3, field record (columns 1-200): ")
    assert what in message


def test_a_last_line_without_its_line_end_is_refused(clearing: Path) -> None:
    clearing.write_bytes(clearing.read_bytes()[:-1])
    assert clearing_error(clearing) == (
        f"{clearing} line 6, field record (columns 1-200): the last line has no line end (LF)"
    )


def test_a_non_ascii_byte_is_placed_in_its_field(clearing: Path) -> None:
    data = bytearray(clearing.read_bytes())
    data[(RECORD_LENGTH + 1) * 2 + 51] = 0xE4   # line 3, column 52: merchant_id
    clearing.write_bytes(bytes(data))
    assert clearing_error(clearing) == (
        f"{clearing} line 3, field merchant_id (columns 50-64): byte 0xE4 at column 52 is not ASCII"
    )


def test_a_non_ascii_header_is_refused_on_opening(clearing: Path) -> None:
    data = bytearray(clearing.read_bytes())
    data[30] = 0xFF
    clearing.write_bytes(bytes(data))
    with pytest.raises(ClearingFileError, match=r"line 1, field sender_id \(columns 24-34\): byte 0xFF at column 31"):
        ClearingReader(clearing)


def test_an_unmasked_pan_is_refused_without_being_quoted(clearing: Path) -> None:
    patch(clearing, 2, "D", "masked_pan", FULL_PAN)
    message = clearing_error(clearing)
    assert message.startswith(f"{clearing} line 2, {columns('D', 'masked_pan')}: is not a masked PAN")
    assert FULL_PAN not in message and "123456789" not in message


def test_an_unknown_merchant_is_refused_when_merchants_are_given(clearing: Path) -> None:
    assert clearing_error(clearing, [MERCHANT]) == (
        f"{clearing} line 4, field merchant_id (columns 50-64): unknown merchant 'M 2'"
    )


@pytest.mark.parametrize(
    ("name", "value", "what"),
    [
        ("record_count", "000000005", "the trailer says 5, expected 4 from the 4 detail records"),
        ("debit_total", "1".zfill(18), f"the trailer says 1, expected {125050 + 999_999_999_999}"),
        ("credit_total", "0".zfill(18), "the trailer says 0, expected 1"),
        ("debit_fee_total", "0".zfill(18), f"the trailer says 0, expected {63 + 9_999_999_999}"),
        ("credit_fee_total", "3".zfill(18), "the trailer says 3, expected 2"),
    ],
)
def test_a_trailer_that_disagrees_says_expected_and_found(clearing: Path, name: str, value: str, what: str) -> None:
    patch(clearing, 6, "T", name, value)
    reader = ClearingReader(clearing)
    with pytest.raises(ClearingFileError) as caught:
        list(reader)
    assert str(caught.value).startswith(f"{clearing} line 6, {columns('T', name)}: {what}")
    assert reader.trailer is None


def test_a_dropped_detail_is_caught_by_the_trailer(clearing: Path) -> None:
    lines = clearing.read_bytes().split(b"\n")
    clearing.write_bytes(b"\n".join(lines[:2] + lines[3:]))
    assert "line 5, field record_count (columns 2-10): the trailer says 4, expected 3" in clearing_error(clearing)


def test_a_missing_trailer_raises_at_the_end(clearing: Path) -> None:
    lines = clearing.read_bytes().split(b"\n")
    clearing.write_bytes(b"\n".join(lines[:-2] + [b""]))
    reader = ClearingReader(clearing)
    seen = []
    with pytest.raises(ClearingFileError) as caught:
        for _, item in reader:
            seen.append(item)
    assert seen == RECORDS
    assert str(caught.value) == (
        f"{clearing} line 6, field record_type (columns 1-1): the file ends after line 5 without a trailer ('T') record"
    )


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ClearingFileError) as caught:
        ClearingReader(path)
    assert str(caught.value) == (
        f"{path} line 1, field record_type (columns 1-1): the file is empty; it must start with a header ('H') record"
    )


# --- clearing file writer -------------------------------------------------


@pytest.mark.parametrize(
    ("change", "name", "what"),
    [
        ({"merchant_id": "8" * 16}, "merchant_id", "16 characters, the field holds 15"),
        ({"reference": "r" * 33}, "reference", "33 characters, the field holds 32"),
        ({"sign": "X"}, "sign", "'X' is not a sign"),
        ({"sign": "DC"}, "sign", "2 characters, the field holds 1"),
        ({"amount": -1}, "amount", "-1 is below zero"),
        ({"amount": 10**12}, "amount", "13 characters, the field holds 12"),
        ({"amount": 12.5}, "amount", "expected a whole number, got float"),
        ({"fee": True}, "fee", "expected a whole number, got bool"),
        ({"currency": "15"}, "currency", "'15' is not 3 digits"),
        ({"currency": "CNY"}, "currency", "'CNY' is not 3 digits"),
        ({"transacted_at": "2024-03-15 09:41:07"}, "transacted_at", "is not a date and time YYYY-MM-DDTHH:MM:SS"),
        ({"transacted_at": "2024-02-30T09:41:07"}, "transacted_at", "is not a date and time YYYYMMDDHHMMSS"),
        ({"business_date": "2024-03-14"}, "business_date", "'2024-03-14' is not the header's '2024-03-15'"),
        ({"terminal_id": "T1 "}, "terminal_id", "'T1 ' ends in a space"),
        ({"channel": "qr:wechat\n"}, "channel", "is not printable ASCII"),
        ({"kind": "café"}, "kind", "is not printable ASCII"),
        ({"masked_pan": "622202**********0123"}, "masked_pan", "20 characters, the field holds 19"),
    ],
)
def test_the_writer_names_record_and_field_and_leaves_no_file(
    tmp_path: Path, change: dict[str, object], name: str, what: str
) -> None:
    path = tmp_path / "clearing.txt"
    with pytest.raises(ClearingFileError) as caught:
        write_clearing_file(path, HEADER, [record(), record(**change)])
    message = str(caught.value)
    assert message.startswith(f"{path} record 2 (line 3), {columns('D', name)}: ")
    assert what in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("pan", [FULL_PAN, "6222021234*******0123", "622202*****4567890", "62220212**0123"])
def test_the_writer_refuses_an_unmasked_pan_without_quoting_it(tmp_path: Path, pan: str) -> None:
    path = tmp_path / "clearing.txt"
    with pytest.raises(ClearingFileError) as caught:
        write_clearing_file(path, HEADER, [record(masked_pan=pan[:19])])
    message = str(caught.value)
    assert message.startswith(f"{path} record 1 (line 2), {columns('D', 'masked_pan')}: ")
    assert pan[:19] not in message and "0123" not in message
    assert not path.exists()


@pytest.mark.parametrize(
    ("header", "name", "what"),
    [
        (replace(HEADER, sender_id="4" * 12), "sender_id", "12 characters, the field holds 11"),
        (replace(HEADER, sequence=10000), "sequence", "5 characters, the field holds 4"),
        (replace(HEADER, business_date="15.03.2024"), "business_date", "is not a date YYYY-MM-DD"),
        (replace(HEADER, created_at="2024-03-16"), "created_at", "is not a date and time"),
    ],
)
def test_the_writer_checks_the_header(tmp_path: Path, header: ClearingHeader, name: str, what: str) -> None:
    path = tmp_path / "clearing.txt"
    with pytest.raises(ClearingFileError) as caught:
        write_clearing_file(path, header, [])
    assert str(caught.value).startswith(f"{path} line 1, {columns('H', name)}: ")
    assert what in str(caught.value)
    assert list(tmp_path.iterdir()) == []


class Boom(Exception):
    pass


def failing_records(count: int):
    for number in range(count):
        yield record(stan=str(number))
    raise Boom


def test_a_failing_record_source_leaves_no_file_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "clearing.txt"
    with pytest.raises(Boom):
        write_clearing_file(path, HEADER, failing_records(500))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_existing_file_unchanged(clearing: Path) -> None:
    before = clearing.read_bytes()
    with pytest.raises(Boom):
        write_clearing_file(clearing, HEADER, failing_records(500))
    with pytest.raises(ClearingFileError):
        write_clearing_file(clearing, HEADER, [record(), record(sign="?")])
    assert clearing.read_bytes() == before
    assert [p.name for p in clearing.parent.iterdir()] == [clearing.name]


def test_atomic_text_replaces_only_on_success(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "file.txt"
    with atomic_text(path) as out:
        out.write("first\r\n")
        assert not path.exists()
    assert path.read_bytes() == b"first\r\n"
    with pytest.raises(RuntimeError):
        with atomic_text(path) as out:
            out.write("second")
            raise RuntimeError("stop")
    assert path.read_bytes() == b"first\r\n"
    assert [p.name for p in path.parent.iterdir()] == ["file.txt"]


# --- bank statement -------------------------------------------------------


STATEMENT = [
    StatementLine(2, "6222 0000 1111", "2024-03-15", "CR", 123450, "156", "SWEEP 0315", "clearing, \"day\" 0315"),
    StatementLine(3, "6222 0000 1111", "2024-03-15", "DR", 0, "156", "", ""),
    StatementLine(4, "6222 0000 1111", "2024-03-16", "CR", 5, "392", "JP", "yen has no decimals"),
    StatementLine(5, "6222 0000 1111", "2024-03-16", "DR", 1001, "048", "BH", "商户退款 three decimals"),
]


def statement(tmp_path: Path, *lines: str, header: str = STATEMENT_HEADER) -> Path:
    path = tmp_path / "statement.csv"
    path.write_text("".join(f"{line}\n" for line in (header, *lines)), encoding="utf-8")
    return path


def statement_error(path: Path) -> str:
    with pytest.raises(StatementError) as caught:
        read_bank_statement(path)
    return str(caught.value)


def test_statement_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "out" / "statement.csv"
    written = [replace(line, line=0) for line in STATEMENT]
    assert write_bank_statement(path, iter(written)) == 4
    assert read_bank_statement(path) == STATEMENT
    assert path.read_bytes().decode("utf-8").split("\r\n")[:3] == [
        STATEMENT_HEADER,
        '6222 0000 1111,2024-03-15,CR,1234.50,156,SWEEP 0315,"clearing, ""day"" 0315"',
        "6222 0000 1111,2024-03-15,DR,0.00,156,,",
    ]


def test_an_empty_statement_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "statement.csv"
    assert write_bank_statement(path, []) == 0
    assert path.read_bytes() == STATEMENT_HEADER.encode() + b"\r\n"
    assert read_bank_statement(path) == []


def test_statement_reads_alphabetic_currencies_a_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "statement.csv"
    path.write_bytes(("\ufeff" + STATEMENT_HEADER + "\r\nACC,2024-03-15,CR,1234.5,cny,R,\r\n\r\n"
                      "ACC,2024-03-15,DR, 7 ,JPY,R,\"two\r\nlines\"\r\nACC,2024-03-15,DR,1,USD,R,d\r\n").encode())
    assert read_bank_statement(path) == [
        StatementLine(2, "ACC", "2024-03-15", "CR", 123450, "156", "R", ""),
        StatementLine(4, "ACC", "2024-03-15", "DR", 7, "392", "R", "two\r\nlines"),
        StatementLine(6, "ACC", "2024-03-15", "DR", 100, "840", "R", "d"),
    ]


statement_lines = st.builds(
    StatementLine,
    line=st.just(0),
    account=st.text(min_size=1).filter(str.strip),
    value_date=days,
    direction=st.sampled_from(["CR", "DR"]),
    amount=st.integers(0, 10**15),
    currency=st.sampled_from(["156", "392", "048", "840"]),
    reference=st.text(),
    description=st.text(),
)


@PROPERTY
@given(lines=st.lists(statement_lines, max_size=4))
def test_any_statement_round_trips(tmp_path: Path, lines: list[StatementLine]) -> None:
    path = tmp_path / "statement.csv"
    write_bank_statement(path, lines)
    read = read_bank_statement(path)
    assert [replace(line, line=0) for line in read] == lines
    assert all(a.line < b.line for a, b in zip(read, read[1:]))


@pytest.mark.parametrize(
    ("row", "name", "what"),
    [
        ("ACC,2024-03-15,CR,12.345,CNY,R,D", "amount", "has more than 2 decimal places for CNY"),
        ("ACC,2024-03-15,CR,-5.00,CNY,R,D", "amount", "must be zero or more"),
        ("ACC,2024-03-15,CR,\"1,234.50\",CNY,R,D", "amount", "is not a number"),
        ("ACC,2024-03-15,CR,1.5,JPY,R,D", "amount", "has more than 0 decimal places for JPY"),
        ("ACC,2024-02-30,CR,1.00,CNY,R,D", "value_date", "'2024-02-30' is not a date YYYY-MM-DD"),
        ("ACC,20240315,CR,1.00,CNY,R,D", "value_date", "'20240315' is not a date YYYY-MM-DD"),
        ("ACC,2024-03-15,C,1.00,CNY,R,D", "direction", "'C' is not CR or DR"),
        ("ACC,2024-03-15,CR,1.00,XYZ,R,D", "currency", "unknown currency 'XYZ'"),
        (" ,2024-03-15,CR,1.00,CNY,R,D", "account", "is empty"),
        ("ACC,2024-03-15,CR,1.00,CNY,R", "columns", "6 columns, expected 7"),
        ("ACC,2024-03-15,CR,1.00,CNY,R,D,extra", "columns", "8 columns, expected 7"),
        ("ACC,2024-03-15,CR,1.00,CNY,\"R\"x,D", "columns", "not valid CSV"),
        (STATEMENT_HEADER, "header", "a second header line"),
    ],
)
def test_statement_errors_name_file_line_and_field(tmp_path: Path, row: str, name: str, what: str) -> None:
    path = statement(tmp_path, "ACC,2024-03-15,CR,1.00,CNY,R,D", "", row)
    message = statement_error(path)
    assert message.startswith(f"{path} line 4, field {name}: ")
    assert what in message


@pytest.mark.parametrize(
    ("header", "what"),
    [
        ("account,value_date,direction,amount,currency,reference", "expected account,value_date,"),
        ("ACC,2024-03-15,CR,1.00,CNY,R,D", "found 'ACC,2024-03-15"),
        ("", "found ''"),
    ],
)
def test_a_missing_or_wrong_header_is_refused(tmp_path: Path, header: str, what: str) -> None:
    path = statement(tmp_path, "ACC,2024-03-15,CR,1.00,CNY,R,D", header=header)
    message = statement_error(path)
    assert message.startswith(f"{path} line 1, field header: ")
    assert what in message


def test_an_empty_statement_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "statement.csv"
    path.write_bytes(b"")
    assert statement_error(path).startswith(f"{path} line 1, field header: the file is empty")


def test_undecodable_bytes_are_placed_on_their_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "statement.csv"
    rows = (STATEMENT_HEADER, "ACC,2024-03-15,CR,1.00,CNY,R,D", "ACC,2024-03-15,CR,1.00,CNY,R\xe4")
    path.write_bytes("\n".join(rows).encode("latin-1"))
    assert statement_error(path) == f"{path} line 3, field reference: byte 0xE4 is not UTF-8"


@pytest.mark.parametrize(
    ("change", "name", "what"),
    [
        ({"direction": "XX"}, "direction", "'XX' is not CR or DR"),
        ({"amount": -1}, "amount", "-1 is not a whole number of minor units"),
        ({"amount": 1.5}, "amount", "1.5 is not a whole number"),
        ({"currency": "999"}, "currency", "unknown currency '999'"),
        ({"value_date": "2024-3-15"}, "value_date", "'2024-3-15' is not a date"),
        ({"account": ""}, "account", "is empty"),
        ({"description": None}, "description", "expected text, got NoneType"),
    ],
)
def test_the_statement_writer_refuses_bad_lines_and_leaves_no_file(
    tmp_path: Path, change: dict[str, object], name: str, what: str
) -> None:
    path = tmp_path / "statement.csv"
    with pytest.raises(StatementError) as caught:
        write_bank_statement(path, [STATEMENT[0], replace(STATEMENT[1], **change)])
    assert str(caught.value).startswith(f"{path} line 3, field {name}: ")
    assert what in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_the_statement_writer_keeps_the_old_file_when_its_source_fails(tmp_path: Path) -> None:
    path = tmp_path / "statement.csv"
    write_bank_statement(path, STATEMENT)
    before = path.read_bytes()

    def failing():
        yield STATEMENT[0]
        raise Boom

    with pytest.raises(Boom):
        write_bank_statement(path, failing())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["statement.csv"]


def test_the_statement_writer_gives_the_numeric_currency_code(tmp_path: Path) -> None:
    path = tmp_path / "statement.csv"
    write_bank_statement(path, [replace(STATEMENT[0], currency="CNY", line=42)])
    assert read_bank_statement(path) == [replace(STATEMENT[0], currency="156")]
