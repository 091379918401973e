"""Payment notices (缴款通知书) as the finance bureau's non-tax system holds
them, and the bank confirmations that pay them, in the bureau's own SQLite file.

The bureau is another organisation than the bank: its books live in a file
of their own, and meet the bank's journal only on the wire, so that a
reconciliation between the two can find real differences.

A payment code is digits: the 6-digit region code of the issuing agency,
a serial, and a Luhn check digit last, so a code mistyped at the counter is
refused before any lookup. Its length is set per region (16 to 20 digits are
common); `CodeLengths` takes the most specific of district (310101), city
(310100), province (310000), then the default.

A notice is paid by exactly one standing confirmation; the bank's channel
trade number identifies a confirmation and is unique, which makes a repeated
confirmation harmless: the same trade number finds the same confirmation
("already paid", naming itself). A cancelled confirmation stays on file,
marked cancelled, and the notice is payable again. Once the bureau marks a
day reconciled, the confirmations booked to it can no longer be cancelled,
and later confirmations are booked to the next open day.

Money is int minor units of an ISO 4217 numeric currency. Payer names are
stored as given (they are not card data), but they are personal data: the
bureau logs pay codes and amounts, never names.
"""

from __future__ import annotations

import builtins
import csv
import random
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from possim.fixtures import FixtureError, fixture_path, load_fixture
from possim.wire.clock import Clock, system_clock
from possim.wire.money import currency, parse_major
from possim.wire.payment_code import luhn_digit

FINANCE_FILE = "finance.yaml"
REGION_DIGITS = 6
DEFAULT_LENGTH = 20
UNPAID, PAID, CANCELLED, EXPIRED = "unpaid", "paid", "cancelled", "expired"
STATUSES = (UNPAID, PAID, CANCELLED, EXPIRED)
CONFIRMED = "confirmed"
"""A confirmation standing; the other state is CANCELLED."""
_MAX_TEXT = 200


class NoticeError(ValueError):
    """A notice, file or request the store cannot take; the message names what and where."""


class PaymentCodeError(NoticeError):
    """A payment code that is not one: wrong characters, length or check digit."""


class Refused(NoticeError):
    """A business refusal the bureau answers with a result code."""


class NoSuchNotice(Refused):
    pass


class NoticeExpired(Refused):
    pass


class NoticeCancelled(Refused):
    pass


class AmountMismatch(Refused):
    pass


class TradeNoUsed(Refused):
    """The trade number belongs to another notice's confirmation, or to a cancelled one."""


class NothingToCancel(Refused):
    pass


class DayReconciled(Refused):
    pass


class AlreadyReconciled(NoticeError):
    """A day can be reconciled once."""


class AlreadyPaid(Refused):
    """The notice is paid; `confirmation` is the standing one (its trade number may be the caller's own)."""

    def __init__(self, message: str, confirmation: Confirmation):
        super().__init__(message)
        self.confirmation = confirmation


# ---- payment codes ----

@dataclass(frozen=True)
class CodeLengths:
    regions: Mapping[str, int] = field(default_factory=dict)
    default: int = DEFAULT_LENGTH

    def for_region(self, region: str) -> int:
        for candidate in (region, region[:4] + "00", region[:2] + "0000"):
            if candidate in self.regions:
                return self.regions[candidate]
        return self.default


def make_pay_code(region: str, rng: random.Random, lengths: CodeLengths | None = None) -> str:
    """A new code for `region`: region, random serial, Luhn digit."""
    if len(region) != REGION_DIGITS or not region.isascii() or not region.isdigit():
        raise PaymentCodeError(f"region {region!r} is not {REGION_DIGITS} digits")
    length = (lengths or CodeLengths()).for_region(region)
    serial = "".join(rng.choice("0123456789") for _ in range(length - REGION_DIGITS - 1))
    return region + serial + luhn_digit(region + serial)


