"""Merchant discount rates (fixtures/fees.yaml): what the acquirer keeps of each payment.

Fees are worked out per transaction, in integer minor units, so a clearing
file line can state its own fee and reconciliation can check it line by
line; a batch's fee is the sum of its lines'. Rounding is half up (an amount
of 250 at 38 bp is 0.95 → 1), done in integers: no float ever sees money.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from possim.fixtures import FixtureError, fixture_path, load_fixture

from .channels import CHANNELS

FEES_FILE = "fees.yaml"
_BP = 10_000


@dataclass(frozen=True)
class FeeRule:
    rate_bps: int = 0
    fixed: int = 0
    min: int = 0
    max: int = 0
    """0: no cap."""

    def fee(self, amount: int) -> int:
        """The fee a payment of `amount` carries."""
        fee = rate_part(amount, self.rate_bps) + self.fixed
        fee = max(fee, self.min)
        return min(fee, self.max) if self.max else fee

    def refund_fee(self, amount: int) -> int:
        """What a refund of `amount` gives back: the rate part only, never more than the cap."""
        back = rate_part(amount, self.rate_bps)
        return min(back, self.max) if self.max else back


def rate_part(amount: int, rate_bps: int) -> int:
    """`rate_bps` basis points of `amount`, rounded half up to a whole minor unit."""
    return (amount * rate_bps * 2 + _BP) // (2 * _BP)


class FeeSchedule:
    def __init__(self, default: dict[str, FeeRule], merchants: dict[str, dict[str, FeeRule]]):
        self._default = default
        self._merchants = merchants

    def rule(self, merchant_id: str, channel: str) -> FeeRule:
        """The merchant's own rule for the channel, else the default one, else no fee."""
        own = self._merchants.get(merchant_id, {})
        return own.get(channel) or self._default.get(channel) or FeeRule()

    @classmethod
    def from_fixtures(cls, folder: str | Path | None = None) -> FeeSchedule:
        source = fixture_path(FEES_FILE, folder)
        data = load_fixture(FEES_FILE, folder)
        default = _rules(data.get("default") or {}, f"{source}: default")
        merchants_data = data.get("merchants") or {}
        if not isinstance(merchants_data, dict):
            raise FixtureError(f"{source}: merchants must map merchant IDs to their rules")
        merchants = {str(mid): _rules(rules or {}, f"{source}: merchants.{mid}") for mid, rules in merchants_data.items()}
        return cls(default, merchants)


def _rules(data: Any, where: str) -> dict[str, FeeRule]:
    if not isinstance(data, dict):
        raise FixtureError(f"{where} must map channels to fee rules")
    rules = {}
    for channel, entry in data.items():
        if channel not in CHANNELS:
            raise FixtureError(f"{where}: unknown channel {channel!r} (one of {', '.join(CHANNELS)})")
        if not isinstance(entry, dict):
            raise FixtureError(f"{where}.{channel} must be a mapping such as {{rate_bps: 60}}")
        unknown = set(entry) - {"rate_bps", "fixed", "min", "max"}
        if unknown:
            raise FixtureError(f"{where}.{channel}: unknown key {sorted(unknown)[0]!r} (rate_bps, fixed, min, max)")
        values = {}
        for key, value in entry.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise FixtureError(f"{where}.{channel}.{key} must be a whole number ≥ 0 (minor units or basis points)")
            values[key] = value
        rules[channel] = FeeRule(**values)
    return rules
