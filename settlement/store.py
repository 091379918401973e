"""Settlement's storage: its own tables beside the host's in the journal file, and the settlement
columns of the host's `transactions` rows.

One SQLite file keeps the day's money in one place a user can open: the
rows, the batches they were settled in, the discrepancies reconciliation
found and what was done about each. Every statement is here, so a
PostgreSQL backend has one module to mirror.

Reads of the host's tables are plain SQL on purpose: reconciling a million
rows wants tuples straight from the cursor, not a dataclass per row.
Changes to the host's money (an automatic reversal) go through the
journal's own API, which keeps balances and rows in step.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from possim.acquirer.journal import Journal

from .states import CREDIT_KINDS, DEBIT_KINDS, VOID_KINDS, sql_list

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settlement_days (
    business_date TEXT PRIMARY KEY,
    cutover_at    TEXT NOT NULL,
    summary       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settlement_batches (
    batch_id       TEXT PRIMARY KEY,
    business_date  TEXT NOT NULL,
    merchant_id    TEXT NOT NULL,
    channel        TEXT NOT NULL,
    currency       TEXT NOT NULL,
    sales_count    INTEGER NOT NULL,
    sales_amount   INTEGER NOT NULL,
    refunds_count  INTEGER NOT NULL,
    refunds_amount INTEGER NOT NULL,
    adjustments    INTEGER NOT NULL,
    fees           INTEGER NOT NULL,
    net            INTEGER NOT NULL,
    value_date     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS settlement_batches_by_date ON settlement_batches (business_date);
CREATE TABLE IF NOT EXISTS adjustments (
    id              INTEGER PRIMARY KEY,
    created_date    TEXT NOT NULL,
    target          TEXT NOT NULL CHECK (target IN ('merchant', 'channel', 'fee_income')),
    merchant_id     TEXT NOT NULL,
    channel         TEXT NOT NULL,
    currency        TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    discrepancy_id  INTEGER,
    transaction_id  INTEGER,
    rrn             TEXT,
    terminal_id     TEXT,
    applied_date    TEXT,
    applied_batch   TEXT
);
CREATE TABLE IF NOT EXISTS discrepancies (
    id             INTEGER PRIMARY KEY,
    business_date  TEXT NOT NULL,
    class          TEXT NOT NULL,
    source         TEXT NOT NULL,
    key            TEXT NOT NULL,
    transaction_id INTEGER,
    merchant_id    TEXT,
    channel        TEXT,
    currency       TEXT,
    host_amount    INTEGER,
    file_amount    INTEGER,
    amount         INTEGER NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('resolved', 'suspense', 'exception')),
    resolution     TEXT NOT NULL,
    detail         TEXT NOT NULL,
    first_seen     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (business_date, class, source, key)
);
CREATE INDEX IF NOT EXISTS discrepancies_by_date ON discrepancies (business_date);
CREATE TABLE IF NOT EXISTS treasury_days (
    business_date TEXT PRIMARY KEY,
    reconciled_at TEXT NOT NULL,
    summary       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recon_runs (
    business_date TEXT NOT NULL,
    run           INTEGER NOT NULL,
    at            TEXT NOT NULL,
    verdict       TEXT NOT NULL,
    summary       TEXT NOT NULL,
    PRIMARY KEY (business_date, run)
);
"""

RECON_REVERSAL = "reconciliation"
"""The reversal reason of a payment reconciliation reversed itself. Matching counts such a row as it stood at
cut-over: its reversal is already on its way to the channel, and finding it again would act twice."""

HOST_COLUMNS = ("id", "business_date", "terminal_id", "merchant_id", "stan", "kind", "status", "amount", "currency",
                "pan_masked", "rrn", "auth_code", "channel", "wallet_txn_id", "original_id", "created_at",
                "reversed_at", "account_id", "posted_amount")
"""What cut-over reads of a row to settle it."""


@dataclass(frozen=True)
class Batch:
    """A merchant's settlement for one channel and currency on one business date."""

    batch_id: str
    business_date: str
    merchant_id: str
    channel: str
    currency: str
    sales_count: int
    sales_amount: int
    refunds_count: int
    refunds_amount: int
    adjustments: int
    fees: int
    net: int
    value_date: str


BATCH_COLUMNS = tuple(f.name for f in fields(Batch))


@dataclass(frozen=True)
class Adjustment:
    id: int
    created_date: str
    target: str
    """merchant: netted into the merchant's next settlement; channel: a reversal record in the next clearing
    file; fee_income: booked against the acquirer's fee income."""
    merchant_id: str
    channel: str
    currency: str
    amount: int
    """Signed minor units: positive is owed to the merchant (or to the channel for target channel)."""
    reason: str
    discrepancy_id: int | None
    transaction_id: int | None
    rrn: str | None
    terminal_id: str | None
    applied_date: str | None
    applied_batch: str | None


