"""Batch-close totals and upload records as they travel in the 0500/0320
messages (docs/transactions.md, "Batch close"), with no I/O.

Terminal and host both call these functions, so the two ends cannot drift
apart on a layout: the terminal encodes what the host decodes and the other
way round.

Layouts:

- cup field 48 of a 0500: two 31-digit blocks, domestic cards then foreign
  ones, each debit amount n12, debit count n3, credit amount n12, credit
  count n3, result n1 (`0` in a request; `1` balanced, `2` out of balance,
  `3` error in an answer, the same in both blocks).
- iso87 0500: 74/76 credit/debit counts n10, 86/88 credit/debit amounts n16,
  75/77/87/89 (reversals) zero, 97 the net settlement amount and 15 the
  settlement date. iso87 has no domestic/foreign split, so the combined
  totals are sent and are read back as domestic.
- cup field 48 of an upload 0320: record count n2, then up to 8 records of
  40 digits: card organisation 2, STAN 6, PAN 20, amount 12.

Field 97 follows ISO 8583:1987 as acquirer hosts document it (for example
Elavon's "Field 97 = Field 86 + Field 87 - Field 88 - Field 89", `D` when
that is below zero, `C` when zero or more): the amount is credits minus
debits, so a batch whose debits (sales) exceed its credits (voids, refunds)
carries `D`, and an empty or even batch carries `C`. That is the opposite
sign of `Totals.net`, which counts from the merchant's sales side.

Errors are TotalsError naming the field, the character offset inside the
field value and, for uploads, the record; they never quote a PAN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .message import Message

SIDES = ("debit", "credit")
RESULTS = {"0": "request", "1": "balanced", "2": "out of balance", "3": "error"}
CARD_ORGS = {"00": "domestic", "01": "foreign"}

CUP48_BLOCK = 31
CUP48_LENGTH = 2 * CUP48_BLOCK
UPLOAD_RECORD = 40
UPLOAD_PER_MESSAGE = 8
END_OF_UPLOAD_DIGITS = 4

_BLOCK_PARTS = (
    # (attribute, offset inside the block, digits)
    ("debit_amount", 0, 12),
    ("debit_count", 12, 3),
    ("credit_amount", 15, 12),
    ("credit_count", 27, 3),
)
_RESULT_OFFSET = 30

_ISO_COUNT, _ISO_AMOUNT = 10, 16
_ISO_FIELDS = (
    # (field, attribute of the combined Totals, digits, what)
    (74, "credit_count", _ISO_COUNT, "credits count"),
    (76, "debit_count", _ISO_COUNT, "debits count"),
    (86, "credit_amount", _ISO_AMOUNT, "credits amount"),
    (88, "debit_amount", _ISO_AMOUNT, "debits amount"),
)
_ISO_REVERSALS = (
    (75, _ISO_COUNT, "credit reversals count"),
    (77, _ISO_COUNT, "debit reversals count"),
    (87, _ISO_AMOUNT, "credit reversals amount"),
    (89, _ISO_AMOUNT, "debit reversals amount"),
)
_NET_FIELD, _NET_DIGITS = 97, 16
_SETTLEMENT_DATE = 15

_PAN_DIGITS = 20
_UPLOAD_PARTS = (
    # (what, offset inside the record, digits)
    ("card organisation", 0, 2),
    ("STAN", 2, 6),
    ("PAN", 8, _PAN_DIGITS),
    ("amount", 28, 12),
)


class TotalsError(ValueError):
    """Totals or upload records that cannot be encoded or decoded; the text names field and offset."""


def _error(field: int, offset: int | None, what: str, record: int | None = None) -> TotalsError:
    where = f"field {field}"
    if record is not None:
        where += f" record {record}"
    if offset is not None:
        where += f" offset {offset}"
    return TotalsError(f"{where}: {what}")


@dataclass(frozen=True)
class Totals:
    """Counts and amounts (minor units) of one group of cards; immutable so a batch's totals are values."""

    debit_count: int = 0
    debit_amount: int = 0
    credit_count: int = 0
    credit_amount: int = 0

    def __post_init__(self) -> None:
        for name in ("debit_count", "debit_amount", "credit_count", "credit_amount"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise TotalsError(f"{name}: must be a whole number, zero or more")

    def add(self, side: str, amount: int) -> Totals:
        """These totals with one more transaction on `side` ("debit" or "credit")."""
        if side not in SIDES:
            raise TotalsError(f"side: must be debit or credit, not {side!r}")
        if type(amount) is not int or amount < 0:
            raise TotalsError("amount: must be a whole number of minor units, zero or more")
        count, total = f"{side}_count", f"{side}_amount"
        return replace(self, **{count: getattr(self, count) + 1, total: getattr(self, total) + amount})

    @property
    def net(self) -> int:
        """Debits minus credits: what the batch took from cardholders (field 97 counts the other way)."""
        return self.debit_amount - self.credit_amount


@dataclass(frozen=True)
class BatchTotals:
    """A batch's totals split as cup field 48 splits them: domestic and foreign cards."""

    domestic: Totals = Totals()
    foreign: Totals = Totals()

    @property
    def combined(self) -> Totals:
        d, f = self.domestic, self.foreign
        return Totals(
            d.debit_count + f.debit_count,
            d.debit_amount + f.debit_amount,
            d.credit_count + f.credit_count,
            d.credit_amount + f.credit_amount,
        )


def _digits(value: int, size: int, field: int, offset: int | None, what: str, record: int | None = None) -> str:
    """`value` zero-padded to `size` digits, or an error if it is longer."""
    if value >= 10**size:
        raise _error(field, offset, f"{what} must fit {size} digits (at most {10**size - 1})", record)
    return str(value).rjust(size, "0")


def _first_non_digit(text: str) -> int | None:
    for i, ch in enumerate(text):
        if ch not in "0123456789":
            return i
    return None


def _read_digits(text: str, start: int, size: int, field: int, what: str, record: int | None = None) -> int:
    """The number in text[start:start+size]; the error names the offending character's offset."""
    bad = _first_non_digit(text[start:start + size])
    if bad is not None:
        raise _error(field, start + bad, f"{what} must be {size} digits", record)
    return int(text[start:start + size])


# --- cup field 48: totals --------------------------------------------------


def encode_cup48(totals: BatchTotals, result: str = "0") -> str:
    """The 62 digits of cup field 48 in a 0500 (request: result "0") or its answer (result 1/2/3)."""
    if result not in RESULTS:
        raise _error(48, _RESULT_OFFSET,
                     "result must be one of 0 (request), 1 (balanced), 2 (out of balance), 3 (error)")
    blocks = []
    for index, (group, part) in enumerate((("domestic", totals.domestic), ("foreign", totals.foreign))):
        base = index * CUP48_BLOCK
        digits = [
            _digits(getattr(part, name), size, 48, base + offset, f"{group} {name.replace('_', ' ')}")
            for name, offset, size in _BLOCK_PARTS
        ]
        blocks.append("".join(digits) + result)
    return "".join(blocks)


def decode_cup48(text: str) -> tuple[BatchTotals, str]:
    """Totals and result digit from cup field 48 of a 0500 or its answer.

    Both blocks must carry the same result: the contract answers one result
    for the whole batch, so two different ones mean a sender we do not
    understand, and guessing which block wins could hide an out-of-balance.
    """
    if len(text) != CUP48_LENGTH:
        at = min(len(text), CUP48_LENGTH)
        raise _error(48, at, f"expected {CUP48_LENGTH} digits (two blocks of {CUP48_BLOCK}), found {len(text)}")
    groups = []
    results = []
    for index, group in enumerate(("domestic", "foreign")):
        base = index * CUP48_BLOCK
        values = {
            name: _read_digits(text, base + offset, size, 48, f"{group} {name.replace('_', ' ')}")
            for name, offset, size in _BLOCK_PARTS
        }
        result = text[base + _RESULT_OFFSET]
        if result not in RESULTS:
            raise _error(48, base + _RESULT_OFFSET, f"{group} result must be one of 0, 1, 2, 3")
        groups.append(Totals(**values))
        results.append(result)
    if results[0] != results[1]:
        raise _error(48, CUP48_BLOCK + _RESULT_OFFSET, "foreign result must equal the domestic result")
    return BatchTotals(groups[0], groups[1]), results[0]


# --- iso87: fields 74-89, 97, 15 -------------------------------------------------


def set_iso_totals(message: Message, totals: BatchTotals, settlement_date: str) -> None:
    """Put the combined totals of a batch into an iso87 0500 (fields 15, 74-77, 86-89, 97)."""
    _check_settlement_date(settlement_date)
    combined = totals.combined
    values: dict[int, str] = {_SETTLEMENT_DATE: settlement_date}
    for field, name, size, what in _ISO_FIELDS:
        values[field] = _digits(getattr(combined, name), size, field, None, what)
    for field, size, _ in _ISO_REVERSALS:
        values[field] = "0" * size
    net = combined.credit_amount - combined.debit_amount
    sign = "C" if net >= 0 else "D"
    values[_NET_FIELD] = sign + _digits(abs(net), _NET_DIGITS, _NET_FIELD, None, "net settlement amount")
    message.fields.update(values)


def _check_settlement_date(text: str) -> None:
    if len(text) != 4:
        raise _error(_SETTLEMENT_DATE, min(len(text), 4), f"settlement date must be MMDD, found {len(text)} characters")
    month = _read_digits(text, 0, 2, _SETTLEMENT_DATE, "settlement month")
    day = _read_digits(text, 2, 2, _SETTLEMENT_DATE, "settlement day")
    if not 1 <= month <= 12:
        raise _error(_SETTLEMENT_DATE, 0, "settlement month must be 01 to 12")
    if not 1 <= day <= 31:
        raise _error(_SETTLEMENT_DATE, 2, "settlement day must be 01 to 31")


def _iso_number(message: Message, field: int, size: int, what: str) -> int:
    text = message.get(field)
    if text is None:
        raise _error(field, None, f"{what} is missing")
    if len(text) != size:
        raise _error(field, min(len(text), size), f"{what} must be {size} digits, found {len(text)} characters")
    return _read_digits(text, 0, size, field, what)


def read_iso_totals(message: Message) -> BatchTotals:
    """The totals of an iso87 0500, all as domestic (iso87 does not split them).

    74, 76, 86, 88 and 97 are required. The reversal fields 75/77/87/89 may be
    absent; when present they must be zero, because reversed transactions
    count nowhere in our totals. Field 97 must agree with 86 and 88: a total
    whose parts disagree is one the host cannot compare honestly. A zero net
    is accepted as C or D (the amount is what is checked).
    """
    values = {name: _iso_number(message, field, size, what) for field, name, size, what in _ISO_FIELDS}
    for field, size, what in _ISO_REVERSALS:
        if field in message and _iso_number(message, field, size, what) != 0:
            raise _error(field, None, f"{what} must be 0 (reversed transactions count nowhere)")
    net_text = message.get(_NET_FIELD)
    if net_text is None:
        raise _error(_NET_FIELD, None, "net settlement amount is missing")
    if len(net_text) != 1 + _NET_DIGITS:
        raise _error(_NET_FIELD, min(len(net_text), 1 + _NET_DIGITS),
                     f"net settlement must be C or D and {_NET_DIGITS} digits, found {len(net_text)} characters")
    if net_text[0] not in "CD":
        raise _error(_NET_FIELD, 0, "net settlement must start with C (credits >= debits) or D (debits > credits)")
    amount = _read_digits(net_text, 1, _NET_DIGITS, _NET_FIELD, "net settlement amount")
    net = amount if net_text[0] == "C" else -amount
    totals = Totals(**values)
    if net != totals.credit_amount - totals.debit_amount:
        raise _error(_NET_FIELD, None, "net settlement does not equal credits amount (86) minus debits amount (88)")
    return BatchTotals(domestic=totals)


# --- cup field 48: upload records ------------------------------------------


@dataclass(frozen=True)
class UploadRecord:
    """One transaction of a cup batch upload.

    `masked_pan` is the PAN as the terminal stores it ("622848*********0017").
    The wire carries each '*' as '0', so a record read back from the wire has
    zeros where the hidden digits were: the hidden digits are never sent.
    """

    card_org: str
    stan: str
    masked_pan: str
    amount: int


def _pack_record(record: UploadRecord, number: int, base: int) -> str:
    """40 digits for `record` (1-based `number` in the caller's list), placed at `base` in its field 48."""
    if record.card_org not in CARD_ORGS:
        raise _error(48, base, "card organisation must be 00 (domestic) or 01 (foreign)", number)
    stan = record.stan
    if len(stan) != 6 or _first_non_digit(stan) is not None:
        raise _error(48, base + 2, "STAN must be 6 digits", number)
    pan = record.masked_pan
    pan_at = base + 8
    if not 1 <= len(pan) <= _PAN_DIGITS:
        raise _error(48, pan_at, f"masked PAN must be 1 to {_PAN_DIGITS} characters, found {len(pan)}", number)
    pan_at += _PAN_DIGITS - len(pan)
    for i, ch in enumerate(pan):
        if ch not in "0123456789*":
            raise _error(48, pan_at + i, f"masked PAN character {i + 1} must be a digit or *", number)
    if pan[0] not in "123456789":
        # A leading 0 or * would be read back as padding.
        raise _error(48, pan_at, "masked PAN must start with a digit 1-9", number)
    if type(record.amount) is not int or record.amount < 0:
        raise _error(48, base + 28, "amount must be a whole number of minor units, zero or more", number)
    amount = _digits(record.amount, 12, 48, base + 28, "amount", number)
    return record.card_org + stan + pan.replace("*", "0").rjust(_PAN_DIGITS, "0") + amount


def pack_cup_upload(records: Sequence[UploadRecord]) -> list[str]:
    """Field 48 of each upload 0320: a 2-digit record count, then up to 8 records of 40 digits.

    Errors name the record by its 1-based place in `records` and the offset
    inside the field 48 of the message that record would go in.
    """
    fields = []
    for start in range(0, len(records), UPLOAD_PER_MESSAGE):
        chunk = records[start:start + UPLOAD_PER_MESSAGE]
        body = "".join(
            _pack_record(record, start + i + 1, 2 + i * UPLOAD_RECORD) for i, record in enumerate(chunk)
        )
        fields.append(f"{len(chunk):02d}{body}")
    return fields


def unpack_cup_upload(text: str) -> list[UploadRecord]:
    """The records of one upload 0320's field 48; PANs come back with zeros for the hidden digits."""
    if len(text) < 2:
        raise _error(48, len(text), "expected a 2-digit record count")
    count = _read_digits(text, 0, 2, 48, "record count")
    if count > UPLOAD_PER_MESSAGE:
        raise _error(48, 0, f"record count must be at most {UPLOAD_PER_MESSAGE}")
    records = []
    for index in range(count):
        number, base = index + 1, 2 + index * UPLOAD_RECORD
        if len(text) < base + UPLOAD_RECORD:
            raise _error(48, len(text), f"expected {UPLOAD_RECORD} digits, found {len(text) - base}", number)
        values = [_read_digits(text, base + offset, size, 48, what, number) for what, offset, size in _UPLOAD_PARTS]
        card_org = text[base:base + 2]
        if card_org not in CARD_ORGS:
            raise _error(48, base, "card organisation must be 00 (domestic) or 01 (foreign)", number)
        pan = text[base + 8:base + 8 + _PAN_DIGITS].lstrip("0")
        if not pan:
            raise _error(48, base + 8, "PAN is all zeros", number)
        records.append(UploadRecord(card_org, text[base + 2:base + 8], pan, values[3]))
    end = 2 + count * UPLOAD_RECORD
    if len(text) != end:
        raise _error(48, end, f"expected the end after {count} records, found {len(text) - end} more characters")
    return records


def end_of_upload_48(count: int) -> str:
    """Field 48 of the end-of-upload 0320 (60.3 = 202): the number of records uploaded, 4 digits."""
    if type(count) is not int or count < 0:
        raise _error(48, 0, "record total must be a whole number, zero or more")
    return _digits(count, END_OF_UPLOAD_DIGITS, 48, 0, "record total")


def read_end_of_upload_48(text: str) -> int:
    """The record total of an end-of-upload 0320's field 48."""
    if len(text) != END_OF_UPLOAD_DIGITS:
        raise _error(48, min(len(text), END_OF_UPLOAD_DIGITS),
                     f"record total must be {END_OF_UPLOAD_DIGITS} digits, found {len(text)} characters")
    return _read_digits(text, 0, END_OF_UPLOAD_DIGITS, 48, "record total")