def check_pay_code(code: str, lengths: CodeLengths | None = None) -> None:
    """Raise PaymentCodeError saying what is wrong with `code`, or return."""
    for position, char in enumerate(code, 1):
        if char not in "0123456789":
            raise PaymentCodeError(f"payment code character {position} is not a digit")
    if len(code) <= REGION_DIGITS:
        raise PaymentCodeError(f"payment code has {len(code)} digits, too short for a region code and a check digit")
    region = code[:REGION_DIGITS]
    expected = (lengths or CodeLengths()).for_region(region)
    if len(code) != expected:
        raise PaymentCodeError(f"payment code has {len(code)} digits; region {region} uses {expected}")
    if luhn_digit(code[:-1]) != code[-1]:
        raise PaymentCodeError("payment code check digit is wrong (mistyped?)")


# ---- configuration ----

@dataclass(frozen=True)
class FinanceConfig:
    """The bureau's settings from finance.yaml; its `notices` are loaded with `NoticeStore.load(source)`."""

    mac_key: bytes
    lengths: CodeLengths
    agencies: Mapping[str, str]
    currency: str
    """The one currency (numeric) this finance system collects."""
    source: Path

    @classmethod
    def from_fixtures(cls, folder: str | Path | None = None) -> FinanceConfig:
        source = fixture_path(FINANCE_FILE, folder)
        data = load_fixture(FINANCE_FILE, folder)
        key_text = str(data.get("mac_key", ""))
        try:
            key = bytes.fromhex(key_text)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise FixtureError(f"{source}: mac_key must be 64 hex digits (32 bytes)")
        regions = data.get("regions") or {}
        if not isinstance(regions, dict):
            raise FixtureError(f"{source}: regions must be a mapping of region code to code length")
        lengths = {}
        for region, length in regions.items():
            name = str(region)
            if len(name) != REGION_DIGITS or not name.isdigit() or not _is_length(length):
                raise FixtureError(f"{source}: regions.{name} must map a 6-digit region to a length of 7 to 30")
            lengths[name] = length
        default = data.get("default_length", DEFAULT_LENGTH)
        if not _is_length(default):
            raise FixtureError(f"{source}: default_length must be a length of 7 to 30, got {default!r}")
        try:
            money = currency(str(data.get("currency", "156"))).numeric
        except ValueError as exc:
            raise FixtureError(f"{source}: currency: {exc}") from None
        return cls(key, CodeLengths(lengths, default), _agencies(data.get("agencies") or [], str(source)), money, source)


