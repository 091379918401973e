"""The host's journal: every message, one row per transaction, account
balances and terminal sessions, in one SQLite file a user can open.

SQLite runs in WAL mode with `synchronous=FULL`: a commit is on disk (the
WAL fsynced) before the answers it covers are written to the terminals, so
an approval a terminal was told of survives a power cut as well as a crash
of the host, and readers (the demo summary, `sqlite3`, settlement) never
block the host. Because a busy host commits once per event-loop turn (see
`batch()` below), FULL costs one fsync per turn, not per answer: about 10%
of throughput on the benchmark machine (benchmarks/host_throughput.py). Checkpoints (copying the WAL back into the
database file) run in a thread of their own for the host's journal, so they
never stall the thread answering terminals.

The API is narrow on purpose — reads by key, and `record()` applying one
request's whole effect (messages, transaction row, balance change, terminal
session) atomically — so that a PostgreSQL store can serve the same calls
for several host processes. Statements are constant strings, so the sqlite3
module prepares each once and reuses it.

A commit costs far more than the statements it commits, so a busy host
groups them: the writes made inside `batch()` are committed together, all
or nothing, when the block ends, and the message rows — nothing reads them
back while requests are handled — are inserted in one go just before that
commit. Outside a batch, `record()` commits before it returns.

PCI: no column holds a full PAN, track, PIN block or CVV. Cards are a masked
PAN plus an HMAC-SHA256 of the PAN keyed by a secret kept in `meta`, which
lets the host match a retransmission without being able to recover the card.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import operator
import random
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger("possim.host")

APPROVED = "approved"
DECLINED = "declined"
REVERSED = "reversed"
ORPHAN_REVERSAL = "orphan_reversal"
VOIDED = "voided"
PENDING = "pending"
"""A QR order or payment not settled either way yet: created, or waiting for the payer's password."""
CLOSED = "closed"
"""A QR order closed unpaid (expired, or closed by the terminal or partner): nothing moved."""
HELD, RELEASED, COMPLETED, EXPIRED = "held", "released", "completed", "expired"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
    id              INTEGER PRIMARY KEY,
    business_date   TEXT NOT NULL,
    terminal_id     TEXT NOT NULL,
    merchant_id     TEXT,
    stan            TEXT NOT NULL,
    key_date        TEXT NOT NULL,
    mti             TEXT NOT NULL,
    processing_code TEXT,
    amount          INTEGER,
    currency        TEXT,
    pan_masked      TEXT,
    pan_hash        TEXT,
    entry_mode      TEXT,
    response_code   TEXT NOT NULL,
    auth_code       TEXT,
    rrn             TEXT,
    status          TEXT NOT NULL,
    decline_step    TEXT,
    decline_reason  TEXT,
    account_id      TEXT,
    posted_amount   INTEGER NOT NULL DEFAULT 0,
    fingerprint     TEXT NOT NULL,
    response_mti    TEXT,
    response_fields TEXT,
    reversal_mti    TEXT,
    reversal_stan   TEXT,
    reversal_reason TEXT,
    reversed_at     TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    kind            TEXT,
    batch_number    TEXT,
    original_id     INTEGER,
    refunded_amount INTEGER NOT NULL DEFAULT 0,
    UNIQUE (terminal_id, stan, key_date)
);
CREATE INDEX IF NOT EXISTS transactions_by_date ON transactions (business_date);
CREATE TABLE IF NOT EXISTS holds (
    transaction_id INTEGER PRIMARY KEY,
    account_id     TEXT NOT NULL,
    amount         INTEGER NOT NULL,
    expires_at     TEXT NOT NULL,
    state          TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS holds_by_expiry ON holds (state, expires_at);
CREATE TABLE IF NOT EXISTS batches (
    terminal_id    TEXT NOT NULL,
    batch_number   TEXT NOT NULL,
    business_date  TEXT NOT NULL,
    closed_at      TEXT NOT NULL,
    balanced       INTEGER NOT NULL,
    terminal_totals TEXT NOT NULL,
    host_totals    TEXT NOT NULL,
    close_stan     TEXT NOT NULL,
    PRIMARY KEY (terminal_id, batch_number)
);
CREATE TABLE IF NOT EXISTS batch_uploads (
    terminal_id  TEXT NOT NULL,
    batch_number TEXT NOT NULL,
    stan         TEXT NOT NULL,
    masked_pan   TEXT,
    amount       INTEGER,
    card_org     TEXT,
    at           TEXT NOT NULL,
    PRIMARY KEY (terminal_id, batch_number, stan)
);
CREATE TABLE IF NOT EXISTS messages (
    id            INTEGER PRIMARY KEY,
    at            TEXT NOT NULL,
    direction     TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    peer          TEXT NOT NULL,
    terminal_id   TEXT,
    mti           TEXT NOT NULL,
    stan          TEXT,
    fields        TEXT NOT NULL,
    response_code TEXT,
    note          TEXT
);
CREATE TABLE IF NOT EXISTS accounts (
    id         TEXT PRIMARY KEY,
    currency   TEXT NOT NULL,
    balance    INTEGER NOT NULL,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS terminals (
    terminal_id    TEXT PRIMARY KEY,
    signed_on_date TEXT,
    batch_number   TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    pin_key        TEXT,
    mac_key        TEXT,
    data_key       TEXT
);
CREATE TABLE IF NOT EXISTS qr_orders (
    order_no        TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    channel         TEXT,
    merchant_id     TEXT NOT NULL,
    terminal_id     TEXT,
    partner_id      TEXT,
    out_order_no    TEXT,
    amount          INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL,
    paid_amount     INTEGER NOT NULL DEFAULT 0,
    refunded_amount INTEGER NOT NULL DEFAULT 0,
    wallet_account  TEXT,
    wallet_txn_id   TEXT UNIQUE,
    payload         TEXT,
    notify_url      TEXT,
    description     TEXT,
    request_hash    TEXT,
    transaction_id  INTEGER,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    paid_at         TEXT,
    closed_at       TEXT,
    updated_at      TEXT NOT NULL,
    UNIQUE (partner_id, out_order_no)
);
CREATE INDEX IF NOT EXISTS qr_orders_by_expiry ON qr_orders (status, expires_at);
CREATE TABLE IF NOT EXISTS qr_refunds (
    order_no       TEXT NOT NULL,
    out_refund_no  TEXT NOT NULL,
    amount         INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    transaction_id INTEGER,
    created_at     TEXT NOT NULL,
    PRIMARY KEY (order_no, out_refund_no)
);
CREATE TABLE IF NOT EXISTS notifications (
    notify_id  TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL,
    url        TEXT NOT NULL,
    event      TEXT NOT NULL,
    body       TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    TEXT NOT NULL,
    state      TEXT NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (state, next_at);
CREATE TABLE IF NOT EXISTS fee_payments (
    transaction_id INTEGER PRIMARY KEY,
    pay_code       TEXT NOT NULL,
    agency_code    TEXT,
    amount         INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    channel        TEXT NOT NULL,
    trade_no       TEXT NOT NULL UNIQUE,
    state          TEXT NOT NULL,
    confirm_no     TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_result    TEXT,
    business_date  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fee_payments_by_state ON fee_payments (state);
CREATE TABLE IF NOT EXISTS business_days (
    business_date TEXT PRIMARY KEY,
    cutover_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pin_tries (
    pan_hash      TEXT PRIMARY KEY,
    business_date TEXT NOT NULL,
    failures      INTEGER NOT NULL
);
"""
_SETTLEMENT_COLUMNS = (("settlement_state", "TEXT"), ("settlement_date", "TEXT"), ("settlement_batch", "TEXT"),
                       ("settlement_channel", "TEXT"), ("fee", "INTEGER"))
"""Written by settlement at cut-over (docs/settlement.md); the host leaves them NULL, and a row's Transaction
does not carry them."""
_KEY_COLUMNS = ("pin_key", "mac_key", "data_key")
"""Working keys of the last sign-on, hex under the HSM's LMK (TPK and TAK): never in clear."""


class JournalError(RuntimeError):
    """The journal refused a write; nothing of that request was stored."""


@dataclass
class Transaction:
    """One row per transaction, updated through its life.

    `posted_amount` is what was actually taken from `account_id` (minor
    units), so a reversal gives back exactly that. `response_fields` is the
    answer as sent (it never carries card data), kept to answer a
    retransmission identically.
    """

    business_date: str
    terminal_id: str
    merchant_id: str | None
    stan: str
    key_date: str
    mti: str
    processing_code: str | None
    amount: int | None
    currency: str | None
    pan_masked: str | None
    pan_hash: str | None
    entry_mode: str | None
    response_code: str
    auth_code: str | None
    rrn: str | None
    status: str
    decline_step: str | None
    decline_reason: str | None
    account_id: str | None
    posted_amount: int
    fingerprint: str
    response_mti: str | None
    response_fields: dict[str, str] | None
    reversal_mti: str | None = None
    reversal_stan: str | None = None
    reversal_reason: str | None = None
    reversed_at: str | None = None
    created_at: str = ""
    updated_at: str = ""
    kind: str | None = None
    """The transaction kind (docs/transactions.md): sale, sale_void, refund, preauth, ..."""
    batch_number: str | None = None
    """The terminal's batch it belongs to: compared with the terminal's totals at batch close."""
    original_id: int | None = None
    """The transaction a void, refund, completion or pre-auth void refers to."""
    refunded_amount: int = 0
    """What refunds have given back of this transaction so far."""
    channel: str | None = None
    """How it was paid when not by card: the wallet network of a QR payment (wechat, alipay, unionpay)."""
    wallet_txn_id: str | None = None
    """The wallet network's own ID of a QR payment: what its clearing file names."""
    order_no: str | None = None
    """The QR order the row belongs to (qr_orders)."""
    id: int | None = None


_TXN_COLUMNS = tuple(f.name for f in dataclasses.fields(Transaction) if f.name != "id")
_TXN_VALUES = operator.attrgetter(*_TXN_COLUMNS)
_TXN_FIELDS = (*_TXN_COLUMNS, "id")
_RESPONSE_FIELDS_AT = _TXN_COLUMNS.index("response_fields")
_INSERT_TXN = f"INSERT INTO transactions ({', '.join(_TXN_COLUMNS)}) VALUES ({', '.join('?' * len(_TXN_COLUMNS))})"
_UPDATABLE = ("status", "response_code", "decline_step", "decline_reason", "posted_amount",
              "reversal_mti", "reversal_stan", "reversal_reason", "reversed_at", "updated_at", "refunded_amount",
              "account_id", "channel", "wallet_txn_id", "order_no", "response_mti", "response_fields")
_UPDATE_TXN = f"UPDATE transactions SET {', '.join(f'{c} = ?' for c in _UPDATABLE)} WHERE id = ?"
_UPDATE_VALUES = operator.attrgetter(*_UPDATABLE, "id")
_UPDATED_FIELDS_AT = _UPDATABLE.index("response_fields")
_LAST_CUTOVER = "SELECT MAX(business_date) FROM business_days"
_SELECT_TXN = "SELECT * FROM transactions WHERE terminal_id = ? AND stan = ? AND key_date = ?"
_SELECT_TERMINAL = (
    "SELECT terminal_id, signed_on_date, batch_number, updated_at, pin_key, mac_key, data_key FROM terminals WHERE terminal_id = ?"
)
_JSON = json.JSONEncoder(separators=(",", ":"))
_INSERT_MESSAGE = (
    "INSERT INTO messages (at, direction, peer, terminal_id, mti, stan, fields, response_code, note)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_POST = "UPDATE accounts SET balance = balance + ?, updated_at = ? WHERE id = ?"
_UPSERT_TERMINAL = (
    "INSERT INTO terminals (terminal_id, signed_on_date, batch_number, updated_at, pin_key, mac_key, data_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (terminal_id) DO UPDATE SET signed_on_date = excluded.signed_on_date,"
    " batch_number = excluded.batch_number, updated_at = excluded.updated_at,"
    " pin_key = COALESCE(excluded.pin_key, terminals.pin_key), mac_key = COALESCE(excluded.mac_key, terminals.mac_key),"
    " data_key = COALESCE(excluded.data_key, terminals.data_key)"
)


@dataclass(frozen=True)
class MessageEntry:
    """One message as journaled: `fields` already redacted (wire.trace.redacted_fields)."""

    at: str
    direction: str
    peer: str
    terminal_id: str | None
    mti: str
    stan: str | None
    fields: dict[str, str]
    response_code: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class TerminalSession:
    terminal_id: str
    signed_on_date: str | None
    """Business date (YYYY-MM-DD) of the last sign-on; None once signed off."""
    batch_number: str
    updated_at: str
    pin_key: str | None = None
    """Hex of the working PIN key under the LMK (TPK); None keeps the one stored."""
    mac_key: str | None = None
    """Hex of the working MAC key under the LMK (TAK); None keeps the one stored."""
    data_key: str | None = None
    """Hex of the track (data) key under the LMK (TEK), when the sign-on asked for one."""


@dataclass(frozen=True)
class Posting:
    """A balance change in minor units: negative debits the account."""

    account_id: str
    delta: int


@dataclass(frozen=True)
class PinTries:
    """Wrong PINs entered for one card (by PAN hash) on one business day."""

    pan_hash: str
    business_date: str
    failures: int


@dataclass(frozen=True)
class Hold:
    """Funds a pre-authorization holds: `state` held until released, completed or expired."""

    transaction_id: int | None
    """None in a Unit that also inserts the pre-auth: the hold takes the inserted row's id."""
    account_id: str
    amount: int
    expires_at: str
    state: str
    updated_at: str


@dataclass(frozen=True)
class ClosedBatch:
    """A terminal's batch as closed: both sides' totals (JSON-ready dicts) and whether they agreed."""

    terminal_id: str
    batch_number: str
    business_date: str
    closed_at: str
    balanced: bool
    terminal_totals: dict[str, object]
    host_totals: dict[str, object]
    close_stan: str
    """The STAN of the 0500 that closed it: the same 0500 again is a retransmission, another one 80."""


@dataclass(frozen=True)
class UploadedRecord:
    terminal_id: str
    batch_number: str
    stan: str
    masked_pan: str | None
    amount: int | None
    card_org: str | None
    at: str


@dataclass(frozen=True)
class Order:
    """A QR order: a merchant-presented code to be paid (dynamic or static) or a scanned payment code (cpm).

    Its money moves on the transactions row `transaction_id`; this row holds what
    the terminal, the partner and the wallet ask about it (docs/qr.md).
    """

    order_no: str
    kind: str
    """mpm_dynamic, mpm_static or cpm."""
    channel: str | None
    merchant_id: str
    terminal_id: str | None
    partner_id: str | None
    out_order_no: str | None
    amount: int
    currency: str
    status: str
    """created, paying, paid, closed, refunded or reversed."""
    paid_amount: int
    refunded_amount: int
    wallet_account: str | None
    wallet_txn_id: str | None
    payload: str | None
    notify_url: str | None
    description: str | None
    request_hash: str | None
    """Of the partner's create request: the same out_order_no with other content is refused."""
    transaction_id: int | None
    created_at: str
    expires_at: str
    paid_at: str | None
    closed_at: str | None
    updated_at: str


@dataclass(frozen=True)
class QrRefund:
    order_no: str
    out_refund_no: str
    amount: int
    currency: str
    transaction_id: int | None
    """The refund's own transactions row; None in a Unit that inserts it."""
    created_at: str


@dataclass(frozen=True)
class Notification:
    """A signed callback owed to a partner, retried with back-off until acknowledged (state pending, delivered, failed)."""

    notify_id: str
    partner_id: str
    url: str
    event: str
    body: str
    attempts: int
    next_at: str
    state: str
    last_error: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class FeePayment:
    """A government fee paid by card, and where its confirmation to the finance system stands (docs/fees.md):
    confirming → confirmed; or, when it cannot be confirmed or the payment is reversed, cancel_pending →
    cancelled (or cancel_refused, for a person)."""

    transaction_id: int | None
    """The card payment's row; None in a Unit that inserts that row (it takes the row's id)."""
    pay_code: str
    agency_code: str | None
    amount: int
    currency: str
    channel: str
    trade_no: str
    """The bank's trade number the finance system knows the payment by: the payment's RRN."""
    state: str
    confirm_no: str | None
    attempts: int
    last_result: str | None
    business_date: str
    created_at: str
    updated_at: str


_FEE_COLUMNS = tuple(f.name for f in dataclasses.fields(FeePayment))
_FEE_VALUES = operator.attrgetter(*_FEE_COLUMNS)
_UPSERT_FEE = f"INSERT OR REPLACE INTO fee_payments ({', '.join(_FEE_COLUMNS)}) VALUES ({', '.join('?' * len(_FEE_COLUMNS))})"
_ORDER_COLUMNS = tuple(f.name for f in dataclasses.fields(Order))
_ORDER_VALUES = operator.attrgetter(*_ORDER_COLUMNS)
_UPSERT_ORDER = f"INSERT OR REPLACE INTO qr_orders ({', '.join(_ORDER_COLUMNS)}) VALUES ({', '.join('?' * len(_ORDER_COLUMNS))})"
_INSERT_REFUND = "INSERT INTO qr_refunds VALUES (?, ?, ?, ?, ?, ?)"
_NOTIFICATION_COLUMNS = tuple(f.name for f in dataclasses.fields(Notification))
_NOTIFICATION_VALUES = operator.attrgetter(*_NOTIFICATION_COLUMNS)
_UPSERT_NOTIFICATION = (f"INSERT OR REPLACE INTO notifications ({', '.join(_NOTIFICATION_COLUMNS)})"
                        f" VALUES ({', '.join('?' * len(_NOTIFICATION_COLUMNS))})")


@dataclass(frozen=True)
class Unit:
    """Everything one request changes, committed together or not at all."""

    messages: tuple[MessageEntry, ...] = ()
    insert: Transaction | None = None
    updates: tuple[Transaction, ...] = ()
    postings: tuple[Posting, ...] = ()
    terminal: TerminalSession | None = None
    pin_tries: PinTries | None = None
    holds: tuple[Hold, ...] = ()
    closed_batch: ClosedBatch | None = None
    uploads: tuple[UploadedRecord, ...] = ()
    orders: tuple[Order, ...] = ()
    """QR orders written whole (insert or replace); one whose transaction_id is None takes the inserted row's id."""
    refunds: tuple[QrRefund, ...] = ()
    notifications: tuple[Notification, ...] = ()
    fee_payments: tuple[FeePayment, ...] = ()
    """Written whole; one whose transaction_id is None takes the inserted row's id."""
    at: str = ""


@dataclass(frozen=True)
class Totals:
    response_code: str
    status: str
    currency: str | None
    count: int
    amount: int
    """Minor units of `currency`: amounts of different currencies are never added together."""


@dataclass(frozen=True)
class AccountBalance:
    id: str
    currency: str
    balance: int


class Journal:
    def __init__(self, path: str | Path, rng: random.Random | None = None, background_checkpoints: bool = False):
        """Open (or create) the journal at `path`.

        `rng` supplies the PAN-hash secret on first open only; later opens
        read it back, so hashes stay comparable across restarts. The host's
        own journal asks for `background_checkpoints`; a reader has no use
        for them.
        """
        self.path = Path(path)
        # One thread at a time uses a journal; the host hands it to its server thread.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, cached_statements=64)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._batch: _Batch | None = None
        self._pan_hmac = hmac.new(self._load_secret(rng or random.SystemRandom()), digestmod=hashlib.sha256)
        """Keyed once; each PAN hash starts from a copy."""
        self._checkpointer: _Checkpointer | None = None
        if background_checkpoints:
            # SQLite's own checkpoint stays as a backstop, for a WAL the background one cannot keep short.
            self._db.execute(f"PRAGMA wal_autocheckpoint = {_BACKSTOP_PAGES}")
            self._checkpointer = _Checkpointer(self.path)
            self._checkpointer.start()

    def _migrate(self) -> None:
        """A journal written by an earlier possim gains the columns added since, and loses the status
        CHECK that predates voids (SQLite cannot drop a CHECK in place, so that table is copied)."""
        present = {row[1] for row in self._db.execute("PRAGMA table_info(terminals)")}
        for column in _KEY_COLUMNS:
            if column not in present:
                self._db.execute(f"ALTER TABLE terminals ADD COLUMN {column} TEXT")
        (table_sql,) = self._db.execute("SELECT sql FROM sqlite_master WHERE name = 'transactions'").fetchone()
        if "CHECK (status IN" in table_sql:
            old = [row[1] for row in self._db.execute("PRAGMA table_info(transactions)")]
            with _Atomic(self._db):
                self._db.execute("ALTER TABLE transactions RENAME TO transactions_before_voids")
                self._db.execute("DROP INDEX IF EXISTS transactions_by_date")
                self._db.execute(_SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS transactions"):
                                         _SCHEMA.index("CREATE TABLE IF NOT EXISTS holds")].split(";")[0])
                self._db.execute("CREATE INDEX IF NOT EXISTS transactions_by_date ON transactions (business_date)")
                columns = ", ".join(old)
                self._db.execute(f"INSERT INTO transactions ({columns}) SELECT {columns} FROM transactions_before_voids")
                self._db.execute("DROP TABLE transactions_before_voids")
        present = {row[1] for row in self._db.execute("PRAGMA table_info(transactions)")}
        for column, kind in (("kind", "TEXT"), ("batch_number", "TEXT"), ("original_id", "INTEGER"),
                             ("refunded_amount", "INTEGER NOT NULL DEFAULT 0"), ("channel", "TEXT"),
                             ("wallet_txn_id", "TEXT"), ("order_no", "TEXT"), *_SETTLEMENT_COLUMNS):
            if column not in present:
                self._db.execute(f"ALTER TABLE transactions ADD COLUMN {column} {kind}")
        self._db.execute("CREATE INDEX IF NOT EXISTS transactions_by_rrn ON transactions (rrn)")
        self._db.execute("CREATE INDEX IF NOT EXISTS transactions_by_batch ON transactions (terminal_id, batch_number)")
        self._db.execute("CREATE INDEX IF NOT EXISTS transactions_by_settlement ON transactions (settlement_date)")

    def _load_secret(self, rng: random.Random) -> bytes:
        self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('pan_hash_secret', ?)", (rng.randbytes(32).hex(),))
        row = self._db.execute("SELECT value FROM meta WHERE key = 'pan_hash_secret'").fetchone()
        return bytes.fromhex(row[0])

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self._db.close()

    def pan_hash(self, pan: str) -> str:
        keyed = self._pan_hmac.copy()
        keyed.update(pan.encode("ascii"))
        return keyed.hexdigest()

    # ---- writes: each one commit, or part of the enclosing batch ----

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Commit every write made inside the block together, once, as it ends.

        All or nothing: if a write inside fails, or the commit does, nothing
        of the block is stored and JournalError is raised as it ends; writes
        tried after a failure raise JournalError at once, being lost anyway.
        The caller then redoes the work one write per transaction, which
        isolates the faulty one. (A savepoint per write would isolate it in
        place, but costs about as much as the write itself.) Nothing of the
        block is visible to other connections, or durable, before it ends;
        its message rows are inserted just before the commit, so `messages()`
        does not show them before either. Batches do not nest.
        """
        if self._batch is not None:
            raise RuntimeError("journal batches do not nest")
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise JournalError(f"starting a batch failed: {exc}") from exc
        batch = self._batch = _Batch()
        try:
            yield
            if batch.failed(self._db):
                raise JournalError(f"nothing of the batch was stored: {batch.failure}")
            try:
                self._db.executemany(_INSERT_MESSAGE, batch.messages)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise JournalError(f"committing the batch failed: {exc}") from exc
        finally:
            self._batch = None
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    def seed_accounts(self, accounts: Iterable[AccountBalance]) -> None:
        """Give accounts their opening balance; an account already here keeps its balance."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO accounts (id, currency, balance) VALUES (?, ?, ?)",
                [(a.id, a.currency, a.balance) for a in accounts],
            )

    def record(self, unit: Unit) -> int | None:
        """Apply one request's effect atomically; returns the id of an inserted transaction."""
        inserted = None
        messages = [
            (m.at, m.direction, m.peer, m.terminal_id, m.mti, m.stan, _JSON.encode(m.fields), m.response_code, m.note)
            for m in unit.messages
        ]
        with self._transaction():
            db = self._db
            if unit.insert is not None:
                inserted = db.execute(_INSERT_TXN, _txn_values(unit.insert)).lastrowid
            for update in unit.updates:
                db.execute(_UPDATE_TXN, _update_values(update))
            for posting in unit.postings:
                if db.execute(_POST, (posting.delta, unit.at, posting.account_id)).rowcount != 1:
                    raise JournalError(f"no account {posting.account_id} to post to")
            if unit.terminal is not None:
                t = unit.terminal
                db.execute(_UPSERT_TERMINAL, (
                    t.terminal_id, t.signed_on_date, t.batch_number, t.updated_at, t.pin_key, t.mac_key, t.data_key,
                ))
            if unit.pin_tries is not None:
                p = unit.pin_tries
                db.execute("INSERT OR REPLACE INTO pin_tries VALUES (?, ?, ?)", (p.pan_hash, p.business_date, p.failures))
            for hold in unit.holds:
                db.execute("INSERT OR REPLACE INTO holds VALUES (?, ?, ?, ?, ?, ?)", (
                    hold.transaction_id if hold.transaction_id is not None else inserted,
                    hold.account_id, hold.amount, hold.expires_at, hold.state, hold.updated_at,
                ))
            if unit.closed_batch is not None:
                b = unit.closed_batch
                db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
                    b.terminal_id, b.batch_number, b.business_date, b.closed_at, int(b.balanced),
                    _JSON.encode(b.terminal_totals), _JSON.encode(b.host_totals), b.close_stan,
                ))
            for order in unit.orders:
                if order.transaction_id is None and inserted is not None:
                    order = dataclasses.replace(order, transaction_id=inserted)
                db.execute(_UPSERT_ORDER, _ORDER_VALUES(order))
            for refund in unit.refunds:
                db.execute(_INSERT_REFUND, (refund.order_no, refund.out_refund_no, refund.amount, refund.currency,
                                            refund.transaction_id if refund.transaction_id is not None else inserted,
                                            refund.created_at))
            for n in unit.notifications:
                db.execute(_UPSERT_NOTIFICATION, _NOTIFICATION_VALUES(n))
            for fee in unit.fee_payments:
                if fee.transaction_id is None:
                    fee = dataclasses.replace(fee, transaction_id=inserted)
                db.execute(_UPSERT_FEE, _FEE_VALUES(fee))
            for r in unit.uploads:
                db.execute("INSERT OR IGNORE INTO batch_uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (r.terminal_id, r.batch_number, r.stan, r.masked_pan, r.amount, r.card_org, r.at))
            if self._batch is None:
                db.executemany(_INSERT_MESSAGE, messages)
            else:
                self._batch.messages.extend(messages)
        return inserted

    def reserve(self, sequence: str, count: int) -> int:
        """Claim `count` consecutive numbers of a named sequence; returns the first.

        Claiming in blocks keeps the per-request cost at zero and numbers
        unique across restarts (unused numbers of a block are skipped).
        """
        key = f"sequence:{sequence}"
        with self._transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            first = int(row[0]) + 1 if row else 1
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(first + count - 1)))
        return first

    # ---- reads ----

    def transaction(self, terminal_id: str, stan: str, key_date: str) -> Transaction | None:
        row = self._db.execute(_SELECT_TXN, (terminal_id, stan, key_date)).fetchone()
        return _txn(row) if row is not None else None

    def terminal(self, terminal_id: str) -> TerminalSession | None:
        row = self._db.execute(_SELECT_TERMINAL, (terminal_id,)).fetchone()
        return TerminalSession(*row) if row is not None else None

    def transaction_by_rrn(self, rrn: str) -> Transaction | None:
        row = self._db.execute("SELECT * FROM transactions WHERE rrn = ? ORDER BY id LIMIT 1", (rrn,)).fetchone()
        return _txn(row) if row is not None else None

    def transaction_by_id(self, transaction_id: int) -> Transaction | None:
        row = self._db.execute("SELECT * FROM transactions WHERE id = ?", (transaction_id,)).fetchone()
        return _txn(row) if row is not None else None

    def hold(self, transaction_id: int) -> Hold | None:
        row = self._db.execute("SELECT * FROM holds WHERE transaction_id = ?", (transaction_id,)).fetchone()
        return Hold(*row) if row is not None else None

    def expiring_holds(self, now: str) -> list[Hold]:
        """Holds still held whose time has come (`now` as journaled timestamps are written)."""
        rows = self._db.execute("SELECT * FROM holds WHERE state = 'held' AND expires_at <= ?", (now,))
        return [Hold(*row) for row in rows]

    def batch_transactions(self, terminal_id: str, batch_number: str) -> list[Transaction]:
        rows = self._db.execute(
            "SELECT * FROM transactions WHERE terminal_id = ? AND batch_number = ? ORDER BY id", (terminal_id, batch_number)
        )
        return [_txn(r) for r in rows]

    def closed_batch(self, terminal_id: str, batch_number: str) -> ClosedBatch | None:
        row = self._db.execute(
            "SELECT terminal_id, batch_number, business_date, closed_at, balanced, terminal_totals, host_totals, close_stan"
            " FROM batches WHERE terminal_id = ? AND batch_number = ?", (terminal_id, batch_number),
        ).fetchone()
        if row is None:
            return None
        return ClosedBatch(row[0], row[1], row[2], row[3], bool(row[4]), json.loads(row[5]), json.loads(row[6]), row[7])

    def last_closed_batch(self, terminal_id: str) -> ClosedBatch | None:
        row = self._db.execute(
            "SELECT batch_number FROM batches WHERE terminal_id = ? ORDER BY closed_at DESC, batch_number DESC LIMIT 1",
            (terminal_id,),
        ).fetchone()
        return self.closed_batch(terminal_id, row[0]) if row else None

    def uploads(self, terminal_id: str, batch_number: str) -> list[UploadedRecord]:
        rows = self._db.execute(
            "SELECT * FROM batch_uploads WHERE terminal_id = ? AND batch_number = ? ORDER BY stan", (terminal_id, batch_number)
        )
        return [UploadedRecord(*r) for r in rows]

    def pin_failures(self, pan_hash: str, business_date: str) -> int:
        """Wrong PINs entered for the card today; a new business day starts again from 0."""
        row = self._db.execute(
            "SELECT failures FROM pin_tries WHERE pan_hash = ? AND business_date = ?", (pan_hash, business_date)
        ).fetchone()
        return row[0] if row is not None else 0

    def balance(self, account_id: str) -> int | None:
        row = self._db.execute("SELECT balance FROM accounts WHERE id = ?", (account_id,)).fetchone()
        return row[0] if row is not None else None

    @property
    def connection(self) -> sqlite3.Connection:
        """The journal's own connection, for settlement's store: its tables live in the same file, and its
        writes join the journal's transactions (`batch()`), so a cut-over, or a reconciliation run with the
        reversals it makes, is one commit."""
        return self._db

    def last_cutover(self) -> str | None:
        """The latest business date settlement has cut over (ISO), or None before the first cut-over."""
        row = self._db.execute(_LAST_CUTOVER).fetchone()
        return row[0]

    def balances(self) -> list[AccountBalance]:
        return [AccountBalance(r["id"], r["currency"], r["balance"])
                for r in self._db.execute("SELECT id, currency, balance FROM accounts ORDER BY id")]

    def transactions(self, business_date: str | None = None) -> list[Transaction]:
        """Transaction rows in the order they were first journaled."""
        if business_date is None:
            rows = self._db.execute("SELECT * FROM transactions ORDER BY id")
        else:
            rows = self._db.execute("SELECT * FROM transactions WHERE business_date = ? ORDER BY id", (business_date,))
        return [_txn(r) for r in rows]

    def totals(self, business_date: str | None = None) -> list[Totals]:
        """Count and amount per response code, status and currency."""
        where, args = ("WHERE business_date = ?", (business_date,)) if business_date else ("", ())
        rows = self._db.execute(
            f"SELECT response_code, status, currency, COUNT(*), COALESCE(SUM(amount), 0) FROM transactions {where}"
            " GROUP BY response_code, status, currency ORDER BY response_code, status, currency",
            args,
        )
        return [Totals(*r) for r in rows]

    def messages(self, terminal_id: str | None = None) -> list[MessageEntry]:
        if terminal_id is None:
            rows = self._db.execute("SELECT * FROM messages ORDER BY id")
        else:
            rows = self._db.execute("SELECT * FROM messages WHERE terminal_id = ? ORDER BY id", (terminal_id,))
        return [
            MessageEntry(r["at"], r["direction"], r["peer"], r["terminal_id"], r["mti"], r["stan"],
                         json.loads(r["fields"]), r["response_code"], r["note"])
            for r in rows
        ]

    # ---- QR orders ----

    def order(self, order_no: str) -> Order | None:
        row = self._db.execute("SELECT * FROM qr_orders WHERE order_no = ?", (order_no,)).fetchone()
        return Order(**dict(row)) if row is not None else None

    def partner_order(self, partner_id: str, out_order_no: str) -> Order | None:
        row = self._db.execute(
            "SELECT * FROM qr_orders WHERE partner_id = ? AND out_order_no = ?", (partner_id, out_order_no)
        ).fetchone()
        return Order(**dict(row)) if row is not None else None

    def order_by_wallet_txn(self, wallet_txn_id: str) -> Order | None:
        row = self._db.execute("SELECT * FROM qr_orders WHERE wallet_txn_id = ?", (wallet_txn_id,)).fetchone()
        return Order(**dict(row)) if row is not None else None

    def orders_due(self, now: str) -> list[Order]:
        """Orders still open (created, or paying) whose time is up."""
        rows = self._db.execute(
            "SELECT * FROM qr_orders WHERE status IN ('created', 'paying') AND expires_at <= ? ORDER BY expires_at", (now,)
        )
        return [Order(**dict(r)) for r in rows]

    def orders(self) -> list[Order]:
        return [Order(**dict(r)) for r in self._db.execute("SELECT * FROM qr_orders ORDER BY created_at, order_no")]

    def refund(self, order_no: str, out_refund_no: str) -> QrRefund | None:
        row = self._db.execute(
            "SELECT * FROM qr_refunds WHERE order_no = ? AND out_refund_no = ?", (order_no, out_refund_no)
        ).fetchone()
        return QrRefund(**dict(row)) if row is not None else None

    def notifications_due(self, now: str, limit: int = 100) -> list[Notification]:
        rows = self._db.execute(
            "SELECT * FROM notifications WHERE state = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?", (now, limit)
        )
        return [Notification(**dict(r)) for r in rows]

    def fee_payment(self, transaction_id: int) -> FeePayment | None:
        row = self._db.execute(f"SELECT {', '.join(_FEE_COLUMNS)} FROM fee_payments WHERE transaction_id = ?",
                               (transaction_id,)).fetchone()
        return None if row is None else FeePayment(*row)

    def fee_payments(self, state: str | None = None) -> list[FeePayment]:
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        return [FeePayment(*r) for r in self._db.execute(
            f"SELECT {', '.join(_FEE_COLUMNS)} FROM fee_payments {where} ORDER BY transaction_id", args)]

    def notifications(self) -> list[Notification]:
        return [Notification(**dict(r)) for r in self._db.execute("SELECT * FROM notifications ORDER BY created_at")]

    def rows(self, where: dict[str, str]) -> list[dict[str, object]]:
        """Transaction rows whose columns equal `where`, oldest first, column → value (replay's journal checks)."""
        return transaction_rows(self._db, where)

    def _transaction(self) -> _Atomic | _BatchWrite:
        return _Atomic(self._db) if self._batch is None else _BatchWrite(self._batch, self._db)


def transaction_rows(db: sqlite3.Connection, where: dict[str, str]) -> list[dict[str, object]]:
    """Rows of `transactions` in `db` whose columns equal `where`, oldest first, as column → value.

    A function over a connection, so a reader of another process's journal can use a read-only connection.
    Column names are checked against the table (they become part of the statement); an unknown one raises
    ValueError naming it and the valid ones. Values are parameters: SQLite compares '1250' with an INTEGER
    column as the number.
    """
    columns = [row[1] for row in db.execute("PRAGMA table_info(transactions)")]
    unknown = sorted(set(where) - set(columns))
    if unknown:
        raise ValueError(f"the journal's transactions have no column {', '.join(map(repr, unknown))}; "
                         f"columns: {', '.join(columns)}")
    condition = " AND ".join(f"{name} = ?" for name in where) or "1"
    cursor = db.execute(f"SELECT * FROM transactions WHERE {condition} ORDER BY id", list(where.values()))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


class _Atomic:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type | None, *_: object) -> None:
        try:
            if kind is None:
                self._db.execute("COMMIT")
        finally:
            # Never leave the connection inside a failed transaction: every later BEGIN would fail too.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")


