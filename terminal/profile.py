"""Who a terminal is and whom it calls: its profile, read from `terminals.yaml`.

A profile is configuration, not state: it never changes because the
terminal transacted. What does change (STAN, batch, pending reversal) lives
in `state.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from possim.fixtures import load_fixture
from possim.hsm_mock.dukpt_setup import DukptSetup, DukptSetupError, parse_dukpt
from possim.hsm_mock.key_download import KeyDownloadError, parse_tmk
from possim.wire.dialect import Dialect, load_dialect
from possim.wire.framing import Framing
from possim.wire.money import currency as lookup_currency


class ProfileError(ValueError):
    """A terminal profile that cannot be used; the message names the TID and the setting."""


@dataclass(frozen=True)
class TerminalProfile:
    tid: str
    """Field 41, exactly 8 characters."""
    mid: str
    """Field 42, exactly 15 characters: the merchant the terminal belongs to."""
    dialect: str = "cup"
    """A built-in dialect name or the path of a dialect YAML file."""
    host: str = "127.0.0.1:8583"
    timeout: float = 10.0
    """Seconds to wait for each answer before the request counts as unanswered."""
    reversal_retries: int = 3
    """0401 repeats after the first 0400 when a reversal goes unanswered."""
    pin_pad: bool = True
    """Whether the terminal can take a PIN: the third digit of field 22."""
    currency: str = "156"
    """ISO 4217 numeric code sent in field 49."""
    tmk: str | None = field(default=None, repr=False)
    """Terminal master key, 32 hex digits, as a lab injects it: sign-on working keys arrive under it.
    None: the terminal takes no working keys and sends no MAC."""
    track_key: bool = False
    """Ask for a track (data) key at sign-on as well (cup 60.3 = 004): kept, checked, stored under the TMK."""
    dukpt: dict[str, str] | None = field(default=None, repr=False)
    """`{bdk, ksn}`: the PIN pad encrypts PINs under DUKPT keys (ANSI X9.24-1, TDES) instead of
    the working PIN key, and sends the KSN where the dialect's `ksn` role says."""

    def __post_init__(self) -> None:
        who = f"terminal {self.tid!r}"
        if not isinstance(self.tid, str) or len(self.tid) != 8:
            raise ProfileError(f"{who}: tid must be 8 characters (field 41)")
        if not isinstance(self.mid, str) or len(self.mid) != 15:
            raise ProfileError(f"{who}: mid {self.mid!r} must be 15 characters (field 42)")
        parse_address(self.host, who)
        try:
            load_dialect(self.dialect)
        except ValueError as exc:
            raise ProfileError(f"{who}: {exc}") from None
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or self.timeout <= 0:
            raise ProfileError(f"{who}: timeout {self.timeout!r} must be a positive number of seconds")
        if isinstance(self.reversal_retries, bool) or not isinstance(self.reversal_retries, int) or self.reversal_retries < 0:
            raise ProfileError(f"{who}: reversal_retries {self.reversal_retries!r} must be a whole number ≥ 0")
        try:
            numeric = lookup_currency(str(self.currency)).numeric
        except ValueError as exc:
            raise ProfileError(f"{who}: {exc}") from None
        object.__setattr__(self, "currency", numeric)
        if self.tmk is not None:
            try:
                parse_tmk(self.tmk, who)
            except KeyDownloadError as exc:
                raise ProfileError(str(exc)) from None
        if self.track_key and load_dialect(self.dialect).convention("sign_on_track_key_code") is None:
            raise ProfileError(f"{who}: track_key needs a dialect whose sign-on can ask for one (cup: 004); {self.dialect} has none")
        if self.dukpt is not None:
            try:
                parse_dukpt(self.dukpt, who)
            except DukptSetupError as exc:
                raise ProfileError(str(exc)) from None
            if "ksn" not in load_dialect(self.dialect).roles:
                raise ProfileError(f"{who}: dukpt needs a dialect with a `ksn` role; {self.dialect} has none")

    @property
    def dukpt_setup(self) -> DukptSetup | None:
        return parse_dukpt(self.dukpt, f"terminal {self.tid!r}") if self.dukpt is not None else None

    @property
    def master_key(self) -> bytes | None:
        return parse_tmk(self.tmk, f"terminal {self.tid!r}") if self.tmk is not None else None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the acquirer this terminal calls."""
        return parse_address(self.host, f"terminal {self.tid!r}")

    def load_dialect(self) -> Dialect:
        return load_dialect(self.dialect)

    @property
    def framing(self) -> Framing:
        """How frames look on this terminal's link: the dialect decides (a custom dialect file can change it)."""
        return self.load_dialect().framing


def parse_address(text: str, who: str = "address") -> tuple[str, int]:
    """Split "ip:port" (or "[v6]:port"), refusing anything that is not a usable TCP address."""
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProfileError(f"{who}: host {text!r} must be ip:port, e.g. 127.0.0.1:8583")
    return host, int(port)


_SETTINGS = {f.name for f in fields(TerminalProfile)}


def load_profile(tid: str | None = None, fixtures_dir: str | Path | None = None, **overrides: Any) -> TerminalProfile:
    """The profile of `tid` from terminals.yaml (the first terminal when None), with overrides applied.

    Overrides whose value is None are ignored, so a command line can pass
    every option it has whether the user gave it or not.
    """
    unknown = set(overrides) - (_SETTINGS - {"tid"})
    if unknown:
        raise ProfileError(f"{sorted(unknown)[0]!r} is not a terminal setting (expected {', '.join(sorted(_SETTINGS - {'tid'}))})")
    entries = load_fixture("terminals.yaml", fixtures_dir).get("terminals") or []
    if not isinstance(entries, list) or not entries:
        raise ProfileError("terminals.yaml lists no terminals")
    entry = _find(entries, tid)
    where = f"terminals.yaml, terminal {entry.get('tid')!r}"
    bad = set(entry) - _SETTINGS
    if bad:
        raise ProfileError(f"{where}: unknown setting {sorted(bad)[0]!r} (expected {', '.join(sorted(_SETTINGS))})")
    if "mid" not in entry:
        raise ProfileError(f"{where}: mid is missing")
    settings = {key: (str(value) if key in ("tid", "mid", "host", "currency", "tmk") else value) for key, value in entry.items()}
    profile = TerminalProfile(**settings)
    given = {key: value for key, value in overrides.items() if value is not None}
    return replace(profile, **given) if given else profile


def _find(entries: list[Any], tid: str | None) -> dict[str, Any]:
    for entry in entries:
        if not isinstance(entry, dict) or "tid" not in entry:
            raise ProfileError(f"terminals.yaml: every terminal needs a tid, got {entry!r}")
    if tid is None:
        return entries[0]
    for entry in entries:
        if str(entry["tid"]) == tid:
            return entry
    known = ", ".join(str(e["tid"]) for e in entries)
    raise ProfileError(f"terminal {tid!r} is not in terminals.yaml (known: {known})")
