"""What a terminal remembers between transactions and between processes.

One small SQLite file per terminal ID: consecutive `possim pos` commands are
the same terminal. Everything that must survive a crash — the STAN just
used, a reversal that may be owed — is committed before the message that
depends on it leaves.

PCI DSS: the file never holds a full PAN, track data, PIN block or clear
key: working keys are kept as they arrived, under the terminal master key. The batch
keeps a masked PAN for receipts and totals; a pending reversal keeps only
what a 0400 carries (see messages.REVERSAL_KEEPS) and refuses anything else.
A queued advice must carry its card data when it is sent later: the state
takes that only as an opaque blob the terminal sealed under its TMK
(advice_store.py), and refuses clear card data in the advice's message.

QR orders (the host's merchant-presented orders and scanned wallet
payments) are kept by order number with the request as its reversal needs
it, never the payment code scanned: a paid order joins the batch when the
terminal learns it was paid, which may be long after its answer.

Batch close is resumable: its phase, the host's verdict on the totals and
which records were uploaded are committed before the message that depends
on them leaves, so a restarted terminal continues where it stopped and
never uploads a record twice.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path

import platformdirs

from possim.hsm_mock import dukpt_tdes
from possim.wire.message import Message

STAN_LIMIT = 999999
ATC_LIMIT = 0xFFFF
CLOSE_PHASES = ("totals", "upload", "end")
"""Batch close under way: the totals 0500 sent (its STAN kept, so a resend is the same message), records being
uploaded, then the end-of-upload / trailer message."""
CARD_DATA_FIELDS = frozenset({2, 14, 34, 35, 36, 45, 52, 55})
"""Fields that identify or unlock a card; the state refuses to store them."""

_ADDED_COLUMNS = {
    # table: (column, declaration) added after the first release; old files get them by ALTER TABLE
    "terminal": (("pin_key", "TEXT"), ("mac_key", "TEXT"), ("data_key", "TEXT"), ("ksn", "TEXT"), ("atc", "INTEGER"),
                 ("close_phase", "TEXT"), ("close_balanced", "INTEGER"), ("close_code", "TEXT"), ("close_stan", "TEXT")),
    "batch": (("kind", "TEXT NOT NULL DEFAULT 'sale'"), ("voided", "INTEGER NOT NULL DEFAULT 0"),
              ("uploaded", "INTEGER NOT NULL DEFAULT 0"), ("original_stan", "TEXT"), ("order_no", "TEXT")),
}
_BATCH_COLUMNS = ("batch_number, stan, rrn, auth_code, amount, currency, masked_pan, time, original, kind, voided, uploaded,"
                  " original_stan, order_no")
_ORDER_COLUMNS = ("order_no, kind, batch_number, stan, amount, currency, status, original, created, rrn, channel,"
                  " wallet_txn_id, refunded, expires_at")
_UNDONE_BY_REVERSAL = ("created", "paying", "paid")
"""Order states a reversal ends: the host closes an open order and refunds a paid one; a closed one stays closed."""
_ADVICE_COLUMNS = "kind, batch_number, message, sealed_card, masked_pan, attempts, created, id, response_code, rrn"

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
    ksn TEXT,
    atc INTEGER,
    close_phase TEXT,
    close_balanced INTEGER,
    close_code TEXT,
    close_stan TEXT
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
    kind TEXT NOT NULL DEFAULT 'sale',
    voided INTEGER NOT NULL DEFAULT 0,
    uploaded INTEGER NOT NULL DEFAULT 0,
    original_stan TEXT,
    PRIMARY KEY (batch_number, stan)
);
CREATE TABLE IF NOT EXISTS advice (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    batch_number INTEGER NOT NULL,
    message TEXT NOT NULL,
    sealed_card TEXT,
    masked_pan TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created TEXT NOT NULL,
    response_code TEXT,
    rrn TEXT
);
CREATE TABLE IF NOT EXISTS qr_order (
    order_no TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    batch_number INTEGER NOT NULL,
    stan TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    original TEXT NOT NULL,
    created TEXT NOT NULL,
    rrn TEXT,
    channel TEXT,
    wallet_txn_id TEXT,
    refunded INTEGER NOT NULL DEFAULT 0,
    expires_at TEXT
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
    kind: str = "sale"
    """Its transaction kind (wire/transactions.py): sale, sale_void, refund, preauth, completion, offline ..."""
    voided: bool = False
    """A sale or completion a later void of this batch cancelled; it still counts as a debit."""
    uploaded: bool = False
    """Sent in a batch-close upload (flagged before the 0320 carrying it left)."""
    original_stan: str | None = None
    """For a void: the STAN of the entry it voids, in the same batch."""
    order_no: str | None = None
    """For a QR payment or refund: the host's order number (a QR entry has no card: its masked PAN is empty)."""


