"""What a terminal remembers, as one JSON-ready dict: `possim pos status` prints it and replay's `terminal` and
`batch` checks read it, so a scenario checks exactly what a tester sees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .batch import batch_totals
from .messages import OPEN_ORDER
from .profile import TerminalProfile
from .state import TerminalState


def terminal_status(profile: TerminalProfile, state: TerminalState, path: Path) -> dict[str, Any]:
    """Last STAN, batch, sign-on, the open batch with its totals, open QR orders, the owed reversal, queued
    advices and a batch close under way. Reads only; masked PANs only."""
    batch = state.open_batch()
    owed = state.pending_reversal()
    totals = batch_totals(profile.load_dialect(), batch).combined
    progress = state.close_progress()
    return {
        "tid": profile.tid,
        "state": str(path.resolve()),
        "last_stan": f"{state.last_stan:06d}",
        "batch_number": f"{state.batch_number:06d}",
        "signed_on": state.signed_on_date.isoformat() if state.signed_on_date else None,
        "open_batch": {
            "count": len(batch),
            "currency": profile.currency,
            "debit_count": totals.debit_count, "debit_amount": totals.debit_amount,
            "credit_count": totals.credit_count, "credit_amount": totals.credit_amount,
            "transactions": [
                {"kind": e.kind, "stan": e.stan, "rrn": e.rrn, "auth_code": e.auth_code, "amount": e.amount,
                 "currency": e.currency, "masked_pan": e.masked_pan, "time": e.time.isoformat(), "voided": e.voided,
                 "order_no": e.order_no}
                for e in batch
            ],
        },
        "open_qr_orders": [
            {"order_no": o.order_no, "kind": o.kind, "stan": o.stan, "amount": o.amount, "currency": o.currency,
             "status": o.status}
            for o in state.qr_orders(OPEN_ORDER)
        ],
        "pending_reversal": None if owed is None else {
            "original_stan": owed.original_stan, "reason": owed.reason, "attempts": owed.attempts,
            "amount": int(owed.original[4]) if 4 in owed.original else None, "masked_pan": owed.masked_pan,
        },
        "queued_advices": [
            {"kind": a.kind, "stan": a.message.get(11), "attempts": a.attempts, "masked_pan": a.masked_pan,
             "amount": int(a.message[4]) if 4 in a.message else None}
            for a in state.queued_advices()
        ],
        "batch_close_in_progress": progress.phase,
    }
