"""The settlement state cut-over gives every journal row: exactly one each.

The state says what the row means for the day's money, whatever happens to
the row later: a sale reversed after cut-over stays `settled` (its merchant
was paid; reconciliation adjusts it), which is why the state is stored
instead of being read off the status each time.
"""

from __future__ import annotations

from possim.acquirer.journal import APPROVED, CLOSED, DECLINED, ORPHAN_REVERSAL, PENDING, REVERSED, VOIDED

SETTLED = "settled"
"""In a settlement batch: a debit (the merchant is owed) or a credit (the merchant pays back)."""
STATE_REVERSED = "reversed"
STATE_VOIDED = "voided"
VOID = "void"
"""A void of a payment of the same day: it and its payment cancel out, neither is settled."""
STATE_DECLINED = "declined"
NO_FUNDS = "no_funds_moved"
"""Balance inquiries, pre-authorizations and their voids, QR queries and closes, orders closed unpaid."""
STATE_ORPHAN = "orphan_reversal"
CARRIED = "carried"
"""A QR payment still waiting for the payer at cut-over: the next cut-over settles it once it is decided."""
STATES = (SETTLED, STATE_REVERSED, STATE_VOIDED, VOID, STATE_DECLINED, NO_FUNDS, STATE_ORPHAN, CARRIED)

DEBIT_KINDS = frozenset({"sale", "completion", "offline", "qr_order", "qr_sale", "fee_payment"})
CREDIT_KINDS = frozenset({"refund", "qr_refund"})
VOID_KINDS = frozenset({"sale_void", "completion_void"})
QR_KINDS = frozenset({"qr_order", "qr_sale", "qr_refund", "qr_query", "qr_close"})

DEBIT, CREDIT = "D", "C"


def settlement_state(kind: str | None, status: str, original_settled_earlier: bool) -> tuple[str, str | None]:
    """(state, sign) of a row at cut-over; sign is D or C for a settled row, else None.

    `original_settled_earlier`: for a void, whether the payment it voids was
    settled on an earlier date — then the void is money back, a credit.
    """
    if status == DECLINED:
        return STATE_DECLINED, None
    if status == ORPHAN_REVERSAL:
        return STATE_ORPHAN, None
    if status == PENDING:
        return CARRIED, None
    if status == CLOSED:
        return NO_FUNDS, None
    if kind in DEBIT_KINDS:
        return {APPROVED: (SETTLED, DEBIT), REVERSED: (STATE_REVERSED, None),
                VOIDED: (STATE_VOIDED, None)}.get(status, (NO_FUNDS, None))
    if kind in CREDIT_KINDS:
        return (SETTLED, CREDIT) if status == APPROVED else (STATE_REVERSED, None)
    if kind in VOID_KINDS and status == APPROVED:
        return (SETTLED, CREDIT) if original_settled_earlier else (VOID, None)
    if kind in VOID_KINDS and status == REVERSED:
        return STATE_REVERSED, None
    return NO_FUNDS, None


def sql_list(kinds: frozenset[str]) -> str:
    """The kinds as an SQL list, for the statements that sort rows by side."""
    return "(" + ", ".join(f"'{k}'" for k in sorted(kinds)) + ")"