_CHECKPOINT_INTERVAL = 0.2
"""Seconds between background checkpoints: a few hundred answers' worth of WAL at full speed."""
_BACKSTOP_PAGES = 10_000
"""WAL pages (40 MB) at which the writer checkpoints itself after all. Under steady load a background
checkpoint rarely finds a moment without new frames, and only a complete one lets the WAL start over."""


class _Checkpointer(threading.Thread):
    """Copies the WAL back into the database file every so often, on a connection of its own.

    PASSIVE checkpoints never wait for, nor block, the host's connection;
    SQLite releases the GIL while it copies and syncs.
    """

    def __init__(self, path: Path):
        super().__init__(name="possim-journal-checkpoints", daemon=True)
        self._path = path
        self._stopping = threading.Event()

    def run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stopping.wait(_CHECKPOINT_INTERVAL):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the writer's backstop checkpoint still runs
                    log.warning("background checkpoint of %s failed: %s", self._path, exc)
        finally:
            db.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join()


@dataclass
class _Batch:
    messages: list[tuple[object, ...]] = dataclasses.field(default_factory=list)
    """Message rows of the batch's writes, inserted just before it commits."""
    failure: str | None = None
    """Why the batch cannot commit: the first write that failed."""

    def failed(self, db: sqlite3.Connection) -> bool:
        if self.failure is None and not db.in_transaction:
            # SQLite abandons a transaction on some I/O errors; a write now would commit on its own.
            self.failure = "SQLite rolled the batch's transaction back"
        return self.failure is not None