@dataclass(frozen=True)
class Discrepancy:
    id: int
    business_date: str
    cls: str
    source: str
    key: str
    transaction_id: int | None
    merchant_id: str | None
    channel: str | None
    currency: str | None
    host_amount: int | None
    file_amount: int | None
    amount: int
    state: str
    resolution: str
    detail: str
    first_seen: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["class"] = data.pop("cls")
        return data


class SettlementStore:
    def __init__(self, path: str | Path):
        """Open the journal at `path` (which must exist: settling a file the host never wrote is a mistake)."""
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no journal at {self.path}")
        self.journal = Journal(self.path)
        """The host's own API: its migrations run on open, and automatic reversals go through it."""
        self._db = self.journal.connection
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self.journal.close()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """One transaction, holding the write lock from the start (the host's writes wait for it rather than
        slip in between a read and the write that depends on it); the journal's writes made inside join it."""
        with self.journal.batch():
            yield

    # ---- business days ----

    def cutover_of(self, business_date: str) -> tuple[str, dict[str, Any]] | None:
        row = self._db.execute("SELECT cutover_at, summary FROM settlement_days WHERE business_date = ?",
                               (business_date,)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def close_day(self, business_date: str, at: str) -> None:
        """From now on the host puts every new message on a later date (acquirer/business_day.py)."""
        self._db.execute("INSERT INTO business_days (business_date, cutover_at) VALUES (?, ?)", (business_date, at))

    def record_day(self, business_date: str, at: str, summary: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO settlement_days (business_date, cutover_at, summary) VALUES (?, ?, ?)",
                         (business_date, at, json.dumps(summary, sort_keys=True)))

    # ---- rows ----

    def rows_to_settle(self, business_date: str) -> Iterator[tuple[Any, ...]]:
        """The date's rows, and rows of earlier dates still waiting: carried QR payments and rows journaled
        for a date after its cut-over had begun."""
        return self._db.execute(
            f"SELECT {', '.join(HOST_COLUMNS)} FROM transactions WHERE business_date <= ?"
            " AND (settlement_state IS NULL OR settlement_state = 'carried') ORDER BY id", (business_date,))

    def earlier_open_date(self, business_date: str) -> str | None:
        """The first date before this one that has rows but was never cut over: it must be closed first, or
        this cut-over would sweep its whole day into the wrong date."""
        row = self._db.execute(
            "SELECT MIN(business_date) FROM transactions WHERE business_date < ? AND settlement_state IS NULL"
            " AND business_date NOT IN (SELECT business_date FROM business_days)", (business_date,)).fetchone()
        return row[0]

    def settled_earlier(self, transaction_ids: Iterable[int], business_date: str) -> set[int]:
        """Which of these rows were settled on a date before `business_date`."""
        ids = list(transaction_ids)
        found: set[int] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found.update(r[0] for r in self._db.execute(
                f"SELECT id FROM transactions WHERE id IN ({', '.join('?' * len(chunk))})"
                " AND settlement_state = 'settled' AND settlement_date < ?", (*chunk, business_date)))
        return found

    def set_states(self, updates: Iterable[tuple[str, str, str | None, str | None, int | None, int]]) -> None:
        """(state, settlement date, batch id, channel, fee, row id) per row."""
        self._db.executemany(
            "UPDATE transactions SET settlement_state = ?, settlement_date = ?, settlement_batch = ?,"
            " settlement_channel = ?, fee = ? WHERE id = ?", updates)

    def settled_rows(self, business_date: str) -> Iterator[tuple[Any, ...]]:
        """The date's settled rows, in the order a clearing file lists them."""
        return self._db.execute(
            _CLEARING_SELECT + " WHERE settlement_date = ? AND settlement_state = 'settled' ORDER BY id", (business_date,))

    def unsettled_rows(self, business_date: str) -> Iterator[tuple[Any, ...]]:
        """Payments of the date reversed or voided before cut-over, in the shape of settled_rows."""
        return self._db.execute(
            _CLEARING_SELECT + " WHERE settlement_date = ? AND settlement_state IN ('reversed', 'voided')"
            " AND rrn IS NOT NULL ORDER BY id", (business_date,))

    def settled_rows_before(self, business_date: str) -> Iterator[tuple[Any, ...]]:
        """Payments settled on dates before this one, in the shape of settled_rows."""
        return self._db.execute(
            _CLEARING_SELECT + " WHERE settlement_date < ? AND settlement_state = 'settled' ORDER BY id",
            (business_date,))

    def host_rows(self, business_date: str, key: tuple[str, ...], settled: bool) -> Iterator[tuple[Any, ...]]:
        """The rows cut over on the date, settled or not, for matching: each a plain tuple of the key's
        columns, then id, amount, fee, and what a clearing line must say of it — D or C for a settled row, X
        for one no line should settle (not settled, or reversed since). Narrow on purpose: a million are
        read, and every column costs; the few rows that disagree are looked up again (row_details)."""
        cursor = self._db.cursor()
        cursor.row_factory = None
        return cursor.execute(
            f"SELECT {', '.join(_column(c) for c in key)}, id, amount, COALESCE(fee, 0),"
            f" CASE WHEN settlement_state = 'settled' AND (status != 'reversed' OR reversal_reason = '{RECON_REVERSAL}')"
            f" THEN {_SIGN} ELSE 'X' END"
            f" FROM transactions WHERE settlement_date = ? AND settlement_state {'=' if settled else '!='} 'settled'",
            (business_date,))

    def row_details(self, transaction_ids: Iterable[int]) -> dict[int, tuple[Any, ...]]:
        """id → (merchant, channel, currency, settlement state, status, sign) of a few rows."""
        ids = list(dict.fromkeys(transaction_ids))
        found: dict[int, tuple[Any, ...]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found.update((r[0], tuple(r[1:])) for r in self._db.execute(
                f"SELECT id, merchant_id, settlement_channel, currency, settlement_state, status, {_SIGN}"
                f" FROM transactions WHERE id IN ({', '.join('?' * len(chunk))})", chunk))
        return found

    def find_by_key(self, key: tuple[str, ...], values: tuple[str, ...]) -> tuple[Any, ...] | None:
        """The latest cut-over row of any date with this key (a late presentment's original): id, amount,
        settlement state, settlement date."""
        where = " AND ".join(f"{_column(c)} = ?" for c in key)
        return self._db.execute(
            f"SELECT id, amount, settlement_state, settlement_date FROM transactions WHERE {where}"
            " AND settlement_date IS NOT NULL ORDER BY id DESC LIMIT 1", values).fetchone()

    def day_totals(self, business_date: str) -> list[tuple[Any, ...]]:
        return day_totals(self._db, business_date)

    def uncut_rows(self, business_date: str) -> int:
        """Rows of the date that no cut-over has given a state: ones journaled after the cut-over began."""
        return self._db.execute("SELECT COUNT(*) FROM transactions WHERE business_date = ? AND settlement_state IS NULL",
                                (business_date,)).fetchone()[0]

    # ---- batches and adjustments ----

    def insert_batches(self, batches: Iterable[Batch]) -> None:
        self._db.executemany(
            f"INSERT INTO settlement_batches ({', '.join(BATCH_COLUMNS)}) VALUES ({', '.join('?' * len(BATCH_COLUMNS))})",
            (astuple(b) for b in batches))

    def batches(self, business_date: str) -> list[Batch]:
        return [Batch(*r) for r in self._db.execute(
            f"SELECT {', '.join(BATCH_COLUMNS)} FROM settlement_batches WHERE business_date = ? ORDER BY batch_id",
            (business_date,))]

    def pending_adjustments(self) -> list[Adjustment]:
        return [Adjustment(*r) for r in self._db.execute(
            "SELECT * FROM adjustments WHERE applied_date IS NULL AND target IN ('merchant', 'channel') ORDER BY id")]

    def adjustments(self, applied_date: str | None = None, created_date: str | None = None) -> list[Adjustment]:
        if applied_date is not None:
            rows = self._db.execute("SELECT * FROM adjustments WHERE applied_date = ? ORDER BY id", (applied_date,))
        else:
            rows = self._db.execute("SELECT * FROM adjustments WHERE created_date = ? ORDER BY id", (created_date,))
        return [Adjustment(*r) for r in rows]

    def apply_adjustment(self, adjustment_id: int, business_date: str, batch_id: str | None) -> None:
        self._db.execute("UPDATE adjustments SET applied_date = ?, applied_batch = ? WHERE id = ?",
                         (business_date, batch_id, adjustment_id))

    def add_adjustment(self, created_date: str, target: str, merchant_id: str, channel: str, currency: str,
                       amount: int, reason: str, discrepancy_id: int | None, transaction_id: int | None,
                       rrn: str | None, terminal_id: str | None) -> int:
        applied = created_date if target == "fee_income" else None
        cursor = self._db.execute(
            "INSERT INTO adjustments (created_date, target, merchant_id, channel, currency, amount, reason,"
            " discrepancy_id, transaction_id, rrn, terminal_id, applied_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (created_date, target, merchant_id, channel, currency, amount, reason, discrepancy_id, transaction_id,
             rrn, terminal_id, applied))
        return int(cursor.lastrowid or 0)

    # ---- terminal batches ----

    def terminal_batches(self, business_date: str) -> list[tuple[str, str, int]]:
        """(terminal, batch number, balanced) of the terminal batches closed on the date."""
        return self._db.execute(
            "SELECT terminal_id, batch_number, balanced FROM batches WHERE business_date = ? ORDER BY terminal_id, batch_number",
            (business_date,)).fetchall()

    def batch_rows(self, terminal_id: str, batch_number: str) -> list[tuple[Any, ...]]:
        """The terminal batch's money-moving rows, whatever became of them (a cup terminal uploads a voided
        sale too): id, stan, amount, currency, kind, merchant, channel, settlement state, rrn, status."""
        return self._db.execute(
            "SELECT id, stan, amount, currency, kind, merchant_id, settlement_channel, settlement_state, rrn, status"
            " FROM transactions WHERE terminal_id = ? AND batch_number = ? AND status != 'declined'"
            " AND kind IN ('sale', 'completion', 'offline', 'fee_payment', 'refund', 'sale_void', 'completion_void')",
            (terminal_id, batch_number)).fetchall()

    def uploads(self, terminal_id: str, batch_number: str) -> dict[str, int | None]:
        """STAN → amount of the records the terminal uploaded for the batch."""
        return {stan: amount for stan, amount in self._db.execute(
            "SELECT stan, amount FROM batch_uploads WHERE terminal_id = ? AND batch_number = ?",
            (terminal_id, batch_number))}

    def terminal_currency(self, terminal_id: str) -> str | None:
        """The currency the terminal trades in, as its latest row says."""
        row = self._db.execute("SELECT currency FROM transactions WHERE terminal_id = ? AND currency IS NOT NULL"
                               " ORDER BY id DESC LIMIT 1", (terminal_id,)).fetchone()
        return None if row is None else row[0]

    def orphan_reversals(self, business_date: str) -> list[tuple[Any, ...]]:
        """id, terminal, stan, amount, currency, merchant of the date's reversals whose original never came."""
        return self._db.execute(
            "SELECT id, terminal_id, stan, amount, currency, merchant_id FROM transactions"
            " WHERE settlement_date = ? AND settlement_state = 'orphan_reversal' ORDER BY id", (business_date,)).fetchall()

    # ---- discrepancies ----

    def add_discrepancy(self, business_date: str, cls: str, source: str, key: str, transaction_id: int | None,
                        merchant_id: str | None, channel: str | None, currency: str | None,
                        host_amount: int | None, file_amount: int | None, amount: int, detail: str,
                        at: str) -> int | None:
        """The new discrepancy's id, or None when this one (class, source, key) was found before."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO discrepancies (business_date, class, source, key, transaction_id, merchant_id,"
            " channel, currency, host_amount, file_amount, amount, state, resolution, detail, first_seen, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'suspense', 'pending', ?, ?, ?)",
            (business_date, cls, source, key, transaction_id, merchant_id, channel, currency, host_amount,
             file_amount, amount, detail, business_date, at))
        return int(cursor.lastrowid) if cursor.rowcount else None

    def resolve(self, discrepancy_id: int, state: str, resolution: str, at: str) -> None:
        self._db.execute("UPDATE discrepancies SET state = ?, resolution = ?, updated_at = ? WHERE id = ?",
                         (state, resolution, at, discrepancy_id))

    def discrepancies(self, business_date: str | None = None, state: str | None = None) -> list[Discrepancy]:
        where, args = [], []
        if business_date is not None:
            where.append("business_date = ?")
            args.append(business_date)
        if state is not None:
            where.append("state = ?")
            args.append(state)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return [Discrepancy(*r) for r in self._db.execute(
            f"SELECT id, business_date, class, source, key, transaction_id, merchant_id, channel, currency,"
            f" host_amount, file_amount, amount, state, resolution, detail, first_seen, updated_at"
            f" FROM discrepancies{clause} ORDER BY id", args)]

    def open_missing_in_file(self, transaction_id: int) -> Discrepancy | None:
        row = self._db.execute(
            "SELECT id, business_date, class, source, key, transaction_id, merchant_id, channel, currency, host_amount,"
            " file_amount, amount, state, resolution, detail, first_seen, updated_at FROM discrepancies"
            " WHERE class = 'missing_in_file' AND source = 'clearing' AND state = 'suspense' AND transaction_id = ?",
            (transaction_id,)).fetchone()
        return None if row is None else Discrepancy(*row)

    def open_missing_in_file_ids(self) -> set[int]:
        """Transactions an earlier reconciliation found missing from the clearing files, still in suspense."""
        return {r[0] for r in self._db.execute(
            "SELECT transaction_id FROM discrepancies WHERE class = 'missing_in_file' AND source = 'clearing'"
            " AND state = 'suspense' AND transaction_id IS NOT NULL")}

    def age_suspense(self, oldest_first_seen: str, at: str) -> int:
        """Suspense items first seen on or before `oldest_first_seen` become exceptions for a person."""
        cursor = self._db.execute(
            "UPDATE discrepancies SET state = 'exception', resolution = resolution || '; aged out: exception',"
            " updated_at = ? WHERE state = 'suspense' AND first_seen <= ?", (at, oldest_first_seen))
        return cursor.rowcount

    # ---- government fee collections ----

    def collections(self, business_date: str) -> list[tuple[Any, ...]]:
        """The date's confirmed fee payments: trade number, pay code, agency, amount, currency, confirm no,
        transaction id, created at."""
        return self._db.execute(
            "SELECT trade_no, pay_code, agency_code, amount, currency, confirm_no, transaction_id, created_at"
            " FROM fee_payments WHERE business_date = ? AND state = 'confirmed' ORDER BY transaction_id",
            (business_date,)).fetchall()

    def treasury_day(self, business_date: str) -> str | None:
        row = self._db.execute("SELECT reconciled_at FROM treasury_days WHERE business_date = ?",
                               (business_date,)).fetchone()
        return None if row is None else row[0]

    def record_treasury_day(self, business_date: str, at: str, summary: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO treasury_days (business_date, reconciled_at, summary) VALUES (?, ?, ?)",
                         (business_date, at, json.dumps(summary, sort_keys=True)))

    # ---- runs ----

    def next_run(self, business_date: str) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(run), 0) + 1 FROM recon_runs WHERE business_date = ?",
                               (business_date,)).fetchone()
        return int(row[0])

    def record_run(self, business_date: str, run: int, at: str, verdict: str, summary: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO recon_runs (business_date, run, at, verdict, summary) VALUES (?, ?, ?, ?, ?)",
                         (business_date, run, at, verdict, json.dumps(summary, sort_keys=True)))


_DEBITS = sql_list(DEBIT_KINDS)
_CREDITS = sql_list(CREDIT_KINDS | VOID_KINDS)
_SIGN = f"CASE WHEN kind IN {_CREDITS} THEN 'C' ELSE 'D' END"
"""D: the merchant is owed the amount; C: the merchant pays it back."""
_CLEARING_SELECT = (
    "SELECT business_date, merchant_id, terminal_id, settlement_channel, kind, stan, rrn, pan_masked, amount,"
    f" currency, fee, created_at, auth_code, COALESCE(wallet_txn_id, order_no, ''), id, {_SIGN} FROM transactions"
)


def day_totals(db: sqlite3.Connection, business_date: str) -> list[tuple[Any, ...]]:
    """One pass over the date's rows for the invariants: (currency, state, status, side, batch, count,
    amount) per group; side is D (a payment), C (money back) or - (neither).

    A function of a connection, so reconciliation can run it on a connection of its own in a thread while
    it matches: SQLite works without the GIL, and nothing reconciliation resolves changes these groups."""
    return db.execute(
        "SELECT currency, settlement_state, status,"
        f" CASE WHEN kind IN {_DEBITS} THEN 'D'"
        f"      WHEN kind IN {_CREDITS} THEN 'C' ELSE '-' END,"
        " settlement_batch, COUNT(*), COALESCE(SUM(amount), 0)"
        " FROM transactions WHERE settlement_date = ? GROUP BY 1, 2, 3, 4, 5", (business_date,)).fetchall()


def read_day_totals(path: Path, business_date: str) -> list[tuple[Any, ...]]:
    """day_totals on a read-only connection of its own."""
    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        db.execute("PRAGMA busy_timeout = 10000")
        return day_totals(db, business_date)
    finally:
        db.close()


def _column(key_column: str) -> str:
    """The journal column behind a match-key column (a clearing file's `reference` is the wallet's ID, or the
    order number)."""
    return "COALESCE(wallet_txn_id, order_no, '')" if key_column == "reference" else key_column
