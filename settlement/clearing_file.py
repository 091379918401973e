"""The fixed-width clearing file: one business date's transactions as the acquirer sends them on.

One layout description, `LAYOUT`, drives both the writer and the reader, so
the two cannot drift apart on a column (docs/settlement.md, "Clearing file
layout", shows the same table).

The reader has a fast path for detail records because a day's file may hold
a million of them: a well-formed line is sliced in one call, checked with a
handful of str methods and turned into a record without the frozen
dataclass's per-field object.__setattr__ calls. Any line the fast path does
not accept goes through the slow, field-by-field path, which either finds
the field to blame or returns the same record, so the two paths never
disagree on what a file means.

Errors never quote a masked_pan field, so an unmasked PAN in a bad file does
not travel on into logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, fields, make_dataclass
from datetime import date
from functools import lru_cache
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

from possim.wire.atomic import atomic_text

RECORD_LENGTH = 200
FILE_KIND = "CLEARING"
LAYOUT_VERSION = "01"

Field = tuple[str, int, int, str]
"""(name, first column 1-based, width, kind): kind `n` is digits, zero padded on the left;
`an` is printable ASCII, left aligned and space padded."""

LAYOUT: dict[str, tuple[Field, ...]] = {
    "H": (
        ("record_type", 1, 1, "an"),
        ("business_date", 2, 8, "n"),
        ("created_at", 10, 14, "n"),
        ("sender_id", 24, 11, "an"),
        ("file_kind", 35, 8, "an"),
        ("sequence", 43, 4, "n"),
        ("layout_version", 47, 2, "n"),
        ("filler", 49, 152, "an"),
    ),
    "D": (
        ("record_type", 1, 1, "an"),
        ("business_date", 2, 8, "n"),
        ("transacted_at", 10, 14, "n"),
        ("amount", 24, 12, "n"),
        ("currency", 36, 3, "n"),
        ("fee", 39, 10, "n"),
        ("sign", 49, 1, "an"),
        ("merchant_id", 50, 15, "an"),
        ("terminal_id", 65, 8, "an"),
        ("channel", 73, 16, "an"),
        ("kind", 89, 12, "an"),
        ("stan", 101, 16, "an"),
        ("rrn", 117, 12, "an"),
        ("masked_pan", 129, 19, "an"),
        ("auth_code", 148, 6, "an"),
        ("reference", 154, 32, "an"),
        ("filler", 186, 15, "an"),
    ),
    "T": (
        ("record_type", 1, 1, "an"),
        ("record_count", 2, 9, "n"),
        ("debit_total", 11, 18, "n"),
        ("credit_total", 29, 18, "n"),
        ("debit_fee_total", 47, 18, "n"),
        ("credit_fee_total", 65, 18, "n"),
        ("filler", 83, 118, "an"),
    ),
}
SIGNS = ("D", "C")
"""D: the merchant is owed the amount (sale); C: the merchant pays it back (refund)."""


class ClearingFileError(ValueError):
    """A clearing file or record that cannot be used; the message names file, line (or record), field and columns."""


@dataclass(frozen=True, slots=True)
class ClearingRecord:
    business_date: str
    merchant_id: str
    terminal_id: str
    channel: str
    kind: str
    sign: str
    stan: str
    rrn: str
    masked_pan: str
    amount: int
    currency: str
    fee: int
    transacted_at: str
    auth_code: str
    reference: str


@dataclass(frozen=True)
class ClearingHeader:
    business_date: str
    created_at: str
    sender_id: str
    sequence: int = 1


@dataclass(frozen=True)
class ClearingTrailer:
    record_count: int
    debit_total: int
    credit_total: int
    debit_fee_total: int
    credit_fee_total: int


_RECORD_FIELDS = tuple(f.name for f in fields(ClearingRecord))
_HEADER_FIELDS = tuple(f.name for f in fields(ClearingHeader))
_TRAILER_FIELDS = tuple(f.name for f in fields(ClearingTrailer))

# A twin of ClearingRecord with the same slots but plain attribute stores:
# filling it and then setting __class__ (allowed between identical slot
# layouts) costs a quarter of the frozen __init__, which is most of the
# parse time on a million records. Built from ClearingRecord's own fields so
# it cannot fall out of step.
_Fill = make_dataclass("_Fill", [(f.name, f.type) for f in fields(ClearingRecord)], slots=True, eq=False)


def _columns(field: Field) -> str:
    name, start, width, _ = field
    return f"field {name} (columns {start}-{start + width - 1})"


def _slice(field: Field) -> slice:
    return slice(field[1] - 1, field[1] - 1 + field[2])


_FIELD = {kind: {f[0]: f for f in layout} for kind, layout in LAYOUT.items()}
_RECORD_TYPE = LAYOUT["D"][0]
_WHOLE_RECORD: Field = ("record", 1, RECORD_LENGTH, "an")
_LINE_BYTES = RECORD_LENGTH + 1
_DETAIL = ord("D")
_DAY_DIGITS = 8
_AT = _slice(_FIELD["D"]["transacted_at"])
_AT_INDEX = _RECORD_FIELDS.index("transacted_at")
# The detail's parts in ClearingRecord order, transacted_at cut into its day and its clock,
# then the filler with the line end after it.
_DETAIL_PARTS = itemgetter(
    *(_slice(_FIELD["D"][name]) for name in _RECORD_FIELDS[:_AT_INDEX]),
    slice(_AT.start, _AT.start + _DAY_DIGITS),
    slice(_AT.start + _DAY_DIGITS, _AT.stop),
    *(_slice(_FIELD["D"][name]) for name in _RECORD_FIELDS[_AT_INDEX + 1:]),
    slice(_FIELD["D"]["filler"][1] - 1, _LINE_BYTES),
)
_DETAIL_TAIL = " " * _FIELD["D"]["filler"][2] + "\n"
_HEADER_DATE = _slice(_FIELD["H"]["business_date"])
_MASKED = re.compile(r"[0-9]{0,6}\*+[0-9]{0,4}\Z")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_ISO_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\Z")


class _Bad(ValueError):
    """What is wrong with one field's text; the caller says where."""