class _BatchWrite:
    """One write inside a batch: applied in the batch's transaction; a failure dooms the batch."""

    def __init__(self, batch: _Batch, db: sqlite3.Connection):
        self._batch = batch
        self._db = db

    def __enter__(self) -> None:
        if self._batch.failed(self._db):
            raise JournalError(f"the batch already failed: {self._batch.failure}")

    def __exit__(self, kind: type | None, error: BaseException | None, *_: object) -> None:
        if error is not None and self._batch.failure is None:
            # Error texts name tables and columns, never values (statements take parameters).
            self._batch.failure = f"{type(error).__name__}: {error}"


def _txn_values(txn: Transaction) -> list[object]:
    values = list(_TXN_VALUES(txn))
    if txn.response_fields is not None:
        values[_RESPONSE_FIELDS_AT] = _JSON.encode(txn.response_fields)
    return values


def _update_values(txn: Transaction) -> list[object]:
    values = list(_UPDATE_VALUES(txn))
    if txn.response_fields is not None:
        values[_UPDATED_FIELDS_AT] = _JSON.encode(txn.response_fields)
    return values


def _txn(row: sqlite3.Row) -> Transaction:
    data = {key: row[key] for key in _TXN_FIELDS}
    if data["response_fields"] is not None:
        data["response_fields"] = json.loads(data["response_fields"])
    return Transaction(**data)
