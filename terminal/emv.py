"""The chip data a chip or contactless read puts in field 55: EMV tags as BER-TLV.

possim's cards are not real ICCs, so the terminal plays the card's part too:
it makes the application cryptogram (9F26) itself. The cryptogram is
deterministic — SHA-256 over the card's PAN and the transaction data the
card would sign (amount, other amount, country, TVR, currency, date, type,
unpredictable number, AIP, ATC), first 8 bytes — so a test can recompute it,
but it is NOT an ARQC an issuer could verify: no issuer master key is
involved, and the host must not treat it as one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date

from possim.wire import tlv

from .cards import Card

CID_ARQC = "80"
"""9F27: the card asks to go online (authorization request cryptogram)."""
CID_TC = "40"
"""9F27: the card approves offline (transaction certificate)."""
TERMINAL_COUNTRY = "0156"
"""9F1A: China, as the lab's terminals are."""
AIP = "7C00"
"""82: SDA, DDA, cardholder verification, terminal risk management, issuer authentication."""
IAD = "07010103A00000"
"""9F10: issuer application data in the common 7-byte layout (length, key index, CVN, CVR); fixed."""
PAN_SEQUENCE = "01"
"""5F34: the card's PAN sequence number; field 23 carries it as 001."""
TVR_ONLINE = "0000008000"
"""95: 'transaction exceeds floor limit' — why the terminal went online."""
TVR_OFFLINE = "0000000000"
CVM_ONLINE_PIN = "420300"
"""9F34: enciphered PIN verified online, if terminal supports the CVM, result unknown."""
CVM_NONE = "1F0302"
"""9F34: no CVM required, always, successful."""
ATC_LIMIT = 0xFFFF

AIDS = (
    ("62", "A000000333010101"),  # UnionPay debit/credit
    ("4", "A0000000031010"),  # Visa credit/debit
    ("5", "A0000000041010"),  # Mastercard credit/debit
)
DEFAULT_AID = AIDS[0][1]
"""A BIN of no listed scheme is read with the domestic (UnionPay) application: the host judges the card."""


@dataclass(frozen=True)
class ChipRead:
    """What the terminal knows of one chip transaction, besides the card."""

    amount: int
    currency: str
    """ISO 4217 numeric, 3 digits (5F2A carries it as 4)."""
    day: date
    transaction_type: str
    """9C: the first two digits of the processing code."""
    unpredictable_number: bytes
    """9F37: 4 bytes from the terminal's random source."""
    atc: int
    """9F36: the card's application transaction counter."""
    pin: bool
    """Whether an online PIN goes with it (9F34, 9F33)."""
    pin_pad: bool
    offline: bool = False
    """Approved by the card offline: 9F27 = TC and a clean TVR, else ARQC."""


def aid_for(pan: str) -> str:
    for prefix, aid in AIDS:
        if pan.startswith(prefix):
            return aid
    return DEFAULT_AID


def terminal_capabilities(pin_pad: bool) -> str:
    """9F33: manual key entry, magstripe, IC; enciphered PIN online (with a PIN pad), signature, no CVM; SDA, DDA, CDA."""
    return "E0" + ("68" if pin_pad else "28") + "C8"


def cryptogram_input(card: Card, read: ChipRead, tvr: str) -> bytes:
    """The bytes the lab cryptogram hashes: the PAN, then the CDOL1-style transaction data."""
    data = (
        f"{read.amount:012d}" + "0" * 12 + TERMINAL_COUNTRY + tvr + read.currency.rjust(4, "0")
        + read.day.strftime("%y%m%d") + read.transaction_type
    )
    return card.pan.encode() + bytes.fromhex(data) + read.unpredictable_number + bytes.fromhex(AIP) + read.atc.to_bytes(2, "big")


def application_cryptogram(card: Card, read: ChipRead, tvr: str) -> bytes:
    return hashlib.sha256(cryptogram_input(card, read, tvr)).digest()[:8]


def chip_data(card: Card, read: ChipRead) -> bytes:
    """Field 55 for `read` of `card`: the tags of docs/transactions.md's chip entry, BER-TLV encoded."""
    if len(read.unpredictable_number) != 4:
        raise ValueError(f"unpredictable number is {len(read.unpredictable_number)} bytes; 9F37 needs 4")
    if not 0 <= read.atc <= ATC_LIMIT:
        raise ValueError(f"ATC {read.atc} does not fit 9F36 (2 bytes)")
    tvr = TVR_OFFLINE if read.offline else TVR_ONLINE
    aid = bytes.fromhex(aid_for(card.pan))
    items = [
        ("9F26", application_cryptogram(card, read, tvr)),
        ("9F27", bytes.fromhex(CID_TC if read.offline else CID_ARQC)),
        ("9F10", bytes.fromhex(IAD)),
        ("9F37", read.unpredictable_number),
        ("9F36", read.atc.to_bytes(2, "big")),
        ("95", bytes.fromhex(tvr)),
        ("9A", bytes.fromhex(read.day.strftime("%y%m%d"))),
        ("9C", bytes.fromhex(read.transaction_type)),
        ("9F02", bytes.fromhex(f"{read.amount:012d}")),
        ("9F03", bytes(6)),
        ("5F2A", bytes.fromhex(read.currency.rjust(4, "0"))),
        ("82", bytes.fromhex(AIP)),
        ("9F1A", bytes.fromhex(TERMINAL_COUNTRY)),
        ("9F33", bytes.fromhex(terminal_capabilities(read.pin_pad))),
        ("9F34", bytes.fromhex(CVM_ONLINE_PIN if read.pin else CVM_NONE)),
        ("84", aid),
        ("4F", aid),
        ("5F34", bytes.fromhex(PAN_SEQUENCE)),
    ]
    return tlv.encode(items)