@lru_cache(maxsize=1024)
def _iso_date(text: str) -> str:
    """YYYYMMDD to YYYY-MM-DD; cached because a file holds few distinct days."""
    if text.isdigit():
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:8])).isoformat()
        except ValueError:
            pass
    raise _Bad(f"{text!r} is not a date YYYYMMDD")


def _clock(text: str) -> str:
    """HHMMSS to the THH:MM:SS that follows the day in an ISO date and time."""
    hour, minute, second = text[:2], text[2:4], text[4:6]
    if text.isdigit() and hour < "24" and minute < "60" and second < "60":
        return f"T{hour}:{minute}:{second}"
    raise _Bad(f"{text!r} is not a time HHMMSS")


def _iso_timestamp(text: str) -> str:
    try:
        return _iso_date(text[:_DAY_DIGITS]) + _clock(text[_DAY_DIGITS:])
    except _Bad:
        raise _Bad(f"{text!r} is not a date and time YYYYMMDDHHMMSS") from None


def _remembered(cache: dict[str, str], text: str, convert: Callable[[str], str]) -> str:
    """convert(text), kept in `cache`; '' when the text is not valid, for the slow path to explain."""
    try:
        cache[text] = convert(text)
    except _Bad:
        return ""
    return cache[text]


def _number(text: str) -> int:
    if not text.isdigit():
        raise _Bad(f"{text!r} is not digits")
    return int(text)


def _digit_text(text: str) -> str:
    if not text.isdigit():
        raise _Bad(f"{text!r} is not digits")
    return text


def _sign(text: str) -> str:
    if text not in SIGNS:
        raise _Bad(f"{text!r} is not a sign (D: the merchant is owed, C: the merchant pays back)")
    return text


def _masked_pan(text: str) -> str:
    pan = text.rstrip()
    if pan and not _MASKED.match(pan):
        raise _Bad("is not a masked PAN: at most the first 6 and last 4 digits may show, '*' between")
    return pan


def _blank(text: str) -> str:
    if text.strip(" "):
        raise _Bad("must be spaces")
    return ""