def _is_length(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and REGION_DIGITS < value <= 30


def _agencies(entries: object, where: str) -> dict[str, str]:
    if not isinstance(entries, list):
        raise FixtureError(f"{where}: agencies must be a list of {{code, name}}")
    agencies = {}
    for entry in entries:
        line = entry.pop("__line__", None) if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not entry.get("code") or not entry.get("name"):
            raise FixtureError(f"{where}{f' line {line}' if line else ''}: an agency needs a code and a name")
        agencies[str(entry["code"])] = str(entry["name"])
    return agencies


# ---- notices and confirmations ----

@dataclass(frozen=True)
class FeeItem:
    code: str
    name: str
    amount: int


@dataclass(frozen=True)
class Notice:
    pay_code: str
    agency_code: str
    agency_name: str
    payer_name: str
    items: tuple[FeeItem, ...]
    amount: int
    currency: str
    """ISO 4217 numeric."""
    due_date: str
    """ISO date; the last day the notice can be paid."""
    status: str = UNPAID
    """unpaid, paid, cancelled, or expired (unpaid and past its due date); only unpaid or cancelled can be added."""
    created_at: str = ""
    paid_trade_no: str | None = None
    paid_channel: str | None = None
    paid_at: str | None = None
    """The confirmation time the bank gave, ISO."""
    confirm_no: str | None = None


@dataclass(frozen=True)
class Confirmation:
    confirm_no: str
    pay_code: str
    agency_code: str
    amount: int
    currency: str
    channel: str
    trade_no: str
    terminal_id: str
    confirm_time: str
    """ISO; when the bank says the payer paid."""
    business_date: str
    """ISO; the bureau's day the confirmation is booked to."""
    state: str
    """confirmed or cancelled."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS notices (
    pay_code    TEXT PRIMARY KEY,
    agency_code TEXT NOT NULL,
    agency_name TEXT NOT NULL,
    payer_name  TEXT NOT NULL,
    amount      INTEGER NOT NULL,
    currency    TEXT NOT NULL,
    due_date    TEXT NOT NULL,
    cancelled   INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notice_items (
    pay_code TEXT NOT NULL REFERENCES notices (pay_code),
    position INTEGER NOT NULL,
    code     TEXT NOT NULL,
    name     TEXT NOT NULL,
    amount   INTEGER NOT NULL,
    PRIMARY KEY (pay_code, position)
);
CREATE TABLE IF NOT EXISTS confirmations (
    id            INTEGER PRIMARY KEY,
    confirm_no    TEXT NOT NULL UNIQUE,
    pay_code      TEXT NOT NULL REFERENCES notices (pay_code),
    amount        INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    channel       TEXT NOT NULL,
    trade_no      TEXT NOT NULL UNIQUE,
    terminal_id   TEXT NOT NULL,
    confirm_time  TEXT NOT NULL,
    business_date TEXT NOT NULL,
    state         TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    cancelled_at  TEXT,
    cancel_reason TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_payment_per_notice ON confirmations (pay_code) WHERE state = 'confirmed';
CREATE INDEX IF NOT EXISTS confirmations_by_day ON confirmations (business_date);
CREATE TABLE IF NOT EXISTS reconciled_days (
    business_date TEXT PRIMARY KEY,
    reconciled_at TEXT NOT NULL
);
"""

_NOTICE_SELECT = """
SELECT n.*, c.trade_no, c.channel AS paid_channel, c.confirm_time, c.confirm_no
FROM notices n LEFT JOIN confirmations c ON c.pay_code = n.pay_code AND c.state = 'confirmed'
"""
_CONFIRMATION_SELECT = "SELECT c.*, n.agency_code FROM confirmations c JOIN notices n ON n.pay_code = c.pay_code"

_YAML_KEYS = {"pay_code", "agency", "agency_code", "agency_name", "payer_name", "due_date", "currency",
              "items", "amount", "status"}
_CSV_REQUIRED = ("pay_code", "agency_code", "payer_name", "due_date", "item_code", "item_name", "item_amount")
_CSV_OPTIONAL = ("agency_name", "currency", "status")


class NoticeStore:
    """The bureau's notices and confirmations in one SQLite file (WAL), safe to share between threads."""

    def __init__(self, path: str | Path, lengths: CodeLengths | None = None, agencies: Mapping[str, str] | None = None,
                 clock: Clock = system_clock, currency_numeric: str = "156"):
        """`agencies` names the agencies a loaded notice may give by code alone; `clock` decides what has expired."""
        self.path = Path(path)
        self.lengths = lengths or CodeLengths()
        self.agencies = dict(agencies or {})
        self.clock = clock
        self.currency = currency(currency_numeric).numeric
        self._lock = threading.RLock()
        # The bureau answers on its server thread while a CLI or test reads from another: one lock serialises them.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, all or nothing; IMMEDIATE so two writers cannot both see a notice unpaid."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- notices ----

    def add(self, notice: Notice) -> Notice:
        """Store a new notice (unpaid or cancelled); its amount must be the sum of its items."""
        with self._write() as db:
            self._insert(db, notice, f"notice {notice.pay_code}", skip_identical=False)
        stored = self.get(notice.pay_code)
        assert stored is not None
        return stored

    def get(self, code: str) -> Notice | None:
        with self._lock:
            row = self._db.execute(_NOTICE_SELECT + " WHERE n.pay_code = ?", (code,)).fetchone()
            return self._notice(row, self.clock().date()) if row else None

    def load(self, file: str | Path) -> int:
        """Add the notices of a YAML or CSV file, all or none; returns how many were new.

        A notice already stored exactly as the file has it is skipped, so the
        same file can be loaded at every start; a different one under the
        same pay code is an error.
        """
        path = Path(file)
        if path.suffix.lower() == ".csv":
            entries = self._read_csv(path)
        elif path.suffix.lower() in (".yaml", ".yml"):
            entries = self._read_yaml(path)
        else:
            raise NoticeError(f"{path}: notices are read from .yaml or .csv files")
        added = 0
        with self._write() as db:
            seen: dict[str, str] = {}
            for where, notice in entries:
                if notice.pay_code in seen:
                    raise NoticeError(f"{where}, field pay_code: {notice.pay_code} is also at {seen[notice.pay_code]}")
                seen[notice.pay_code] = where
                added += self._insert(db, notice, where, skip_identical=True)
        return added

    def _insert(self, db: sqlite3.Connection, notice: Notice, where: str, skip_identical: bool) -> bool:
        self._validate(notice, where)
        row = db.execute(_NOTICE_SELECT + " WHERE n.pay_code = ?", (notice.pay_code,)).fetchone()
        if row is not None:
            stored = self._notice(row, self.clock().date())
            same_state = (stored.status == CANCELLED) == (notice.status == CANCELLED)
            if skip_identical and same_state and _issued(stored) == _issued(notice):
                return False
            raise NoticeError(f"{where}, field pay_code: the store already holds notice {notice.pay_code}"
                              + (" with different content" if skip_identical else ""))
        created = notice.created_at or self.clock().isoformat(timespec="seconds")
        db.execute("INSERT INTO notices (pay_code, agency_code, agency_name, payer_name, amount, currency, due_date,"
                   " cancelled, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (notice.pay_code, notice.agency_code, notice.agency_name, notice.payer_name, notice.amount,
                    notice.currency, notice.due_date, int(notice.status == CANCELLED), created))
        db.executemany("INSERT INTO notice_items (pay_code, position, code, name, amount) VALUES (?, ?, ?, ?, ?)",
                       [(notice.pay_code, n, i.code, i.name, i.amount) for n, i in enumerate(notice.items, 1)])
        return True

    def _validate(self, notice: Notice, where: str) -> None:
        def fail(name: str, problem: str) -> NoticeError:
            return NoticeError(f"{where}, field {name}: {problem}")

        try:
            check_pay_code(notice.pay_code, self.lengths)
        except PaymentCodeError as exc:
            raise fail("pay_code", str(exc)) from None
        for name in ("agency_code", "agency_name", "payer_name"):
            problem = _text_problem(getattr(notice, name))
            if problem:
                raise fail(name, problem)
        if notice.currency != self.currency:
            raise fail("currency", f"{notice.currency} is not {self.currency}, the one currency this bureau collects")
        if not notice.items:
            raise fail("items", "a notice needs at least one fee item")
        for number, item in enumerate(notice.items, 1):
            problem = _text_problem(item.code) or _text_problem(item.name)
            if problem or item.amount <= 0:
                raise fail(f"items[{number}]", problem or f"amount {item.amount} must be more than zero")
        total = sum(item.amount for item in notice.items)
        if notice.amount != total:
            raise fail("amount", f"{notice.amount} is not the sum of the items, {total}")
        try:
            date.fromisoformat(notice.due_date)
        except (TypeError, ValueError):
            raise fail("due_date", f"{notice.due_date!r} is not a date such as 2030-12-31") from None
        if notice.status not in (UNPAID, CANCELLED):
            raise fail("status", f"{notice.status!r}: a notice is added unpaid or cancelled")

    def _notice(self, row: sqlite3.Row, today: date) -> Notice:
        items = tuple(FeeItem(r["code"], r["name"], r["amount"]) for r in self._db.execute(
            "SELECT code, name, amount FROM notice_items WHERE pay_code = ? ORDER BY position", (row["pay_code"],)))
        if row["trade_no"] is not None:
            status = PAID
        elif row["cancelled"]:
            status = CANCELLED
        elif date.fromisoformat(row["due_date"]) < today:
            status = EXPIRED
        else:
            status = UNPAID
        return Notice(row["pay_code"], row["agency_code"], row["agency_name"], row["payer_name"], items,
                      row["amount"], row["currency"], row["due_date"], status, row["created_at"], row["trade_no"],
                      row["paid_channel"], row["confirm_time"], row["confirm_no"])

    # ---- confirmations ----

    def confirm(self, pay_code: str, amount: int, channel: str, trade_no: str, confirm_time: datetime,
                business_date: date, terminal_id: str = "", currency_numeric: str | None = None) -> Confirmation:
        """Record the bank's payment of a notice, or raise a Refused saying why not.

        The same trade number again raises AlreadyPaid with the confirmation
        it made; nothing is recorded twice. A notice is payable while its due
        date is on or after the day of `confirm_time` (when the payer paid).
        The confirmation is booked to `business_date`, or the first day after
        it not yet reconciled.
        """
        with self._write() as db:
            row = db.execute(_CONFIRMATION_SELECT + " WHERE c.trade_no = ?", (trade_no,)).fetchone()
            if row is not None:
                earlier = _confirmation(row)
                if earlier.pay_code == pay_code and earlier.state == CONFIRMED:
                    raise AlreadyPaid(f"trade {trade_no} already paid this notice", earlier)
                raise TradeNoUsed(f"trade number {trade_no} was used by another confirmation"
                                  + (" (cancelled)" if earlier.state == CANCELLED else ""))
            found = db.execute(_NOTICE_SELECT + " WHERE n.pay_code = ?", (pay_code,)).fetchone()
            if found is None:
                raise NoSuchNotice(f"no notice {pay_code}")
            notice = self._notice(found, confirm_time.date())
            if notice.status == PAID:
                standing = db.execute(_CONFIRMATION_SELECT + " WHERE c.pay_code = ? AND c.state = 'confirmed'",
                                      (pay_code,)).fetchone()
                raise AlreadyPaid(f"notice {pay_code} is already paid", _confirmation(standing))
            if notice.status == CANCELLED:
                raise NoticeCancelled(f"notice {pay_code} was cancelled by the agency")
            if notice.status == EXPIRED:
                raise NoticeExpired(f"notice {pay_code} was due by {notice.due_date}")
            if (currency_numeric or notice.currency) != notice.currency or amount != notice.amount:
                raise AmountMismatch(f"notice {pay_code} is for {notice.amount} minor units of {notice.currency}, "
                                     f"not {amount} of {currency_numeric or notice.currency}")
            day = business_date
            while db.execute("SELECT 1 FROM reconciled_days WHERE business_date = ?", (day.isoformat(),)).fetchone():
                day += timedelta(days=1)
            (number,) = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM confirmations").fetchone()
            confirm_no = f"{day:%Y%m%d}{number:010d}"
            db.execute("INSERT INTO confirmations (id, confirm_no, pay_code, amount, currency, channel, trade_no,"
                       " terminal_id, confirm_time, business_date, state, received_at)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (number, confirm_no, pay_code, amount, notice.currency, channel, trade_no, terminal_id,
                        confirm_time.isoformat(timespec="seconds"), day.isoformat(), CONFIRMED,
                        self.clock().isoformat(timespec="seconds")))
            return _confirmation(db.execute(_CONFIRMATION_SELECT + " WHERE c.id = ?", (number,)).fetchone())

    def cancel(self, pay_code: str, trade_no: str, reason: str = "") -> Confirmation:
        """Cancel the confirmation `trade_no` made of `pay_code`; the notice is payable again.

        Cancelling it again returns it unchanged (the bank may not have heard
        the first answer). Raises NoSuchNotice, NothingToCancel, or
        DayReconciled when the day it was booked to is already reconciled.
        """
        with self._write() as db:
            if db.execute("SELECT 1 FROM notices WHERE pay_code = ?", (pay_code,)).fetchone() is None:
                raise NoSuchNotice(f"no notice {pay_code}")
            row = db.execute(_CONFIRMATION_SELECT + " WHERE c.trade_no = ? AND c.pay_code = ?",
                             (trade_no, pay_code)).fetchone()
            if row is None:
                raise NothingToCancel(f"trade {trade_no} has not confirmed notice {pay_code}")
            found = _confirmation(row)
            if found.state == CANCELLED:
                return found
            if db.execute("SELECT 1 FROM reconciled_days WHERE business_date = ?", (found.business_date,)).fetchone():
                raise DayReconciled(f"{found.business_date} is already reconciled")
            db.execute("UPDATE confirmations SET state = ?, cancelled_at = ?, cancel_reason = ? WHERE trade_no = ?",
                       (CANCELLED, self.clock().isoformat(timespec="seconds"), reason, trade_no))
            return _confirmation(db.execute(_CONFIRMATION_SELECT + " WHERE c.trade_no = ?", (trade_no,)).fetchone())

    def confirmation(self, trade_no: str) -> Confirmation | None:
        with self._lock:
            row = self._db.execute(_CONFIRMATION_SELECT + " WHERE c.trade_no = ?", (trade_no,)).fetchone()
            return _confirmation(row) if row else None

    def daily_confirmations(self, day: date) -> builtins.list[Confirmation]:
        """The standing confirmations booked to `day`, in the order they came; cancelled ones are not listed."""
        with self._lock:
            rows = self._db.execute(_CONFIRMATION_SELECT + " WHERE c.business_date = ? AND c.state = 'confirmed'"
                                    " ORDER BY c.id", (day.isoformat(),)).fetchall()
            return [_confirmation(row) for row in rows]

    def mark_reconciled(self, day: date) -> int:
        """Close `day`: its confirmations can no longer be cancelled. Returns how many it holds."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM reconciled_days WHERE business_date = ?", (day.isoformat(),)).fetchone():
                raise AlreadyReconciled(f"{day.isoformat()} is already reconciled; a day is reconciled once")
            db.execute("INSERT INTO reconciled_days (business_date, reconciled_at) VALUES (?, ?)",
                       (day.isoformat(), self.clock().isoformat(timespec="seconds")))
            (count,) = db.execute("SELECT COUNT(*) FROM confirmations WHERE business_date = ? AND state = 'confirmed'",
                                  (day.isoformat(),)).fetchone()
            return int(count)

    def is_reconciled(self, day: date) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM reconciled_days WHERE business_date = ?", (day.isoformat(),))
            return row.fetchone() is not None

    def list(self, status: str | None = None) -> builtins.list[Notice]:
        """Every notice by pay code, or those whose status (as of the clock) is `status`."""
        if status is not None and status not in STATUSES:
            raise NoticeError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        with self._lock:
            today = self.clock().date()
            notices = [self._notice(row, today) for row in self._db.execute(_NOTICE_SELECT + " ORDER BY n.pay_code")]
        return [n for n in notices if status is None or n.status == status]

    # ---- files ----

    def _read_yaml(self, path: Path) -> builtins.list[tuple[str, Notice]]:
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)
        except OSError as exc:
            raise NoticeError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise NoticeError(f"{path}{f' line {mark.line + 1}' if mark else ''}: not valid YAML") from None
        agencies = dict(self.agencies)
        if isinstance(data, dict):
            try:
                agencies.update(_agencies(data.get("agencies") or [], str(path)))
            except FixtureError as exc:
                raise NoticeError(str(exc)) from None
            data = data.get("notices")
        if not isinstance(data, builtins.list):
            raise NoticeError(f"{path}: expected a list of notices, or a mapping with `notices:`")
        return [self._yaml_notice(entry, path, agencies) for entry in data]

    def _yaml_notice(self, entry: Any, path: Path, agencies: Mapping[str, str]) -> tuple[str, Notice]:
        if not isinstance(entry, dict):
            raise NoticeError(f"{path}: each notice must be a mapping")
        where = f"{path} line {entry.pop('__line__')}"
        unknown = sorted(set(entry) - _YAML_KEYS)
        if unknown:
            raise NoticeError(f"{where}, field {unknown[0]}: not a notice field ({', '.join(sorted(_YAML_KEYS))})")
        money = self._currency(entry.get("currency"), where)
        raw_items = entry.get("items")
        if not isinstance(raw_items, builtins.list) or not raw_items:
            raise NoticeError(f"{where}, field items: a list of {{code, name, amount}} is needed")
        items = []
        for item in raw_items:
            item_where = f"{path} line {item.pop('__line__', '?')}" if isinstance(item, dict) else where
            if not isinstance(item, dict) or set(item) != {"code", "name", "amount"}:
                raise NoticeError(f"{item_where}, field items: each item needs exactly code, name and amount")
            items.append(FeeItem(str(item["code"]), str(item["name"]), _major(item["amount"], money, item_where, "amount")))
        total = sum(i.amount for i in items)
        amount = _major(entry["amount"], money, where, "amount") if "amount" in entry else total
        agency = str(entry.get("agency_code") or entry.get("agency") or "")
        notice = Notice(
            _text(entry, "pay_code", where), agency, str(entry.get("agency_name") or agencies.get(agency) or ""),
            _text(entry, "payer_name", where), tuple(items), amount, money,
            _text(entry, "due_date", where), str(entry.get("status", UNPAID)),
        )
        if not notice.agency_code or not notice.agency_name:
            raise NoticeError(f"{where}, field agency: give an agency code the bureau knows, or agency_name as well")
        return where, notice

    def _read_csv(self, path: Path) -> builtins.list[tuple[str, Notice]]:
        """One row per fee item; the rows of one pay code make one notice and must agree on its other columns."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise NoticeError(f"{path}: cannot read: {exc.strerror}") from None
        reader = csv.DictReader(text.splitlines())
        missing = [c for c in _CSV_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise NoticeError(f"{path} line 1: missing column {missing[0]} (needed: {', '.join(_CSV_REQUIRED)})")
        grouped: dict[str, tuple[str, dict[str, str], builtins.list[FeeItem]]] = {}
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if None in row or any(row[c] is None for c in _CSV_REQUIRED):
                raise NoticeError(f"{where}: expected {len(reader.fieldnames or [])} columns")
            head = {c: (row.get(c) or "").strip() for c in (*_CSV_REQUIRED[:4], *_CSV_OPTIONAL)}
            money = self._currency(head["currency"] or None, where)
            item = FeeItem(row["item_code"].strip(), row["item_name"].strip(),
                           _major(row["item_amount"], money, where, "item_amount"))
            code = head["pay_code"]
            if code in grouped:
                first_where, first, items = grouped[code]
                differing = [c for c in head if head[c] != first[c]]
                if differing:
                    raise NoticeError(f"{where}, field {differing[0]}: differs from {first_where} for the same pay_code")
                items.append(item)
            else:
                grouped[code] = (where, head, [item])
        notices = []
        for code, (where, head, items) in grouped.items():
            agency = head["agency_code"]
            name = head["agency_name"] or self.agencies.get(agency, "")
            if not name:
                raise NoticeError(f"{where}, field agency_name: agency {agency} is not known to the bureau; name it")
            notices.append((where, Notice(code, agency, name, head["payer_name"], tuple(items),
                                          sum(i.amount for i in items), self._currency(head["currency"] or None, where),
                                          head["due_date"], head["status"] or UNPAID)))
        return notices

    def _currency(self, value: object, where: str) -> str:
        if value is None:
            return self.currency
        try:
            return currency(str(value)).numeric
        except ValueError as exc:
            raise NoticeError(f"{where}, field currency: {exc}") from None


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that notes, in each mapping, the 1-based line it starts on, so errors can name it."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__line__"] = node.start_mark.line + 1
        return mapping


