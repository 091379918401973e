"""The host's own settings, from `host.yaml`: pre-authorization holds, the QR order service's timers, and
the cut-over time that moves late messages to the next business date."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any

from possim.fixtures import FixtureError, fixture_path, load_fixture

SETTINGS_FILE = "host.yaml"


@dataclass(frozen=True)
class QrSettings:
    order_expiry: timedelta = timedelta(seconds=300)
    """How long an unpaid merchant-presented order stays payable, unless its creator says otherwise."""
    paying_timeout: timedelta = timedelta(seconds=60)
    """How long a scanned payment code may wait for the payer's password before the host cancels it."""
    notify_backoff: tuple[int, ...] = (5, 15, 30, 60, 300, 600, 3600)
    """Seconds between notification attempts; the last value repeats."""
    notify_max_attempts: int = 24
    notify_timeout: float = 5.0

    def notify_delay(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failed attempt (1-based)."""
        return timedelta(seconds=self.notify_backoff[min(attempts, len(self.notify_backoff)) - 1])


@dataclass(frozen=True)
class FeeSettings:
    finance_timeout: float = 3.0
    """Seconds a finance-system answer may take before it counts as lost."""
    confirm_attempts: int = 3
    cancel_backoff: tuple[int, ...] = (1, 5, 15, 60)
    bank_id: str = "BANK310000"
    collection_account: str = "6222021001000000018"
    clearing_account: str = "6222021001000000026"
    suspense_account: str = "6222021001000000034"


@dataclass(frozen=True)
class HostSettings:
    preauth_hold: timedelta = timedelta(days=7)
    completion_tolerance_percent: int = 15
    qr: QrSettings = field(default_factory=QrSettings)
    cutover_time: time = time(0)
    """Messages from this time of day on belong to the next business date (00:00: the calendar date)."""
    fees: FeeSettings = field(default_factory=FeeSettings)

    @classmethod
    def from_fixtures(cls, folder: str | Path | None = None) -> HostSettings:
        source = fixture_path(SETTINGS_FILE, folder)
        data = load_fixture(SETTINGS_FILE, folder)
        preauth = section(data, "preauth", source)
        qr = section(data, "qr", source)
        settlement = section(data, "settlement", source)
        fees = section(data, "fees", source)
        backoff_fees = fees.get("cancel_backoff_seconds", list(FeeSettings.cancel_backoff))
        if not isinstance(backoff_fees, list) or not backoff_fees or not all(_is_whole(v) and v > 0 for v in backoff_fees):
            raise FixtureError(f"{source}: fees.cancel_backoff_seconds must be a list of whole seconds > 0")
        backoff = qr.get("notify_backoff_seconds", list(QrSettings.notify_backoff))
        if not isinstance(backoff, list) or not backoff or not all(_is_whole(v) and v > 0 for v in backoff):
            raise FixtureError(f"{source}: qr.notify_backoff_seconds must be a list of whole seconds > 0")
        return cls(
            timedelta(days=whole(preauth, "preauth.hold_days", 7, source)),
            whole(preauth, "preauth.completion_tolerance_percent", 15, source),
            QrSettings(
                order_expiry=timedelta(seconds=whole(qr, "qr.order_expiry_seconds", 300, source, least=1)),
                paying_timeout=timedelta(seconds=whole(qr, "qr.paying_timeout_seconds", 60, source, least=1)),
                notify_backoff=tuple(backoff),
                notify_max_attempts=whole(qr, "qr.notify_max_attempts", 24, source, least=1),
                notify_timeout=float(whole(qr, "qr.notify_timeout_seconds", 5, source, least=1)),
            ),
            cutover_time=parse_time_of_day(settlement.get("cutover_time", "00:00"), f"{source}: settlement.cutover_time"),
            fees=FeeSettings(
                finance_timeout=float(whole(fees, "fees.finance_timeout_seconds", 3, source, least=1)),
                confirm_attempts=whole(fees, "fees.confirm_attempts", 3, source, least=1),
                cancel_backoff=tuple(backoff_fees),
                bank_id=str(fees.get("bank_id", FeeSettings.bank_id)),
                collection_account=str(fees.get("collection_account", FeeSettings.collection_account)),
                clearing_account=str(fees.get("clearing_account", FeeSettings.clearing_account)),
                suspense_account=str(fees.get("suspense_account", FeeSettings.suspense_account)),
            ),
        )


def section(data: dict[str, Any], name: str, source: Path) -> dict[str, Any]:
    """host.yaml's `name:` mapping (empty when absent); settlement reads its own sections with it too."""
    section = data.get(name) or {}
    if not isinstance(section, dict):
        raise FixtureError(f"{source}: `{name}` must be a mapping")
    return section


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def whole(entry: dict[str, Any], key: str, default: int, source: Path, least: int = 0) -> int:
    value = entry.get(key.split(".")[-1], default)
    if not _is_whole(value) or value < least:
        raise FixtureError(f"{source}: {key} must be a whole number ≥ {least}, got {value!r}")
    return value


def parse_time_of_day(value: object, where: str) -> time:
    """"HH:MM" as a time of day; YAML turns an unquoted 23:00 into minutes (1380), which is taken too."""
    if _is_whole(value) and 0 <= value < 24 * 60:  # type: ignore[operator]
        return time(value // 60, value % 60)  # type: ignore[operator]
    text = str(value)
    hours, _, minutes = text.partition(":")
    if len(hours) == 2 and len(minutes) == 2 and hours.isdigit() and minutes.isdigit() \
            and int(hours) < 24 and int(minutes) < 60:
        return time(int(hours), int(minutes))
    raise FixtureError(f"{where} must be a time of day such as \"23:00\", got {value!r}")
