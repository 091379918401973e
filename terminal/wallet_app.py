"""The customer's wallet app: shows a payment code for the POS to scan, and pays a merchant's QR code.

The other device at the counter, simulated beside the POS terminal. Like a
real wallet it makes payment codes offline (a time-based one-time code
bound to the account: wire/payment_code.py) and reaches its wallet network
only to pay a scanned merchant code or to confirm a payment with its
password — here through the host's wallet entry (docs/openapi.yaml,
/wallet/v1), signed with the account's secret. It knows its own account
from `wallets.yaml`, as an app knows the account it is logged into; it never
sees another account or any balance but its own.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from possim.fixtures import FixtureError, fixture_path, load_fixture
from possim.wire.clock import Clock, system_clock
from possim.wire.payment_code import generate
from possim.wire.qr_image import read_qr_png
from possim.wire.signed_http import HttpApiError, SignedClient

WALLET_CALLER = "wallet:"


class WalletAppError(Exception):
    """What the app would show as an error: unknown account, unreadable code, a refusal from the network."""


@dataclass(frozen=True)
class WalletLogin:
    """The account the app is logged into."""

    name: str
    channel: str
    number: str
    currency: str
    secret: bytes = field(repr=False)


def login(name: str, fixtures: str | Path | None = None) -> WalletLogin:
    source = fixture_path("wallets.yaml", fixtures)
    accounts = load_fixture("wallets.yaml", fixtures).get("accounts") or {}
    entry = accounts.get(name) if isinstance(accounts, dict) else None
    if not isinstance(entry, dict):
        known = ", ".join(sorted(accounts)) if isinstance(accounts, dict) else ""
        raise WalletAppError(f"no wallet account {name!r} in {source} (accounts: {known})")
    secret = str(entry.get("secret", ""))
    if not re.fullmatch(r"(?:[0-9A-Fa-f]{2}){16,}", secret):
        raise FixtureError(f"{source}: accounts.{name}.secret must be hex of at least 16 bytes")
    return WalletLogin(name, str(entry.get("provider")), str(entry.get("number")), str(entry.get("currency", "156")),
                       bytes.fromhex(secret))


def payment_code(account: WalletLogin, at: datetime) -> str:
    """The code the app shows now: valid for this 30-second step and the next."""
    return generate(account.channel, account.number, account.secret, at)


def scanned_payload(text_or_png: str) -> str:
    """The payload of a merchant code: the text itself, or read from a PNG file by the phone's camera (zxing-cpp)."""
    path = Path(text_or_png)
    if text_or_png.lower().endswith(".png") or (len(text_or_png) < 4096 and path.is_file()):
        if not path.is_file():
            raise WalletAppError(f"no image file {text_or_png}")
        try:
            return read_qr_png(path.read_bytes())
        except ValueError as exc:
            raise WalletAppError(f"{text_or_png}: {exc}") from None
    return text_or_png


class WalletApp:
    def __init__(self, account: WalletLogin, network: str, clock: Clock = system_clock,
                 rng: random.Random | None = None):
        """`network` is the host's HTTP address (host:port or a URL) where the wallet network answers."""
        base = network if network.startswith(("http://", "https://")) else f"http://{network}"
        self.account = account
        self.client = SignedClient(base, WALLET_CALLER + account.name, account.secret, clock, rng)

    def pay(self, payload: str, amount: int | None = None, password: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"payload": payload}
        if amount is not None:
            body["amount"] = amount
        if password is not None:
            body["password"] = password
        return self._answer(self.client.post("/wallet/v1/payments", body))

    def waiting(self) -> list[dict[str, Any]]:
        """Payments of this account waiting for its password (a POS scanned its code for a large amount)."""
        return list(self._answer(self.client.get("/wallet/v1/payments")).get("payments", []))

    def confirm(self, password: str, wallet_txn_id: str | None = None) -> dict[str, Any]:
        """Type the password for the waiting payment (the only one, or the one named)."""
        if wallet_txn_id is None:
            waiting = self.waiting()
            if not waiting:
                raise WalletAppError(f"wallet {self.account.name} has no payment waiting for its password")
            if len(waiting) > 1:
                ids = ", ".join(p["wallet_txn_id"] for p in waiting)
                raise WalletAppError(f"wallet {self.account.name} has {len(waiting)} payments waiting ({ids}): name one")
            wallet_txn_id = waiting[0]["wallet_txn_id"]
        return self._answer(self.client.post(f"/wallet/v1/payments/{wallet_txn_id}/confirm", {"password": password}))

    def balance(self) -> dict[str, Any]:
        return self._answer(self.client.get("/wallet/v1/balance"))

    def _answer(self, answer: Any) -> dict[str, Any]:
        try:
            value = answer.json()
        except HttpApiError as exc:
            raise WalletAppError(str(exc)) from None
        if answer.status != 200:
            error = value.get("error") or {}
            raise WalletAppError(f"{error.get('code', f'HTTP {answer.status}')}: {error.get('message', '')}".rstrip(": "))
        return value
