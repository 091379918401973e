"""The wallet networks stub: the providers behind scanned payment codes, as
issuer.py stands in for the card issuers.

Providers and accounts come from `wallets.yaml`. A payment code names its
provider by its prefix and its account by the number inside it, and proves
itself with the TOTP the account's secret makes (wire/payment_code.py).
Running balances live in the journal (`journal_account_id`), so this module
only decides.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from possim.fixtures import FixtureError, fixture_path, load_fixture
from possim.wire import payment_code
from possim.wire.money import currency as find_currency

WALLETS_FILE = "wallets.yaml"
UNKNOWN_CODE = "14"
"""An unreadable, expired or unknown payment code: the card world's "invalid card number"."""
REASONS = {
    "62": "wallet account frozen",
    "57": "wallet account holds another currency",
    "51": "insufficient wallet balance",
}
"""Why `decide` refused, by the code it returned, for journal and logs."""
TXN_SEQUENCE_DIGITS = 12

_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_PASSWORD_DIGITS = 6
_MIN_SECRET_BYTES = 16
"""RFC 4226 section 4: a shared secret of at least 128 bits (160 recommended)."""


class WalletDecline(Exception):
    """A wallet network's refusal: the ISO 8583 response code and why (never the code scanned)."""

    def __init__(self, code: str, reason: str):
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


@dataclass(frozen=True)
class WalletProvider:
    channel: str
    """wechat, alipay or unionpay: the scheme of wire/payment_code.py whose codes it answers."""
    name: str
    txn_prefix: str


@dataclass(frozen=True)
class WalletAccount:
    name: str
    provider: str
    """The provider's channel."""
    number: str
    """The 6 digits a payment code carries after its prefix."""
    currency: str
    opening_balance: int
    password_above: int
    """A payment above this many minor units waits for the payer's password."""
    frozen: bool
    secret: bytes = field(repr=False, compare=False)
    """TOTP key: the wallet app makes codes with it, the network checks them; never logged."""
    password: str = field(repr=False, compare=False)
    """Read only through WalletNetwork.check_password; never logged."""

    @property
    def journal_account_id(self) -> str:
        return f"wallet:{self.name}"


class WalletNetwork:
    def __init__(self, providers: list[WalletProvider], accounts: list[WalletAccount]):
        self._providers = {p.channel: p for p in providers}
        self._accounts = {a.name: a for a in accounts}
        self._by_number = {(a.provider, a.number): a for a in accounts}

    @classmethod
    def from_fixtures(cls, folder: str | Path | None = None) -> WalletNetwork:
        raw = load_fixture(WALLETS_FILE, folder)
        source = fixture_path(WALLETS_FILE, folder)
        providers = [_provider(channel, entry, source) for channel, entry in _mapping(raw, "providers", source).items()]
        known = {p.channel for p in providers}
        accounts = [_account(name, entry, known, source) for name, entry in _mapping(raw, "accounts", source).items()]
        owners: dict[tuple[str, str], str] = {}
        for account in accounts:
            other = owners.setdefault((account.provider, account.number), account.name)
            if other != account.name:
                raise FixtureError(
                    f"{source}: accounts.{account.name}.number: {account.provider} account {other} has the same number"
                )
        return cls(providers, accounts)

    def accounts(self) -> list[WalletAccount]:
        return list(self._accounts.values())

    def account(self, name: str) -> WalletAccount | None:
        return self._accounts.get(name)

    def provider(self, channel: str) -> WalletProvider | None:
        return self._providers.get(channel)

    def account_for_code(self, code: str, at: datetime) -> WalletAccount:
        """The account whose wallet showed `code` within a step of `at`; else WalletDecline 14."""
        try:
            parts = payment_code.read(code)
        except payment_code.PaymentCodeError as error:
            raise WalletDecline(UNKNOWN_CODE, f"unreadable payment code: {error}") from None
        if parts.channel not in self._providers:
            raise WalletDecline(UNKNOWN_CODE, f"no {parts.channel} wallet network is configured")
        account = self._by_number.get((parts.channel, parts.account_number))
        if account is None:
            raise WalletDecline(UNKNOWN_CODE, f"no {parts.channel} wallet account has the number in the code")
        if not payment_code.verify(code, account.secret, at, window=1):
            raise WalletDecline(UNKNOWN_CODE, f"payment code expired or not made by wallet {account.name}")
        return account

    @staticmethod
    def check_password(account: WalletAccount, password: str) -> bool:
        return hmac.compare_digest(account.password.encode("utf-8"), password.encode("utf-8"))

    @staticmethod
    def needs_password(account: WalletAccount, amount: int) -> bool:
        return amount > account.password_above

    @staticmethod
    def decide(account: WalletAccount, amount: int, currency: str, balance: int) -> str | None:
        """None when the account can pay `amount`, else the response code (see REASONS)."""
        if account.frozen:
            return "62"
        if account.currency != currency:
            return "57"
        if amount > balance:
            return "51"
        return None

    def txn_id(self, provider: str, at: datetime, sequence: int) -> str:
        """The provider's transaction ID: its txn_prefix, YYYYMMDD of `at`, the 12-digit sequence."""
        found = self._providers.get(provider)
        if found is None:
            raise ValueError(f"no wallet provider {provider!r}")
        if not 0 <= sequence < 10**TXN_SEQUENCE_DIGITS:
            raise ValueError(f"sequence must be 0 to {10**TXN_SEQUENCE_DIGITS - 1}, got {sequence}")
        return f"{found.txn_prefix}{at:%Y%m%d}{sequence:0{TXN_SEQUENCE_DIGITS}d}"