def _text(entry: dict[str, Any], name: str, where: str) -> str:
    """A text field; YAML reads an unquoted code as a number and a date as a date, both taken back as text."""
    value = entry.get(name)
    if value is None or isinstance(value, (bool, float, builtins.list, dict)):
        raise NoticeError(f"{where}, field {name}: {'missing' if value is None else 'must be text'}")
    return value.isoformat() if isinstance(value, date) else str(value)


def _major(value: object, money: str, where: str, name: str) -> int:
    if not isinstance(value, str):
        raise NoticeError(f"{where}, field {name}: write amounts as quoted major units such as \"200.00\", not {value!r}")
    try:
        return parse_major(value, currency(money))
    except ValueError as exc:
        raise NoticeError(f"{where}, field {name}: {exc}") from None


def _text_problem(value: str) -> str | None:
    if not value:
        return "is empty"
    if len(value) > _MAX_TEXT:
        return f"has {len(value)} characters, more than {_MAX_TEXT}"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "holds a control character"
    return None


def _issued(notice: Notice) -> tuple[Any, ...]:
    """What an agency issued, as opposed to what happened to it since."""
    return (notice.agency_code, notice.agency_name, notice.payer_name, notice.items, notice.amount, notice.currency,
            notice.due_date)


def _confirmation(row: sqlite3.Row) -> Confirmation:
    return Confirmation(row["confirm_no"], row["pay_code"], row["agency_code"], row["amount"], row["currency"],
                        row["channel"], row["trade_no"], row["terminal_id"], row["confirm_time"], row["business_date"],
                        row["state"])