@dataclass(frozen=True)
class QrOrder:
    """An order this terminal made (qr_order) or a wallet payment it scanned (qr_sale), as its answers told it."""

    order_no: str
    kind: str
    """qr_order or qr_sale: the request that made it, and that a reversal undoes."""
    batch_number: int
    """The batch it was made in: its payment counts there, as the host counts it."""
    stan: str
    amount: int
    currency: str
    status: str
    """The last state an answer gave: created, paying, paid, closed, refunded, reversed."""
    original: Message
    """The request as its reversal needs it (messages.reversal_original): no payment code."""
    created: datetime
    rrn: str | None = None
    channel: str | None = None
    wallet_txn_id: str | None = None
    refunded: int = 0
    """Minor units refunded so far, as the host last said."""
    expires_at: str | None = None


@dataclass(frozen=True)
class Advice:
    """An advice (0220) kept until the host answers it, then kept with the answer's code.

    `message` is the request without card data; `sealed_card` holds the
    card fields (2, 14, 35, 55 ...) encrypted under the TMK, opaque to the state.
    """

    kind: str
    batch_number: int
    message: Message
    sealed_card: bytes | None
    masked_pan: str
    attempts: int
    """Sends that may have reached the host; after the first, it goes as 0221."""
    created: datetime
    id: int | None = None
    response_code: str | None = None
    """The host's answer; None while queued."""
    rrn: str | None = None

    @property
    def stan(self) -> str:
        return self.message[11]

    @property
    def amount(self) -> int | None:
        return int(self.message[4]) if 4 in self.message else None