def _mapping(raw: dict[str, Any], key: str, source: Path) -> dict[str, Any]:
    entries = raw.get(key)
    if not isinstance(entries, dict) or not entries or not all(isinstance(e, dict) for e in entries.values()):
        raise FixtureError(f"{source}: `{key}` must be a non-empty mapping of names to mappings")
    return entries


def _need(entry: dict[str, Any], key: str, where: str) -> Any:
    if entry.get(key) is None:
        raise FixtureError(f"{where}: lacks `{key}`")
    return entry[key]


def _provider(channel: Any, entry: dict[str, Any], source: Path) -> WalletProvider:
    where = f"{source}: providers.{channel}"
    if channel not in payment_code.CHANNELS:
        raise FixtureError(f"{where}: not a payment code channel; one of {', '.join(payment_code.CHANNELS)}")
    prefix = str(_need(entry, "txn_prefix", where))
    if not _DIGITS.fullmatch(prefix):
        raise FixtureError(f"{where}.txn_prefix: must be digits")
    return WalletProvider(channel, str(_need(entry, "name", where)), prefix)


def _account(name: Any, entry: dict[str, Any], providers: set[str], source: Path) -> WalletAccount:
    where = f"{source}: accounts.{name}"
    provider = str(_need(entry, "provider", where))
    if provider not in providers:
        raise FixtureError(f"{where}.provider: {provider!r} is not in `providers` ({', '.join(sorted(providers))})")
    number = str(_need(entry, "number", where))
    if len(number) != payment_code.ACCOUNT_DIGITS or not _DIGITS.fullmatch(number):
        raise FixtureError(f"{where}.number: must be {payment_code.ACCOUNT_DIGITS} digits (quote it in YAML)")
    currency = str(_need(entry, "currency", where))
    if len(currency) != 3 or not _DIGITS.fullmatch(currency):
        raise FixtureError(f"{where}.currency: must be a 3-digit ISO 4217 numeric code, e.g. \"156\"")
    try:
        find_currency(currency)
    except ValueError:
        raise FixtureError(f"{where}.currency: {currency} is not a known ISO 4217 currency") from None
    password = str(_need(entry, "password", where))
    if len(password) != _PASSWORD_DIGITS or not _DIGITS.fullmatch(password):
        raise FixtureError(f"{where}.password: must be {_PASSWORD_DIGITS} digits (quote it in YAML)")
    secret = str(_need(entry, "secret", where))
    if not _HEX.fullmatch(secret) or len(secret) < 2 * _MIN_SECRET_BYTES:
        raise FixtureError(f"{where}.secret: must be hex of at least {_MIN_SECRET_BYTES} bytes")
    frozen = entry.get("frozen", False)
    if not isinstance(frozen, bool):
        raise FixtureError(f"{where}.frozen: must be true or false")
    return WalletAccount(
        name=str(name),
        provider=provider,
        number=number,
        currency=currency,
        opening_balance=_whole(entry, "balance", where),
        password_above=_whole(entry, "password_above", where),
        frozen=frozen,
        secret=bytes.fromhex(secret),
        password=password,
    )


def _whole(entry: dict[str, Any], key: str, where: str) -> int:
    value = _need(entry, key, where)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FixtureError(f"{where}.{key}: must be a whole number of minor units ≥ 0, got {value!r}")
    return value
