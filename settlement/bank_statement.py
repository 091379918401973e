"""The settlement account's bank statement as CSV: what the bank says actually moved.

Amounts are in major units as the bank prints them ("1234.50") and are
turned into minor units exactly through wire.money, so a statement line can
be matched to the cent against the clearing totals. The currency may be the
alphabetic or the numeric code; it always comes back numeric, as money does
everywhere else in possim.

The file is read whole: a statement holds a few lines a day, and reading it
at once lets a decoding error be placed on its line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from possim.wire.money import currency, format_major, parse_major

from possim.wire.atomic import atomic_text

COLUMNS = ("account", "value_date", "direction", "amount", "currency", "reference", "description")
DIRECTIONS = ("CR", "DR")
"""CR: money came into the settlement account; DR: money went out of it."""

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_T = TypeVar("_T")


class StatementError(ValueError):
    """A statement line that cannot be used; the message names file, line and field."""


@dataclass(frozen=True)
class StatementLine:
    line: int
    account: str
    value_date: str
    direction: str
    amount: int
    currency: str
    reference: str
    description: str


def _value_date(text: str) -> str:
    try:
        if _DATE.match(text):
            return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    raise ValueError(f"{text!r} is not a date YYYY-MM-DD")


def _direction(text: str) -> str:
    if text not in DIRECTIONS:
        raise ValueError(f"{text!r} is not CR or DR")
    return text


def _account(text: str) -> str:
    if not text.strip():
        raise ValueError("is empty")
    return text


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return value


def _field(bad: Callable[[str, str], StatementError], name: str, check: Callable[[Any], _T], value: Any) -> _T:
    try:
        return check(value)
    except ValueError as exc:
        raise bad(name, str(exc)) from None


def _at(path: Path, number: int) -> Callable[[str, str], StatementError]:
    def bad(field: str, what: str) -> StatementError:
        return StatementError(f"{path} line {number}, field {field}: {what}")

    return bad


def read_bank_statement(path: Path) -> list[StatementLine]:
    """Every statement line, checked; a blank line is skipped, anything else wrong raises StatementError.

    Line 1 must be the header. A UTF-8 BOM is accepted because spreadsheet
    programs add one when they save CSV as UTF-8.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _undecodable(path, data, exc.start) from None
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    lines: list[StatementLine] = []
    end = 0
    try:
        for row in rows:
            number, end = end + 1, rows.line_num
            if number == 1 and tuple(row) != COLUMNS:
                raise _at(path, 1)("header", f"expected {','.join(COLUMNS)}, found {','.join(row)!r}")
            if number > 1 and row:
                lines.append(_line(_at(path, number), number, row))
    except csv.Error as exc:
        raise _at(path, end + 1)("columns", f"not valid CSV: {exc}") from None
    if end == 0:
        raise _at(path, 1)("header", f"the file is empty, expected {','.join(COLUMNS)}")
    return lines


def _undecodable(path: Path, data: bytes, offset: int) -> StatementError:
    """Name the line and, as far as the text before the bad byte shows, the column holding it."""
    start = data.rfind(b"\n", 0, offset) + 1
    before = data[start:offset].decode("utf-8-sig", "replace")
    column = max(len(next(csv.reader([before]))) - 1, 0)
    field = COLUMNS[column] if column < len(COLUMNS) else "columns"
    return _at(path, data.count(b"\n", 0, start) + 1)(field, f"byte 0x{data[offset]:02X} is not UTF-8")


def _line(bad: Callable[[str, str], StatementError], number: int, row: list[str]) -> StatementLine:
    if tuple(row) == COLUMNS:
        raise bad("header", "a second header line (two statements joined?)")
    if len(row) != len(COLUMNS):
        raise bad("columns", f"{len(row)} columns, expected {len(COLUMNS)}: {','.join(COLUMNS)}")
    account, value_date, direction, amount, code, reference, description = row
    cur = _field(bad, "currency", currency, code)
    return StatementLine(
        number,
        _field(bad, "account", _account, account),
        _field(bad, "value_date", _value_date, value_date),
        _field(bad, "direction", _direction, direction),
        _field(bad, "amount", lambda text: parse_major(text, cur), amount),
        cur.numeric,
        reference,
        description,
    )


def write_bank_statement(path: Path, lines: Iterable[StatementLine]) -> int:
    """Write the header and the lines in the bank's form; returns how many lines were written.

    Each line is checked as the reader would check it, so what is written
    reads back equal, but for `line`: that is where a line was read from,
    and is ignored here. Lines end in CR LF as RFC 4180 has it; that also
    makes the csv module quote a lone CR inside a description, which it
    would leave bare with LF line ends and so split the line on reading.
    """
    path = Path(path)
    count = 0
    with atomic_text(path) as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for count, item in enumerate(lines, 1):
            writer.writerow(_row(_at(path, count + 1), item))
    return count


def _row(bad: Callable[[str, str], StatementError], item: StatementLine) -> list[str]:
    cur = _field(bad, "currency", currency, _field(bad, "currency", _text, item.currency))
    if not isinstance(item.amount, int) or isinstance(item.amount, bool) or item.amount < 0:
        raise bad("amount", f"{item.amount!r} is not a whole number of minor units, zero or more")
    return [
        _field(bad, "account", _account, _field(bad, "account", _text, item.account)),
        _field(bad, "value_date", _value_date, _field(bad, "value_date", _text, item.value_date)),
        _field(bad, "direction", _direction, item.direction),
        format_major(item.amount, cur),
        cur.numeric,
        _field(bad, "reference", _text, item.reference),
        _field(bad, "description", _text, item.description),
    ]
