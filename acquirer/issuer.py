"""The issuer stub: the banks behind the cards, standing in for the schemes
and issuers a real acquirer would route to.

Issuers, accounts (limits, currency, opening balances) come from
`accounts.yaml`, cards from `cards.yaml`. Running balances live in the
journal, so they survive restarts; this module only decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from possim.fixtures import FixtureError, fixture_path, load_fixture
from possim.hsm_mock.cipher import CryptoKeyError, double_length_key
from possim.hsm_mock.pinverify import DEFAULT_DECIMALIZATION_TABLE

from .pipeline import Decline

_STATUS = {
    "active": None,
    "lost": Decline("41", "card reported lost"),
    "stolen": Decline("43", "card reported stolen"),
    "restricted": Decline("57", "card restricted"),
    "blocked": Decline("05", "card blocked by the issuer"),
}


PIN_METHODS = ("visa-pvv", "ibm-3624")


@dataclass(frozen=True)
class PinPolicy:
    """How an issuer verifies online PINs.

    The keys are the clear test keys of the fixture, as a lab shares them;
    the host puts them under its LMK at start and from then on hands only
    those cryptograms to the HSM.
    """

    method: str
    """visa-pvv (PVV and PVKI on the card) or ibm-3624 (an offset on the card)."""
    pvk: bytes = field(repr=False)
    """PIN verification key: a double-length key (a Visa PVK pair, or an IBM PVK)."""
    zpk: bytes = field(repr=False)
    """Zone PIN key between acquirer and issuer: the host translates PIN blocks to it."""
    tries: int = 3
    """Wrong PINs allowed per card and business day; the one that reaches the limit gets 75."""
    decimalisation: str = DEFAULT_DECIMALIZATION_TABLE
    """IBM 3624 decimalisation table (16 digits)."""


@dataclass(frozen=True)
class Issuer:
    name: str
    bins: tuple[str, ...]
    online: bool = True
    pin: PinPolicy | None = None
    """None: this issuer verifies no PINs, and a PIN sent for its cards is declined 55."""


@dataclass(frozen=True)
class Card:
    name: str
    pan: str
    expiry: str
    service_code: str
    account_id: str
    status: str = "active"
    pvki: str | None = None
    pvv: str | None = None
    """Visa PIN verification value (4 digits) with its key index `pvki`."""
    pin_offset: str | None = None
    """IBM 3624 PIN offset (4 to 12 digits)."""


@dataclass(frozen=True)
class Account:
    id: str
    currency: str
    opening_balance: int
    per_transaction_limit: int | None = None


class IssuerStub:
    def __init__(self, issuers: list[Issuer], accounts: list[Account], cards: list[Card]):
        self._issuers = tuple(issuers)
        self._prefixes = sorted(((b, i) for i in issuers for b in i.bins), key=lambda p: -len(p[0]))
        self._accounts = {a.id: a for a in accounts}
        self._cards = {c.pan: c for c in cards}

    @classmethod
    def from_fixtures(cls, folder: str | Path | None = None) -> IssuerStub:
        raw = load_fixture("accounts.yaml", folder)
        source = fixture_path("accounts.yaml", folder)
        issuers = [_issuer(e, source) for e in _list(raw, "issuers", source)]
        accounts = [_account(e, source) for e in _list(raw, "accounts", source)]
        cards_source = fixture_path("cards.yaml", folder)
        cards = [_card(e, cards_source) for e in _list(load_fixture("cards.yaml", folder), "cards", cards_source)]
        known = {a.id for a in accounts}
        for card in cards:
            if card.account_id not in known:
                raise FixtureError(f"{cards_source}: card {card.name} names account {card.account_id}, which accounts.yaml does not define")
        return cls(issuers, accounts, cards)

    def issuers(self) -> tuple[Issuer, ...]:
        return self._issuers

    def accounts(self) -> list[Account]:
        return list(self._accounts.values())

    def card(self, pan: str) -> Card | None:
        return self._cards.get(pan)

    def account(self, account_id: str) -> Account | None:
        return self._accounts.get(account_id)

    def issuer_for(self, pan: str) -> Issuer | None:
        """The issuer whose longest BIN prefixes the PAN."""
        for prefix, issuer in self._prefixes:
            if pan.startswith(prefix):
                return issuer
        return None

    def availability(self, pan: str) -> Decline | None:
        """Can the request be routed at all: 15 no issuer for the BIN, 91 issuer down."""
        issuer = self.issuer_for(pan)
        if issuer is None:
            return Decline("15", f"no issuer for BIN {pan[:6]}")
        if not issuer.online:
            return Decline("91", f"issuer {issuer.name} is inoperative")
        return None

    def card_refusal(self, pan: str) -> Decline | None:
        """The issuer's view of the card: 14 unknown, or its status (41, 43, 57, 05)."""
        card = self._cards.get(pan)
        if card is None:
            return Decline("14", "no card on file for this PAN")
        return _STATUS[card.status]

    def account_refusal(self, account: Account, amount: int, currency: str) -> Decline | None:
        """Rules of the account itself: its currency (57) and per-transaction limit (61)."""
        if account.currency != currency:
            return Decline("57", f"account is in currency {account.currency}, transaction in {currency}")
        if account.per_transaction_limit is not None and amount > account.per_transaction_limit:
            return Decline("61", f"amount above the per-transaction limit of {account.per_transaction_limit}")
        return None

    @staticmethod
    def funds_refusal(balance: int, amount: int) -> Decline | None:
        if amount > balance:
            return Decline("51", "insufficient funds")
        return None


