"""The cards a terminal can be shown: fixture test cards by name, or a raw PAN.

The terminal does not judge a card (Luhn, expiry, status): deciding is the
host's job, and testers need bad cards to reach it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from possim.fixtures import load_fixture
from possim.wire.trace import mask_pan

DEFAULT_EXPIRY = "4912"
"""Expiry given to a raw PAN when none is said: far enough ahead never to decline by itself."""
DEFAULT_SERVICE_CODE = "101"
"""International card, normal authorization, no restrictions."""
DISCRETIONARY = "00000"
"""Track 2 discretionary data of a test card; fixed so tracks are reproducible."""

_PAN = re.compile(r"[0-9]{12,19}\Z")
_EXPIRY = re.compile(r"[0-9]{2}(0[1-9]|1[0-2])\Z")
_SERVICE_CODE = re.compile(r"[0-9]{3}\Z")


class CardError(ValueError):
    """A card that cannot be presented; the message names the card and what is wrong."""


@dataclass(frozen=True)
class Card:
    name: str
    pan: str = field(repr=False)
    """Kept out of repr so a logged Card never shows the full number."""
    expiry: str
    """YYMM."""
    service_code: str = DEFAULT_SERVICE_CODE
    pin: str | None = field(default=None, repr=False)
    """The PIN its cardholder knows (test cards only), for scripts that type the right one."""

    def __post_init__(self) -> None:
        if not _PAN.match(self.pan):
            raise CardError(f"card {self.name!r}: PAN must be 12 to 19 digits")
        if not _EXPIRY.match(self.expiry):
            raise CardError(f"card {self.name!r}: expiry {self.expiry!r} must be YYMM with a month 01-12")
        if not _SERVICE_CODE.match(self.service_code):
            raise CardError(f"card {self.name!r}: service code {self.service_code!r} must be 3 digits")

    @property
    def track2(self) -> str:
        """Track 2 as field 35 carries it: PAN, separator D, YYMM, service code, discretionary data."""
        return f"{self.pan}D{self.expiry}{self.service_code}{DISCRETIONARY}"

    @property
    def masked_pan(self) -> str:
        return mask_pan(self.pan)


def fixture_cards(fixtures_dir: str | Path | None = None) -> dict[str, Card]:
    """Every card of cards.yaml by name."""
    entries = load_fixture("cards.yaml", fixtures_dir).get("cards") or []
    cards = {}
    for entry in entries:
        if not isinstance(entry, dict) or not all(k in entry for k in ("name", "pan", "expiry")):
            raise CardError(f"cards.yaml: every card needs name, pan and expiry, got {entry!r:.60}")
        name = str(entry["name"])
        cards[name] = Card(
            name=name,
            pan=str(entry["pan"]),
            expiry=str(entry["expiry"]),
            service_code=str(entry.get("service_code", DEFAULT_SERVICE_CODE)),
            pin=str(entry["pin"]) if entry.get("pin") is not None else None,
        )
    return cards


def resolve_card(name_or_pan: str, fixtures_dir: str | Path | None = None, expiry: str | None = None,
                 cards: Mapping[str, Card] | None = None) -> Card:
    """A fixture card by name, or a card for a raw PAN (the fixture card when one has that PAN).

    `expiry` (YYMM) replaces the card's own; a raw PAN without one gets DEFAULT_EXPIRY. `cards`, when given,
    are cards.yaml already read: a caller resolving many cards reads the file once.
    """
    text = name_or_pan.strip()
    if cards is None:
        cards = fixture_cards(fixtures_dir)
    card = cards.get(text)
    digits = re.sub(r"[ -]", "", text)
    if card is None and digits.isdigit():
        text = digits
        if not _PAN.match(text):
            raise CardError(f"card number of {len(text)} digits: a PAN has 12 to 19 digits")
        card = next((c for c in cards.values() if c.pan == text), None)
        if card is None:
            card = Card(name="keyed", pan=text, expiry=expiry or DEFAULT_EXPIRY)
    if card is None:
        raise CardError(
            f"no card {text!r}: not a card in cards.yaml ({', '.join(cards)}) and not a PAN of 12 to 19 digits"
        )
    if expiry is not None and expiry != card.expiry:
        card = Card(card.name, card.pan, expiry, card.service_code, card.pin)
    return card
