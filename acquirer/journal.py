"""The host's journal: every message, one row per transaction, account
balances and terminal sessions, in one SQLite file a user can open.

SQLite runs in WAL mode with `synchronous=NORMAL`: a commit survives a crash
of the host process and readers (the demo summary, `sqlite3`, settlement)
never block the host; a power cut may lose the last few commits but never
corrupts the file. FULL would fsync every answer — the price of thousands of
answers a second is not worth paying in a lab.

The API is narrow on purpose — reads by key, and `record()` applying one
request's whole effect (messages, transaction row, balance change, terminal
session) in one transaction — so that a PostgreSQL store can serve the same
calls for several host processes. Statements are constant strings, so the
sqlite3 module prepares each once and reuses it.

PCI: no column holds a full PAN, track, PIN block or CVV. Cards are a masked
PAN plus an HMAC-SHA256 of the PAN keyed by a secret kept in `meta`, which
lets the host match a retransmission without being able to recover the card.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

APPROVED = "approved"
DECLINED = "declined"
REVERSED = "reversed"
ORPHAN_REVERSAL = "orphan_reversal"

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
    status          TEXT NOT NULL CHECK (status IN ('approved', 'declined', 'reversed', 'orphan_reversal')),
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
    UNIQUE (terminal_id, stan, key_date)
);
CREATE INDEX IF NOT EXISTS transactions_by_date ON transactions (business_date);
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
    updated_at     TEXT NOT NULL
);
"""


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
    id: int | None = None


_TXN_COLUMNS = tuple(f.name for f in dataclasses.fields(Transaction) if f.name != "id")
_INSERT_TXN = f"INSERT INTO transactions ({', '.join(_TXN_COLUMNS)}) VALUES ({', '.join('?' * len(_TXN_COLUMNS))})"
_UPDATABLE = ("status", "response_code", "decline_step", "decline_reason", "posted_amount",
              "reversal_mti", "reversal_stan", "reversal_reason", "reversed_at", "updated_at")
_UPDATE_TXN = f"UPDATE transactions SET {', '.join(f'{c} = ?' for c in _UPDATABLE)} WHERE id = ?"
_SELECT_TXN = "SELECT * FROM transactions WHERE terminal_id = ? AND stan = ? AND key_date = ?"
_INSERT_MESSAGE = (
    "INSERT INTO messages (at, direction, peer, terminal_id, mti, stan, fields, response_code, note)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_POST = "UPDATE accounts SET balance = balance + ?, updated_at = ? WHERE id = ?"
_UPSERT_TERMINAL = (
    "INSERT INTO terminals (terminal_id, signed_on_date, batch_number, updated_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (terminal_id) DO UPDATE SET signed_on_date = excluded.signed_on_date,"
    " batch_number = excluded.batch_number, updated_at = excluded.updated_at"
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


@dataclass(frozen=True)
class Posting:
    """A balance change in minor units: negative debits the account."""

    account_id: str
    delta: int


@dataclass(frozen=True)
class Unit:
    """Everything one request changes, committed together or not at all."""

    messages: tuple[MessageEntry, ...] = ()
    insert: Transaction | None = None
    update: Transaction | None = None
    postings: tuple[Posting, ...] = ()
    terminal: TerminalSession | None = None
    at: str = ""


@dataclass(frozen=True)
class Totals:
    response_code: str
    status: str
    count: int
    amount: int


@dataclass(frozen=True)
class AccountBalance:
    id: str
    currency: str
    balance: int


class Journal:
    def __init__(self, path: str | Path, rng: random.Random | None = None):
        """Open (or create) the journal at `path`.

        `rng` supplies the PAN-hash secret on first open only; later opens
        read it back, so hashes stay comparable across restarts.
        """
        self.path = Path(path)
        # One thread at a time uses a journal; the host hands it to its server thread.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, cached_statements=64)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.executescript(_SCHEMA)
        self._secret = self._load_secret(rng or random.SystemRandom())

    def _load_secret(self, rng: random.Random) -> bytes:
        self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('pan_hash_secret', ?)", (rng.randbytes(32).hex(),))
        row = self._db.execute("SELECT value FROM meta WHERE key = 'pan_hash_secret'").fetchone()
        return bytes.fromhex(row[0])

    def close(self) -> None:
        self._db.close()

    def pan_hash(self, pan: str) -> str:
        return hmac.new(self._secret, pan.encode("ascii"), hashlib.sha256).hexdigest()

    # ---- writes: each one commit ----

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
        with self._transaction():
            db = self._db
            if unit.insert is not None:
                inserted = db.execute(_INSERT_TXN, _txn_values(unit.insert)).lastrowid
            if unit.update is not None:
                txn = unit.update
                db.execute(_UPDATE_TXN, (*(getattr(txn, c) for c in _UPDATABLE), txn.id))
            for posting in unit.postings:
                if db.execute(_POST, (posting.delta, unit.at, posting.account_id)).rowcount != 1:
                    raise JournalError(f"no account {posting.account_id} to post to")
            if unit.terminal is not None:
                t = unit.terminal
                db.execute(_UPSERT_TERMINAL, (t.terminal_id, t.signed_on_date, t.batch_number, t.updated_at))
            db.executemany(
                _INSERT_MESSAGE,
                [
                    (m.at, m.direction, m.peer, m.terminal_id, m.mti, m.stan,
                     json.dumps(m.fields, separators=(",", ":")), m.response_code, m.note)
                    for m in unit.messages
                ],
            )
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
        row = self._db.execute("SELECT * FROM terminals WHERE terminal_id = ?", (terminal_id,)).fetchone()
        return TerminalSession(**dict(row)) if row is not None else None

    def balance(self, account_id: str) -> int | None:
        row = self._db.execute("SELECT balance FROM accounts WHERE id = ?", (account_id,)).fetchone()
        return row[0] if row is not None else None

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
        """Count and amount (minor units, all currencies summed) per response code and status."""
        where, args = ("WHERE business_date = ?", (business_date,)) if business_date else ("", ())
        rows = self._db.execute(
            f"SELECT response_code, status, COUNT(*), COALESCE(SUM(amount), 0) FROM transactions {where}"
            " GROUP BY response_code, status ORDER BY response_code, status",
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

    def _transaction(self) -> _Atomic:
        return _Atomic(self._db)


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


def _txn_values(txn: Transaction) -> tuple[object, ...]:
    values = []
    for column in _TXN_COLUMNS:
        value = getattr(txn, column)
        if column == "response_fields" and value is not None:
            value = json.dumps(value, separators=(",", ":"))
        values.append(value)
    return tuple(values)


def _txn(row: sqlite3.Row) -> Transaction:
    data = dict(row)
    if data["response_fields"] is not None:
        data["response_fields"] = json.loads(data["response_fields"])
    return Transaction(**data)
