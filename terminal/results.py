"""What the terminal's operations report, and the errors they raise: shared by every flow module."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from possim.wire.batch_totals import BatchTotals


class TerminalError(Exception):
    """A request the terminal will not make; the message says why."""


class Unreadable(Exception):
    """An answer arrived but cannot be taken as the answer: undecodable, or to another request."""


@dataclass(frozen=True)
class ReversalOutcome:
    """What became of a reversal the terminal owed."""

    original_stan: str
    stan: str | None
    """The reversal's own STAN (the original's in dialects that reuse it)."""
    reason: str
    """Field 39 it was sent with: 98 no answer, 96 unreadable answer, 17 cancelled."""
    acknowledged: bool
    """The host answered 0410 with 00: the reversal is done and forgotten."""
    attempts: int
    """Times it has reached the wire, in this and earlier runs."""
    mti: str | None
    """The last MTI sent: 0400, or 0401 for a repeat."""
    response_code: str | None
    timed_out: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AdviceOutcome:
    """What became of one queued advice in a round of sending."""

    kind: str
    stan: str
    answered: bool
    """The host answered (any code): the advice is done and its card data gone."""
    response_code: str | None
    attempts: int
    """Times it may have reached the host, in this and earlier runs."""
    mti: str | None
    """The last MTI sent: 0220, or 0221 for a repeat; None when it could not be sent."""
    timed_out: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AdviceRun:
    """The result of `send_advices`."""

    tid: str
    advices: tuple[AdviceOutcome, ...]
    remaining: int
    """Advices still queued afterwards."""
    prior_reversal: ReversalOutcome | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TransactionResult:
    operation: str
    """signon, reversal, or a transaction kind: sale, sale_void, refund, preauth, ..., balance, offline."""
    tid: str
    request_mti: str
    mti: str | None
    """The answer's MTI; None when no readable answer came."""
    stan: str | None
    response_code: str | None
    approved: bool
    rrn: str | None
    auth_code: str | None
    amount: int | None
    """Minor units of `currency`."""
    currency: str | None
    masked_pan: str | None
    message: str
    timed_out: bool
    sent: bool
    """False when the request never left (a reversal still owed blocked it)."""
    reversal: ReversalOutcome | None = None
    """The reversal this request caused (no answer in time, unreadable answer) or was."""
    prior_reversal: ReversalOutcome | None = None
    """A reversal still owed from before, sent ahead of this request."""
    balance: int | None = None
    """A balance inquiry's available balance in minor units (field 54; negative for D)."""
    queued: bool = False
    """The transaction waits in the advice queue: an offline sale, or a refund whose answer did not come."""
    prior_advices: tuple[AdviceOutcome, ...] = ()
    """Queued advices sent ahead of this request."""
    order_no: str | None = None
    """QR: the host's order number (the order a qr_order or qr_sale made, or the one a request names)."""
    status: str | None = None
    """QR: the order's state as the answer gives it: created, paying, paid, closed, refunded, reversed."""
    channel: str | None = None
    """QR: the wallet that paid (wechat, alipay, unionpay)."""
    wallet_txn_id: str | None = None
    """QR: the wallet's transaction ID of the payment."""
    payload: str | None = None
    """QR: the EMV merchant-presented payload to show while the order is open."""
    expires_at: str | None = None
    """QR: when an open order stops being payable (ISO 8601, the host's local time)."""
    refunded: int | None = None
    """QR: minor units refunded on the order so far."""
    notice: dict[str, Any] | None = None
    """Fees: the payment notice as the host read it from the finance system (pay_code, agency_code,
    agency_name, payer_name, amount_due, due_date, notice_status, items; confirm_no once confirmed)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (pass it to json.dumps). A result about no QR order leaves the QR keys out, and one
        about no payment notice the notice, so card results read as they always did."""
        data = asdict(self)
        if all(data[key] is None for key in QR_FIELDS):
            for key in QR_FIELDS:
                del data[key]
        if data["notice"] is None:
            del data["notice"]
        return data


QR_FIELDS = ("order_no", "status", "channel", "wallet_txn_id", "payload", "expires_at", "refunded")
"""The TransactionResult fields only QR operations fill."""


@dataclass(frozen=True)
class BatchCloseResult:
    """What `batch_close` did. `closed` False means: call it again, it resumes."""

    tid: str
    batch_number: int
    """The batch being closed."""
    closed: bool
    balanced: bool | None
    """The host's verdict on the totals; None before it gave one."""
    response_code: str | None
    """The answer to the totals 0500 (or to the last message when that failed)."""
    already_closed: bool
    """The host said the batch number was closed already (80); the terminal moved on too."""
    totals: BatchTotals
    uploaded: int
    """Records uploaded by this call."""
    upload_messages: int
    """Upload 0320s with records sent by this call."""
    upload_total: int
    """Records of the batch flagged as uploaded, in this and earlier calls."""
    next_batch_number: int | None
    message: str
    timed_out: bool = False
    prior_reversal: ReversalOutcome | None = None
    prior_advices: tuple[AdviceOutcome, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
