"""Settlement channels: who clears a transaction and pays for it.

A card payment settles through its scheme, read off the BIN the journal
keeps in the masked PAN; a QR payment through its wallet network. Fees,
batches and clearing files are all per channel, so the name is one string
used everywhere: `card:unionpay`, `qr:wechat`.
"""

from __future__ import annotations

CARD_SCHEMES = ("unionpay", "visa", "mastercard", "amex", "jcb", "other")
WALLETS = ("wechat", "alipay", "unionpay")
CHANNELS = tuple(f"card:{s}" for s in CARD_SCHEMES) + tuple(f"qr:{w}" for w in WALLETS)


def channel_of(masked_pan: str | None, wallet: str | None, qr: bool) -> str:
    """The channel of one journal row: its wallet network for a QR payment, else its card's scheme."""
    if qr:
        return f"qr:{wallet}" if wallet in WALLETS else "qr:unionpay"
    return f"card:{card_scheme(masked_pan or '')}"


def card_scheme(pan: str) -> str:
    """The scheme by the leading digits (IIN ranges as the schemes publish them)."""
    if pan.startswith("62"):
        return "unionpay"
    if pan.startswith("4"):
        return "visa"
    two = int(pan[:2]) if pan[:2].isdigit() else 0
    four = int(pan[:4]) if pan[:4].isdigit() else 0
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "mastercard"
    if two in (34, 37):
        return "amex"
    if 3528 <= four <= 3589:
        return "jcb"
    return "other"
