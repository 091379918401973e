"""What a terminal remembers between transactions and between processes.

One small SQLite file per terminal ID: consecutive `possim pos` commands are
the same terminal. Everything that must survive a crash — the STAN just
used, a reversal that may be owed — is committed before the message that
depends on it leaves.

PCI DSS: the file never holds a full PAN, track data, PIN block or clear
key: working keys are kept as they arrived, under the terminal master key. The batch
keeps a masked PAN for receipts and totals; a pending reversal keeps only
what a 0400 carries (see messages.REVERSAL_KEEPS) and refuses anything else.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import platformdirs

from possim.hsm_mock import dukpt_tdes
from possim.wire.message import Message

STAN_LIMIT = 999999
CARD_DATA_FIELDS = frozenset({2, 14, 34, 35, 36, 45, 52, 55})
"""Fields that identify or unlock a card; the state refuses to store them."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS terminal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    tid TEXT NOT NULL,
    stan INTEGER NOT NULL,
    batch_number INTEGER NOT NULL,
    signed_on_date TEXT,
    pin_key TEXT,
    mac_key TEXT,
    data_key TEXT,
    ksn TEXT
);
CREATE TABLE IF NOT EXISTS batch (
    batch_number INTEGER NOT NULL,
    stan TEXT NOT NULL,
    rrn TEXT,
    auth_code TEXT,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    masked_pan TEXT NOT NULL,
    time TEXT NOT NULL,
    original TEXT NOT NULL,
    PRIMARY KEY (batch_number, stan)
);
CREATE TABLE IF NOT EXISTS pending_reversal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    original TEXT NOT NULL,
    batch_number INTEGER NOT NULL,
    reason TEXT NOT NULL,
    reversal_stan TEXT,
    attempts INTEGER NOT NULL,
    masked_pan TEXT NOT NULL,
    created TEXT NOT NULL
);
"""


class StateError(ValueError):
    """A state file that cannot be used for this terminal; the message names the file."""


@dataclass(frozen=True)
class BatchEntry:
    """An approved transaction in the open batch."""

    batch_number: int
    stan: str
    rrn: str | None
    auth_code: str | None
    amount: int
    currency: str
    masked_pan: str
    time: datetime
    original: Message
    """The request as a reversal needs it (messages.reversal_original)."""


@dataclass(frozen=True)
class PendingReversal:
    """A reversal owed to the host until it answers 0410 with 00."""

    original: Message
    batch_number: int
    reason: str
    reversal_stan: str | None
    """The reversal's own STAN once chosen, so 0401 repeats match the 0400."""
    attempts: int
    """How many times it reached the wire; after the first, it goes as 0401."""
    masked_pan: str
    created: datetime

    @property
    def original_stan(self) -> str:
        return self.original[11]

    @property
    def amount(self) -> int | None:
        return int(self.original[4]) if 4 in self.original else None


def default_state_path(tid: str) -> Path:
    return Path(platformdirs.user_data_dir("possim")) / "terminals" / f"{tid}.sqlite"