def _list(raw: dict[str, Any], key: str, source: Path) -> list[dict[str, Any]]:
    entries = raw.get(key)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FixtureError(f"{source}: `{key}` must be a list of mappings")
    return entries


def _need(entry: dict[str, Any], key: str, source: Path) -> Any:
    if entry.get(key) is None:
        raise FixtureError(f"{source}: an entry lacks `{key}`: {_describe(entry)}")
    return entry[key]


def _describe(entry: dict[str, Any]) -> str:
    """Name an entry in an error without printing a PAN."""
    return str(entry.get("name") or entry.get("id") or "(unnamed)")


def _whole(entry: dict[str, Any], key: str, source: Path) -> int:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise FixtureError(f"{source}: {_describe(entry)}: `{key}` must be a whole number of minor units, got {value!r}")
    return value


def _issuer(entry: dict[str, Any], source: Path) -> Issuer:
    bins = _need(entry, "bins", source)
    if not isinstance(bins, list) or not bins:
        raise FixtureError(f"{source}: issuer {_describe(entry)}: `bins` must be a non-empty list")
    name = str(_need(entry, "name", source))
    pin = _pin_policy(entry["pin"], f"{source}: issuer {name}: pin") if entry.get("pin") is not None else None
    return Issuer(name, tuple(str(b) for b in bins), bool(entry.get("online", True)), pin)


def _pin_policy(entry: Any, where: str) -> PinPolicy:
    if not isinstance(entry, dict):
        raise FixtureError(f"{where}: must be a mapping (method, pvk, zpk, tries)")
    method = str(entry.get("method", ""))
    if method not in PIN_METHODS:
        raise FixtureError(f"{where}: `method` must be one of {', '.join(PIN_METHODS)}")
    tries = entry.get("tries", 3)
    if isinstance(tries, bool) or not isinstance(tries, int) or tries < 1:
        raise FixtureError(f"{where}: `tries` must be a whole number of at least 1")
    table = str(entry.get("decimalisation", DEFAULT_DECIMALIZATION_TABLE))
    if len(table) != 16 or not table.isdigit():
        raise FixtureError(f"{where}: `decimalisation` must be 16 decimal digits")
    return PinPolicy(method, _test_key(entry, "pvk", where), _test_key(entry, "zpk", where), tries, table)


def _test_key(entry: dict[str, Any], key: str, where: str) -> bytes:
    """A clear double-length test key from a fixture; the error names the key, never its value."""
    try:
        return double_length_key(entry.get(key, ""), key)
    except CryptoKeyError as exc:
        raise FixtureError(f"{where}: {exc}") from None


def _account(entry: dict[str, Any], source: Path) -> Account:
    _need(entry, "balance", source)
    limit = _whole(entry, "per_transaction_limit", source) if entry.get("per_transaction_limit") is not None else None
    return Account(str(_need(entry, "id", source)), str(_need(entry, "currency", source)), _whole(entry, "balance", source), limit)


def _card(entry: dict[str, Any], source: Path) -> Card:
    status = str(entry.get("status", "active"))
    if status not in _STATUS:
        raise FixtureError(f"{source}: card {_describe(entry)}: status {status!r} is not one of {', '.join(_STATUS)}")
    pan = str(_need(entry, "pan", source))
    if not pan.isdigit():
        raise FixtureError(f"{source}: card {_describe(entry)}: `pan` must be digits")
    return Card(
        name=str(entry.get("name", "")),
        pan=pan,
        expiry=str(_need(entry, "expiry", source)),
        service_code=str(entry.get("service_code", "")),
        account_id=str(_need(entry, "account", source)),
        status=status,
        pvki=_digits(entry, "pvki", 1, 1, source),
        pvv=_digits(entry, "pvv", 4, 4, source),
        pin_offset=_digits(entry, "pin_offset", 4, 12, source),
    )


def _digits(entry: dict[str, Any], key: str, shortest: int, longest: int, source: Path) -> str | None:
    if entry.get(key) is None:
        return None
    value = str(entry[key])
    if not (value.isdigit() and shortest <= len(value) <= longest):
        size = f"{shortest}" if shortest == longest else f"{shortest} to {longest}"
        raise FixtureError(f"{source}: card {_describe(entry)}: `{key}` must be {size} digits")
    return value