@dataclass(frozen=True)
class CloseProgress:
    """Where an interrupted batch close stands; phase None when none is under way."""

    phase: str | None
    balanced: bool | None
    response_code: str | None
    stan: str | None = None
    """The totals 0500's STAN: a close resumed before its answer sends that same 0500 again."""


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
            for table, columns in _ADDED_COLUMNS.items():
                present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for column, declaration in columns:
                    if column not in present:  # a state file from an earlier release
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
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

    def start_stan_at(self, first: int) -> None:
        """Make `first` the next STAN taken: replay starts each scenario's fresh terminal where a host that keeps
        its journal across runs has not seen its STANs yet."""
        if isinstance(first, bool) or not isinstance(first, int) or not 1 <= first <= STAN_LIMIT:
            raise ValueError(f"first STAN {first!r} must be 1 to {STAN_LIMIT}")
        with self._db:
            self._db.execute("UPDATE terminal SET stan = ?", (first - 1,))

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

    def next_atc(self) -> int:
        """The chip's next application transaction counter (1..65535, wrapping), committed before 9F36 leaves."""
        with self._db:
            self._db.execute(f"UPDATE terminal SET atc = COALESCE(atc, 0) % {ATC_LIMIT} + 1")
            (atc,) = self._db.execute("SELECT atc FROM terminal").fetchone()
        return atc

    # open batch

    def answered(self, approved: BatchEntry | None = None, order: QrOrder | None = None) -> None:
        """A request got its answer: no reversal is owed, and an approval joins the batch.

        A void's approval marks the entry it voids, in the same commit; a QR
        order the answer made is kept in it too. One commit, so a crash can
        never leave the reversal forgotten and the approval (or the order number) unrecorded.
        """
        if approved is not None:
            _refuse_card_data(approved.original)
        if order is not None:
            _refuse_card_data(order.original)
        with self._db:
            self._db.execute("DELETE FROM pending_reversal")
            if approved is not None:
                self._insert_entry(approved)
            if order is not None:
                self._save_order(order)

    def _insert_entry(self, entry: BatchEntry) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO batch ({_BATCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.batch_number, entry.stan, entry.rrn, entry.auth_code, entry.amount, entry.currency,
                entry.masked_pan, entry.time.isoformat(), _dump(entry.original), entry.kind, int(entry.voided),
                int(entry.uploaded), entry.original_stan, entry.order_no,
            ),
        )
        if entry.original_stan is not None:
            self._db.execute(
                "UPDATE batch SET voided = 1 WHERE batch_number = ? AND stan = ?", (entry.batch_number, entry.original_stan)
            )

    def open_batch(self) -> list[BatchEntry]:
        """Every transaction of the open batch (pre-auths and voids too), oldest first."""
        return self._entries("WHERE batch_number = ? ORDER BY rowid", (self.batch_number,))

    def _entries(self, where: str, args: tuple[object, ...]) -> list[BatchEntry]:
        rows = self._db.execute(f"SELECT {_BATCH_COLUMNS} FROM batch {where}", args).fetchall()
        return [
            BatchEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], datetime.fromisoformat(r[7]), _load(r[8]), r[9],
                       bool(r[10]), bool(r[11]), r[12], r[13])
            for r in rows
        ]

    def last_approved(self) -> BatchEntry | None:
        batch = self.open_batch()
        return batch[-1] if batch else None

    def entry_by_rrn(self, rrn: str) -> BatchEntry | None:
        """The newest recorded transaction with this RRN, in any batch this file kept."""
        found = self._entries("WHERE rrn = ? ORDER BY batch_number DESC, rowid DESC LIMIT 1", (rrn,))
        return found[0] if found else None

    # QR orders

    def qr_learned(self, order: QrOrder, paid: BatchEntry | None = None) -> None:
        """Keep what an answer said about an order (a query, a close, a refund), and let a payment newly known join
        its batch, in one commit. Sends nothing, owes nothing: an owed reversal stays owed."""
        _refuse_card_data(order.original)
        if paid is not None:
            _refuse_card_data(paid.original)
        with self._db:
            self._save_order(order)
            if paid is not None:
                known = self._db.execute(
                    "SELECT 1 FROM batch WHERE batch_number = ? AND stan = ?", (paid.batch_number, paid.stan)
                ).fetchone()
                if known is None:
                    self._insert_entry(paid)

    def _save_order(self, order: QrOrder) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO qr_order ({_ORDER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                order.order_no, order.kind, order.batch_number, order.stan, order.amount, order.currency, order.status,
                _dump(order.original), order.created.isoformat(), order.rrn, order.channel, order.wallet_txn_id,
                order.refunded, order.expires_at,
            ),
        )

    def qr_order(self, order_no: str) -> QrOrder | None:
        found = self._orders("WHERE order_no = ?", (order_no,))
        return found[0] if found else None

    def qr_orders(self, statuses: frozenset[str] | None = None, batch_number: int | None = None) -> list[QrOrder]:
        """Orders this file knows, oldest first: those in `statuses`, of `batch_number`, when given."""
        rows = self._orders("ORDER BY rowid", ())
        return [
            o for o in rows
            if (statuses is None or o.status in statuses) and (batch_number is None or o.batch_number == batch_number)
        ]

    def _orders(self, where: str, args: tuple[object, ...]) -> list[QrOrder]:
        rows = self._db.execute(f"SELECT {_ORDER_COLUMNS} FROM qr_order {where}", args).fetchall()
        return [
            QrOrder(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _load(r[7]), datetime.fromisoformat(r[8]), r[9], r[10],
                    r[11], r[12], r[13])
            for r in rows
        ]

    # advices

    def queue_advice(self, advice: Advice, entry: BatchEntry | None = None) -> Advice:
        """Keep an advice until answered (and, for an offline sale, its batch entry), in one commit."""
        _refuse_card_data(advice.message)
        if entry is not None:
            _refuse_card_data(entry.original)
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO advice (kind, batch_number, message, sealed_card, masked_pan, attempts, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    advice.kind, advice.batch_number, _dump(advice.message),
                    advice.sealed_card.hex().upper() if advice.sealed_card is not None else None,
                    advice.masked_pan, advice.attempts, advice.created.isoformat(),
                ),
            )
            if entry is not None:
                self._insert_entry(entry)
        return replace(advice, id=cursor.lastrowid)

    def queued_advices(self) -> list[Advice]:
        """Advices still waiting for an answer, oldest first."""
        return self._advices("WHERE response_code IS NULL ORDER BY id")

    def answered_advices(self) -> list[Advice]:
        """Advices the host answered, with its code, oldest first (their card data is gone)."""
        return self._advices("WHERE response_code IS NOT NULL ORDER BY id")

    def _advices(self, where: str) -> list[Advice]:
        rows = self._db.execute(f"SELECT {_ADVICE_COLUMNS} FROM advice {where}").fetchall()
        return [
            Advice(r[0], r[1], _load(r[2]), bytes.fromhex(r[3]) if r[3] else None, r[4], r[5],
                   datetime.fromisoformat(r[6]), r[7], r[8], r[9])
            for r in rows
        ]

    def advice_attempt(self, advice: Advice) -> None:
        """Record how often an advice may have reached the host; committed before the send it counts."""
        with self._db:
            self._db.execute("UPDATE advice SET attempts = ? WHERE id = ?", (advice.attempts, advice.id))

    def drop_advice(self, advice: Advice) -> None:
        """Forget an advice that never left (a refund whose host could not be reached)."""
        with self._db:
            self._db.execute("DELETE FROM advice WHERE id = ?", (advice.id,))

    def advice_answered(self, advice: Advice, code: str, rrn: str | None, entry: BatchEntry | None) -> None:
        """The host answered: keep its code, drop the sealed card data, and let an approved refund join the batch.

        An offline sale is already in the batch; it takes the host's RRN.
        """
        if entry is not None:
            _refuse_card_data(entry.original)
        with self._db:
            self._db.execute(
                "UPDATE advice SET response_code = ?, rrn = ?, sealed_card = NULL WHERE id = ?", (code, rrn, advice.id)
            )
            if entry is not None:
                self._insert_entry(entry)
            if rrn:
                self._db.execute(
                    "UPDATE batch SET rrn = ? WHERE batch_number = ? AND stan = ? AND rrn IS NULL",
                    (rrn, advice.batch_number, advice.stan),
                )

    # batch close

    def close_progress(self) -> CloseProgress:
        phase, balanced, code, stan = self._db.execute(
            "SELECT close_phase, close_balanced, close_code, close_stan FROM terminal"
        ).fetchone()
        return CloseProgress(phase, None if balanced is None else bool(balanced), code, stan)

    def save_close_progress(self, progress: CloseProgress) -> None:
        if progress.phase is not None and progress.phase not in CLOSE_PHASES:
            raise ValueError(f"close phase {progress.phase!r} must be one of {', '.join(CLOSE_PHASES)}")
        with self._db:
            self._db.execute(
                "UPDATE terminal SET close_phase = ?, close_balanced = ?, close_code = ?, close_stan = ?",
                (progress.phase, None if progress.balanced is None else int(progress.balanced), progress.response_code,
                 progress.stan),
            )

    def mark_uploaded(self, stans: list[str], uploaded: bool = True) -> None:
        """Flag records of the open batch as uploaded, committed before the 0320 carrying them leaves;
        `uploaded=False` takes the flag back when that 0320 could not be sent at all."""
        with self._db:
            self._db.executemany(
                "UPDATE batch SET uploaded = ? WHERE batch_number = ? AND stan = ?",
                [(int(uploaded), self.batch_number, stan) for stan in stans],
            )

    def finish_close(self) -> int:
        """The host closed the batch: the next one opens (number + 1) and the close is over. The old rows stay."""
        with self._db:
            self._db.execute("UPDATE terminal SET batch_number = batch_number % 999999 + 1, close_phase = NULL,"
                             " close_balanced = NULL, close_code = NULL, close_stan = NULL")
        return self.batch_number

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
        """The host took the reversal: forget it, and take the reversed transaction out of the batch
        (a reversed QR order is marked so: the host closed it, or refunded its wallet)."""
        with self._db:
            self._db.execute("DELETE FROM pending_reversal")
            row = self._db.execute(
                "SELECT original_stan FROM batch WHERE batch_number = ? AND stan = ?",
                (reversal.batch_number, reversal.original_stan),
            ).fetchone()
            if row is not None and row[0] is not None:  # a reversed void: its original stands again
                self._db.execute(
                    "UPDATE batch SET voided = 0 WHERE batch_number = ? AND stan = ?", (reversal.batch_number, row[0])
                )
            self._db.execute(
                "DELETE FROM batch WHERE batch_number = ? AND stan = ?", (reversal.batch_number, reversal.original_stan)
            )
            self._db.execute(
                "UPDATE qr_order SET status = 'reversed' WHERE batch_number = ? AND stan = ?"
                f" AND status IN ({', '.join('?' * len(_UNDONE_BY_REVERSAL))})",
                (reversal.batch_number, reversal.original_stan, *_UNDONE_BY_REVERSAL),
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