class TerminalState:
    """The persisted counters, open batch and pending reversal of one terminal."""

    def __init__(self, tid: str, path: str | Path | None = None):
        self.tid = tid
        self.path = Path(path) if path is not None else default_state_path(tid)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            present = {row[1] for row in self._db.execute("PRAGMA table_info(terminal)")}
            for column in ("pin_key", "mac_key", "data_key", "ksn"):
                if column not in present:  # a state file from before key download or DUKPT
                    self._db.execute(f"ALTER TABLE terminal ADD COLUMN {column} TEXT")
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"terminal state {self.path}: {exc}") from None
        row = self._db.execute("SELECT tid FROM terminal").fetchone()
        if row is None:
            self._db.execute("INSERT INTO terminal (id, tid, stan, batch_number) VALUES (1, ?, 0, 1)", (tid,))
        elif row[0] != tid:
            self._db.close()
            raise StateError(f"terminal state {self.path} belongs to terminal {row[0]!r}, not {tid!r}")

    def close(self) -> None:
        self._db.close()

    # counters

    def next_stan(self) -> str:
        """Take the next STAN (1..999999, wrapping) and commit it before anyone can send it."""
        with self._db:
            self._db.execute(f"UPDATE terminal SET stan = stan % {STAN_LIMIT} + 1")
            (stan,) = self._db.execute("SELECT stan FROM terminal").fetchone()
        return f"{stan:06d}"

    @property
    def last_stan(self) -> int:
        """The STAN most recently taken, 0 before the first."""
        return self._db.execute("SELECT stan FROM terminal").fetchone()[0]

    @property
    def batch_number(self) -> int:
        return self._db.execute("SELECT batch_number FROM terminal").fetchone()[0]

    @property
    def signed_on_date(self) -> date | None:
        value = self._db.execute("SELECT signed_on_date FROM terminal").fetchone()[0]
        return date.fromisoformat(value) if value else None

    def mark_signed_on(self, day: date, batch_number: int | None = None) -> None:
        """Remember a sign-on, and the batch number the host gave with it (cup 60.2)."""
        with self._db:
            self._db.execute("UPDATE terminal SET signed_on_date = ?", (day.isoformat(),))
            if batch_number is not None:
                self._db.execute("UPDATE terminal SET batch_number = ?", (batch_number,))

    # working keys

    def save_working_keys(self, pin_key: bytes, mac_key: bytes, data_key: bytes | None = None) -> None:
        """Keep the working keys of a sign-on, as cryptograms under the TMK (never clear keys)."""
        with self._db:
            self._db.execute(
                "UPDATE terminal SET pin_key = ?, mac_key = ?, data_key = ?",
                (pin_key.hex().upper(), mac_key.hex().upper(), data_key.hex().upper() if data_key else None),
            )

    def working_keys(self) -> tuple[bytes, bytes] | None:
        """(PIN key, MAC key) under the TMK, as the last sign-on delivered them; None before any."""
        pin_key, mac_key = self._db.execute("SELECT pin_key, mac_key FROM terminal").fetchone()
        if pin_key is None or mac_key is None:
            return None
        return bytes.fromhex(pin_key), bytes.fromhex(mac_key)

    def next_ksn(self, initial_ksn: bytes) -> bytes:
        """The KSN of the next DUKPT transaction, committed before the PIN block using it leaves.

        A PIN pad loaded with another initial KSN starts counting afresh.
        """
        (stored,) = self._db.execute("SELECT ksn FROM terminal").fetchone()
        current = bytes.fromhex(stored) if stored else initial_ksn
        if dukpt_tdes.ksn_counter(current) != int.from_bytes(current, "big") - int.from_bytes(initial_ksn, "big"):
            current = initial_ksn
        ksn = dukpt_tdes.next_ksn(current)
        with self._db:
            self._db.execute("UPDATE terminal SET ksn = ?", (ksn.hex().upper(),))
        return ksn

    # open batch

    def answered(self, approved: BatchEntry | None = None) -> None:
        """A request got its answer: no reversal is owed, and an approval joins the batch.

        One commit, so a crash can never leave the reversal forgotten and the approval unrecorded.
        """
        if approved is not None:
            _refuse_card_data(approved.original)
        with self._db:
            self._db.execute("DELETE FROM pending_reversal")
            if approved is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO batch VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        approved.batch_number, approved.stan, approved.rrn, approved.auth_code, approved.amount,
                        approved.currency, approved.masked_pan, approved.time.isoformat(), _dump(approved.original),
                    ),
                )

    def open_batch(self) -> list[BatchEntry]:
        """Approved transactions not yet settled, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM batch WHERE batch_number = ? ORDER BY rowid", (self.batch_number,)
        ).fetchall()
        return [
            BatchEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], datetime.fromisoformat(row[7]), _load(row[8]))
            for row in rows
        ]

    def last_approved(self) -> BatchEntry | None:
        batch = self.open_batch()
        return batch[-1] if batch else None

    # pending reversal

    def pending_reversal(self) -> PendingReversal | None:
        row = self._db.execute(
            "SELECT original, batch_number, reason, reversal_stan, attempts, masked_pan, created FROM pending_reversal"
        ).fetchone()
        if row is None:
            return None
        return PendingReversal(_load(row[0]), row[1], row[2], row[3], row[4], row[5], datetime.fromisoformat(row[6]))

    def save_reversal(self, reversal: PendingReversal) -> None:
        """Record (or update) the reversal owed; committed when this returns."""
        _refuse_card_data(reversal.original)
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO pending_reversal VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _dump(reversal.original), reversal.batch_number, reversal.reason, reversal.reversal_stan,
                    reversal.attempts, reversal.masked_pan, reversal.created.isoformat(),
                ),
            )

    def drop_reversal(self) -> None:
        """Forget a reversal that is not owed after all: its request never left."""
        with self._db:
            self._db.execute("DELETE FROM pending_reversal")

    def reversal_acknowledged(self, reversal: PendingReversal) -> None:
        """The host took the reversal: forget it, and take the reversed transaction out of the batch."""
        with self._db:
            self._db.execute("DELETE FROM pending_reversal")
            self._db.execute(
                "DELETE FROM batch WHERE batch_number = ? AND stan = ?", (reversal.batch_number, reversal.original_stan)
            )


def _refuse_card_data(message: Message) -> None:
    carried = CARD_DATA_FIELDS.intersection(message.fields)
    if carried:
        raise ValueError(f"terminal state does not store card data (field {min(carried)})")


def _dump(message: Message) -> str:
    return json.dumps({"mti": message.mti, "fields": {str(n): v for n, v in message.fields.items()}})


def _load(text: str) -> Message:
    data = json.loads(text)
    return Message(data["mti"], {int(n): v for n, v in data["fields"].items()})