def _constant(expected: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text.rstrip() != expected:
            raise _Bad(f"{text.rstrip()!r} is not {expected!r}")
        return expected

    return check


_DECODERS: dict[str, Callable[[str], Any]] = {
    "business_date": _iso_date,
    "created_at": _iso_timestamp,
    "transacted_at": _iso_timestamp,
    "currency": _digit_text,
    "layout_version": _constant(LAYOUT_VERSION),
    "file_kind": _constant(FILE_KIND),
    "sign": _sign,
    "masked_pan": _masked_pan,
    "filler": _blank,
}


def _decode(field: Field, text: str) -> Any:
    name, _, _, kind = field
    if name in _DECODERS:
        return _DECODERS[name](text)
    if kind == "n":
        return _number(text)
    return text.rstrip()


def _compact_date(value: object) -> str:
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise _Bad(f"{value!r} is not a date YYYY-MM-DD")
    return value.replace("-", "")


def _compact_timestamp(value: object) -> str:
    if not isinstance(value, str) or not _ISO_TIMESTAMP.match(value):
        raise _Bad(f"{value!r} is not a date and time YYYY-MM-DDTHH:MM:SS")
    return value[0:4] + value[5:7] + value[8:10] + value[11:13] + value[14:16] + value[17:19]


_COMPACT = {"business_date": _compact_date, "created_at": _compact_timestamp, "transacted_at": _compact_timestamp}


def _encode(field: Field, value: object) -> str:
    """The field's text in the file, checked by decoding it again so the writer refuses what the reader would."""
    name, _, width, kind = field
    if name in _COMPACT:
        text = _COMPACT[name](value)
    elif kind == "n" and isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise _Bad(f"{value} is below zero")
        text = str(value).zfill(width)
    elif not isinstance(value, str):
        raise _Bad(f"expected {'a whole number' if kind == 'n' else 'text'}, got {type(value).__name__}")
    elif kind == "n":
        if len(value) != width or not (value.isascii() and value.isdigit()):
            raise _Bad(f"{value!r} is not {width} digits")
        text = value
    else:
        shown = "the value" if name == "masked_pan" else repr(value)
        if not (value.isascii() and value.isprintable()):
            raise _Bad(f"{shown} is not printable ASCII")
        if value.endswith(" "):
            raise _Bad(f"{shown} ends in a space, which the padding would lose")
        text = value.ljust(width)
    if len(text) > width:
        raise _Bad(f"{len(text)} characters, the field holds {width}")
    if name in _DECODERS:
        _DECODERS[name](text)
    return text


def _encode_record(kind: str, values: dict[str, object], where: str) -> str:
    parts = []
    for field in LAYOUT[kind]:
        try:
            parts.append(_encode(field, values.get(field[0], "")))
        except _Bad as exc:
            raise ClearingFileError(f"{where}, {_columns(field)}: {exc}") from None
    return "".join(parts) + "\n"


def _quick_detail(header_date: str, merchants: frozenset[str] | None) -> Callable[[str], ClearingRecord | None]:
    """A decoder for the common case: a detail line (with its LF) that is valid as it stands.

    It gives None for anything it is not sure of, and the slow path then
    finds the field to blame or, if the line was fine after all, decodes it
    field by field. Days and clocks seen once are remembered, since a file
    holds few days and at most 86,400 clocks.
    """
    raw_date = header_date.replace("-", "")
    parts, tail, masked, twin, frozen = _DETAIL_PARTS, _DETAIL_TAIL, _MASKED, _Fill, ClearingRecord
    days: dict[str, str] = {}
    clocks: dict[str, str] = {}

    def decode(line: str) -> ClearingRecord | None:
        (bdate, mid, tid, channel, kind, sign, stan, rrn, pan, amount, currency, fee, day, clock, auth, ref,
         rest) = parts(line)
        mid = mid.rstrip()
        pan = pan.rstrip()
        day = days.get(day) or _remembered(days, day, _iso_date)
        clock = clocks.get(clock) or _remembered(clocks, clock, _clock)
        if not (day and clock and rest == tail and bdate == raw_date and (sign == "D" or sign == "C")
                and amount.isdigit() and fee.isdigit() and currency.isdigit()
                and (not pan or masked.match(pan)) and (merchants is None or mid in merchants)):
            return None
        record = twin(header_date, mid, tid.rstrip(), channel.rstrip(), kind.rstrip(), sign, stan.rstrip(),
                      rrn.rstrip(), pan, int(amount), currency, int(fee), day + clock, auth.rstrip(), ref.rstrip())
        record.__class__ = frozen
        return record

    return decode


def _detail_template() -> str:
    """A %-format template of a detail line, taking _DETAIL_VALUES with the dates in file form."""
    parts = []
    for name, _, width, kind in LAYOUT["D"]:
        if name == "record_type":
            parts.append("D")
        elif name == "filler":
            parts.append(" " * width)
        elif name in _COMPACT or name == "currency":
            parts.append("%s")
        elif kind == "n":
            parts.append(f"%0{width}d")
        else:
            parts.append(f"%-{width}s")
    return "".join(parts) + "\n"


_DETAIL_TEMPLATE = _detail_template()
_WRITTEN = tuple(f[0] for f in LAYOUT["D"] if f[0] not in ("record_type", "filler"))
_DETAIL_VALUES = attrgetter(*_WRITTEN)
_BUSINESS_DATE_AT, _TRANSACTED_AT_AT = _WRITTEN.index("business_date"), _WRITTEN.index("transacted_at")


def _quick_line(record: ClearingRecord, day: str, decode: Callable[[str], ClearingRecord | None]) -> str | None:
    """The record's line when formatting it and reading it back gives the same record, else None.

    Reading it back is the whole check: what the reader's fast path returns
    unchanged is exactly what the file can hold, so the writer needs no
    second set of rules. Anything else goes to the field-by-field encoder,
    which says what is wrong.
    """
    values = list(_DETAIL_VALUES(record))
    values[_BUSINESS_DATE_AT] = day
    try:
        values[_TRANSACTED_AT_AT] = values[_TRANSACTED_AT_AT].replace("-", "").replace(":", "").replace("T", "")
        line = _DETAIL_TEMPLATE % tuple(values)
    except (AttributeError, TypeError, ValueError):
        return None
    if (type(record.amount) is int and type(record.fee) is int and line.isascii()
            and line[:-1].isprintable() and decode(line) == record):
        return line
    return None


def write_clearing_file(path: Path, header: ClearingHeader, records: Iterable[ClearingRecord]) -> ClearingTrailer:
    """Write header, one detail line per record and the trailer; returns the trailer written.

    Records are streamed, so a generator of a million records never sits in
    memory. Every record must belong to the header's business date: a file
    is the clearing of one day.
    """
    path = Path(path)
    first = _encode_record("H", {"record_type": "H", "file_kind": FILE_KIND, "layout_version": LAYOUT_VERSION,
                                 **vars(header)}, f"{path} line 1")
    day = first[_HEADER_DATE]
    decode = _quick_detail(header.business_date, None)
    count = debit = credit = debit_fee = credit_fee = 0
    with atomic_text(path) as out:
        out.write(first)
        for count, record in enumerate(records, 1):
            line = (_quick_line(record, day, decode)
                    or _slow_line(record, header, f"{path} record {count} (line {count + 1})"))
            if record.sign == "D":
                debit += record.amount
                debit_fee += record.fee
            else:
                credit += record.amount
                credit_fee += record.fee
            out.write(line)
        trailer = ClearingTrailer(count, debit, credit, debit_fee, credit_fee)
        out.write(_encode_record("T", {"record_type": "T", **vars(trailer)}, f"{path} line {count + 2}"))
    return trailer


def _slow_line(record: ClearingRecord, header: ClearingHeader, where: str) -> str:
    line = _encode_record("D", {"record_type": "D", **{name: getattr(record, name) for name in _RECORD_FIELDS}}, where)
    if record.business_date != header.business_date:
        raise ClearingFileError(f"{where}, {_columns(_FIELD['D']['business_date'])}: "
                                f"{record.business_date!r} is not the header's {header.business_date!r}")
    return line


class ClearingReader:
    """Streams a clearing file's details, checking every field and the trailer's count and totals.

    The header is read and checked on construction, so a caller learns the
    business date before deciding to read a million lines. The trailer is
    checked when iteration reaches it; a missing or disagreeing trailer
    raises at the end of the iteration, after the records were handed out,
    so a caller must treat the records as provisional until the loop ends.
    """

    def __init__(self, path: Path, merchants: Collection[str] | None = None) -> None:
        self.path = Path(path)
        self._merchants = None if merchants is None else frozenset(merchants)
        self.trailer: ClearingTrailer | None = None
        with self.path.open("rb") as file:
            first = file.readline()
        if not first:
            raise self._error(1, _RECORD_TYPE, "the file is empty; it must start with a header ('H') record")
        line = self._line(first, 1)
        if line[0] != "H":
            raise self._error(1, _RECORD_TYPE, self._misplaced(line[0], "before the header ('H') record"))
        values = self._fields("H", line, 1)
        self.header = ClearingHeader(*(values[name] for name in _HEADER_FIELDS))

    def __iter__(self) -> Iterator[tuple[int, ClearingRecord]]:
        self.trailer = None
        quick = _quick_detail(self.header.business_date, self._merchants)
        count = debit = credit = debit_fee = credit_fee = 0
        trailer_at = 0
        number = 1
        with self.path.open("rb") as file:
            file.readline()
            for number, raw in enumerate(file, 2):
                if trailer_at:
                    raise self._error(number, _RECORD_TYPE, f"a record after the trailer (line {trailer_at})")
                record = None
                if len(raw) == _LINE_BYTES and raw[0] == _DETAIL and raw.isascii():
                    record = quick(raw.decode("ascii"))
                if record is None:
                    line = self._line(raw, number)
                    if line[0] == "T":
                        self.trailer = self._trailer(line, number, (count, debit, credit, debit_fee, credit_fee))
                        trailer_at = number
                        continue
                    if line[0] != "D":
                        raise self._error(number, _RECORD_TYPE, self._misplaced(line[0], "after the header"))
                    record = self._detail(line, number)
                count += 1
                if record.sign == "D":
                    debit += record.amount
                    debit_fee += record.fee
                else:
                    credit += record.amount
                    credit_fee += record.fee
                yield number, record
        if not trailer_at:
            raise self._error(number + 1, _RECORD_TYPE,
                              f"the file ends after line {number} without a trailer ('T') record")

    def stated_trailer(self) -> ClearingTrailer:
        """The trailer as the file states it, read from the last line without reading the records.

        For a file this program wrote and has checked since (cut-over reads it back whole), the trailer is
        the file's checksum: comparing it costs one line where reading a million costs seconds.
        """
        with self.path.open("rb") as file:
            file.seek(0, 2)
            size = file.tell()
            file.seek(max(0, size - _LINE_BYTES))
            last = file.read()
        number = max(1, size // _LINE_BYTES)
        line = self._line(last, number)
        if line[0] != "T":
            raise self._error(number, _RECORD_TYPE, "the last line is not the trailer ('T') record")
        values = self._fields("T", line, number)
        return ClearingTrailer(*(values[name] for name in _TRAILER_FIELDS))

    def _error(self, number: int, field: Field, what: str) -> ClearingFileError:
        return ClearingFileError(f"{self.path} line {number}, {_columns(field)}: {what}")

    @staticmethod
    def _misplaced(record_type: str, where: str) -> str:
        if record_type == "H":
            return "a second header ('H') record"
        if record_type in ("D", "T"):
            return f"a {record_type!r} record {where}"
        return f"unknown record type {record_type!r} (expected H, D or T)"

    def _line(self, raw: bytes, number: int) -> str:
        """The record's text without its line end, or the error that makes the line unusable."""
        if raw.endswith(b"\r\n"):
            raise self._error(number, _WHOLE_RECORD, "the line ends in CR LF; clearing files end lines with LF only")
        if not raw.endswith(b"\n"):
            raise self._error(number, _WHOLE_RECORD, "the last line has no line end (LF)")
        body = raw[:-1]
        if len(body) != RECORD_LENGTH:
            raise self._error(number, _WHOLE_RECORD, f"record length {len(body)}, expected {RECORD_LENGTH}")
        try:
            return body.decode("ascii")
        except UnicodeDecodeError as exc:
            column = exc.start + 1
            layout = LAYOUT.get(chr(body[0]), LAYOUT["H"])
            field = next(f for f in layout if f[1] <= column < f[1] + f[2])
            raise self._error(number, field, f"byte 0x{body[exc.start]:02X} at column {column} is not ASCII") from None

    def _fields(self, kind: str, line: str, number: int) -> dict[str, Any]:
        values = {}
        for field in LAYOUT[kind]:
            try:
                values[field[0]] = _decode(field, line[_slice(field)])
            except _Bad as exc:
                raise self._error(number, field, str(exc)) from None
        return values

    def _detail(self, line: str, number: int) -> ClearingRecord:
        values = self._fields("D", line, number)
        if values["business_date"] != self.header.business_date:
            raise self._error(number, _FIELD["D"]["business_date"],
                              f"{values['business_date']!r} is not the header's {self.header.business_date!r}")
        if self._merchants is not None and values["merchant_id"] not in self._merchants:
            raise self._error(number, _FIELD["D"]["merchant_id"], f"unknown merchant {values['merchant_id']!r}")
        return ClearingRecord(*(values[name] for name in _RECORD_FIELDS))

    def _trailer(self, line: str, number: int, found: tuple[int, ...]) -> ClearingTrailer:
        values = self._fields("T", line, number)
        for name, actual in zip(_TRAILER_FIELDS, found):
            if values[name] != actual:
                raise self._error(number, _FIELD["T"][name], f"the trailer says {values[name]}, "
                                  f"expected {actual} from the {found[0]} detail records")
        return ClearingTrailer(*found)
