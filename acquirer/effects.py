"""What an approved transaction does to the books, and what its reversal undoes.

Kept apart from the flow in core.py because every kind differs only here
(docs/transactions.md, "What the host posts"). `posted_amount` on a
transaction row is what it took from the account (negative when it gave
back), so a reversal gives back exactly that; what it did to its original
or to a hold is undone by `reversal_effects`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from .journal import APPROVED, COMPLETED, EXPIRED, HELD, RELEASED, VOIDED, Hold, Posting, Transaction
from .pipeline import Context


@dataclass(frozen=True)
class Effects:
    posted: int = 0
    """What the transaction takes from the account (negative: gives back)."""
    postings: tuple[Posting, ...] = ()
    updates: tuple[Transaction, ...] = ()
    """Other rows it changes: the original it voids or refunds."""
    holds: tuple[Hold, ...] = ()


def approved_effects(ctx: Context, at: str, hold_for: timedelta) -> Effects:
    """The books after approving `ctx`'s request (its kind, account, original and hold are known)."""
    kind, account, amount = ctx.kind.name if ctx.kind else "", ctx.account, ctx.amount or 0
    if account is None or kind in ("balance", "authorization"):
        return Effects()
    if kind in ("sale", "offline", "fee_payment"):
        return Effects(amount, (Posting(account.id, -amount),))
    if kind == "preauth":
        expires = _stamp(ctx.now + hold_for)
        return Effects(amount, (Posting(account.id, -amount),), holds=(Hold(None, account.id, amount, expires, HELD, at),))
    original, hold = ctx.original, ctx.hold
    assert original is not None
    if kind == "completion":
        assert hold is not None
        return Effects(amount, (Posting(account.id, hold.amount - amount),),
                       holds=(dataclasses.replace(hold, state=COMPLETED, updated_at=at),))
    if kind == "preauth_void":
        assert hold is not None
        voided = dataclasses.replace(original, status=VOIDED, updated_at=at)
        return Effects(-hold.amount, (Posting(account.id, hold.amount),), (voided,),
                       (dataclasses.replace(hold, state=RELEASED, updated_at=at),))
    if kind in ("sale_void", "completion_void"):
        voided = dataclasses.replace(original, status=VOIDED, updated_at=at)
        given = original.amount or 0
        return Effects(-given, (Posting(account.id, given),), (voided,))
    if kind == "refund":
        refunded = dataclasses.replace(original, refunded_amount=original.refunded_amount + amount, updated_at=at)
        return Effects(-amount, (Posting(account.id, amount),), (refunded,))
    raise ValueError(f"no effects defined for transaction kind {kind!r}")


def reversal_effects(
    reversed_txn: Transaction, original: Transaction | None, hold: Hold | None, at: str
) -> tuple[tuple[Posting, ...], tuple[Transaction, ...], tuple[Hold, ...]]:
    """What reversing `reversed_txn` undoes besides its own posting: its original's state and its hold.

    `original` is the row `reversed_txn` refers to (a void's sale, a completion's pre-auth), `hold`
    the hold involved (a pre-auth's own, or the one a completion or pre-auth void acted on).
    """
    kind = reversed_txn.kind
    postings: list[Posting] = []
    updates: list[Transaction] = []
    holds: list[Hold] = []
    if kind in ("sale_void", "completion_void", "preauth_void") and original is not None and original.status == VOIDED:
        updates.append(dataclasses.replace(original, status=APPROVED, updated_at=at))
    if kind == "refund" and original is not None:
        updates.append(dataclasses.replace(
            original, refunded_amount=max(0, original.refunded_amount - (reversed_txn.amount or 0)), updated_at=at,
        ))
    if hold is not None:
        if kind == "preauth" and hold.state == HELD:
            holds.append(dataclasses.replace(hold, state=RELEASED, updated_at=at))
        elif kind == "preauth_void" and hold.state == RELEASED:
            holds.append(dataclasses.replace(hold, state=HELD, updated_at=at))  # its own posting re-takes the amount
        elif kind == "completion" and hold.state == COMPLETED:
            holds.append(dataclasses.replace(hold, state=HELD, updated_at=at))
            postings.append(Posting(hold.account_id, -hold.amount))  # its own posting gave back only what it took
    return tuple(postings), tuple(updates), tuple(holds)


def expiry_effects(holds: list[Hold], at: str) -> tuple[tuple[Posting, ...], tuple[Hold, ...]]:
    """Holds whose time is up go back to their accounts."""
    return (
        tuple(Posting(h.account_id, h.amount) for h in holds),
        tuple(dataclasses.replace(h, state=EXPIRED, updated_at=at) for h in holds),
    )


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")
